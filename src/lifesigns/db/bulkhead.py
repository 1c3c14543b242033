"""Bulkheads: a named cap on how many connections one class of work may hold at once.

Seed 002: an aggregation job took most of the pool and the API starved. With
``batch = signs.bulkhead("batch", max_connections=3)`` around the job's units of work,
the job never holds more than three connections, so with a pool of ten the requests
always keep seven.

A bulkhead counts entries, not connections: each entry (``async with batch:``, ``with
batch:`` or a call of a function decorated with ``@batch``) is one slot and should use one
connection at a time. The pool forensics tag every connection checked out inside a
bulkhead with its name (:data:`current_bulkhead`), so a unit of work that holds more than
one shows up in ``/debug/pool``.

Waiting for a slot has a deadline (``timeout``, 30 s by default, SQLAlchemy's default
``pool_timeout``); past it :class:`BulkheadFull` says which bulkhead, its limit and how
long the caller waited. Async waiters never block the event loop, sync waiters block only
their own thread, and a slot is handed to waiters in arrival order. Entries do not nest:
entering the same bulkhead again inside it takes a second slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .._config import seconds
from ..errors import ConfigError, Degraded, LifesignsError
from ..host import Host
from .pool_metrics import WAIT_BUCKETS, LightHistogram

P = ParamSpec("P")
R = TypeVar("R")

current_bulkhead: ContextVar[str | None] = ContextVar("lifesigns_bulkhead", default=None)
"""The name of the bulkhead the running code is inside, or ``None``."""

_outer: ContextVar[tuple[str | None, ...]] = ContextVar("lifesigns_bulkhead_outer", default=())

_running_loop: Callable[[], asyncio.AbstractEventLoop | None] = asyncio._get_running_loop

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")

REJECTION_MEMORY = 60.0
"""Seconds a turned-away caller keeps the ``bulkheads`` check at ``warn``."""


class BulkheadFull(LifesignsError, TimeoutError):
    """No slot of a bulkhead came free within its timeout."""

    def __init__(self, name: str, limit: int, in_use: int, waited: float, timeout: float) -> None:
        super().__init__(
            f"bulkhead {name!r} is full: {in_use} of {limit} connections in use; "
            f"waited {waited:.2f} s (timeout {timeout:g} s)"
        )
        self.name = name
        self.limit = limit
        self.waited = waited
        self.timeout = timeout


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[None] | None
    event: threading.Event | None
    granted: bool = False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Bulkhead:
    """At most ``max_connections`` concurrent units of one class of work.

    **Usage**::

        batch = signs.bulkhead("batch", max_connections=3, timeout=60)

        async with batch:              # async code
            await aggregate(group)

        with batch:                    # sync code, in a worker thread
            aggregate_sync(group)

        @batch                         # async or sync functions
        async def aggregate(group): ...

    Raises :class:`BulkheadFull` when no slot comes free within ``timeout`` seconds.
    The sync form refuses to run on an event loop's thread, which it would block.
    """

    def __init__(self, name: str, max_connections: int, *, timeout: float = 30.0) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"bulkhead name {name!r} is not allowed; use 1-63 letters, digits, '_', '-' "
                "or '.', starting with a letter or digit"
            )
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or not 1 <= max_connections <= 10_000
        ):
            raise ConfigError(
                f"bulkhead {name!r}: max_connections={max_connections!r} is out of range; "
                "allowed: an integer from 1 to 10000"
            )
        self.name = name
        self.limit = max_connections
        self.timeout = seconds("timeout", timeout, maximum=3600)
        self._lock = threading.Lock()
        self._in_use = 0
        self._waiters: deque[_Waiter] = deque()
        self.peak = 0
        self.acquired = 0
        self.rejected = 0
        self.last_rejection: float | None = None
        self.wait_histogram = LightHistogram(WAIT_BUCKETS)

    def __repr__(self) -> str:
        return f"Bulkhead({self.name!r}, max_connections={self.limit}, timeout={self.timeout:g})"

    @property
    def in_use(self) -> int:
        """Slots taken now."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot now."""
        return len(self._waiters)

    def state(self) -> dict[str, Any]:
        """JSON-ready state: limit, in use, waiting, peak, acquired, rejected."""
        since = self.last_rejection
        return {
            "limit": self.limit,
            "in_use": self._in_use,
            "waiting": len(self._waiters),
            "peak": self.peak,
            "acquired": self.acquired,
            "rejected": self.rejected,
            "timeout_s": self.timeout,
            "last_rejection_s_ago": None if since is None else round(time.monotonic() - since, 1),
        }

    # -- slots ------------------------------------------------------------------------

    def _take(self) -> None:  # holding self._lock
        self._in_use += 1
        self.acquired += 1
        if self._in_use > self.peak:
            self.peak = self._in_use

    def _granted_on_give_up(self, waiter: _Waiter) -> bool:
        """After a timeout or cancellation: whether the slot arrived anyway."""
        with self._lock:
            if waiter.granted:
                return True
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            return False

    def _reject(self, waited: float, timeout: float) -> BulkheadFull:
        with self._lock:
            self.rejected += 1
            self.last_rejection = time.monotonic()
            in_use = self._in_use
        return BulkheadFull(self.name, self.limit, in_use, waited, timeout)

    async def acquire(self, timeout: float | None = None) -> None:
        """Take a slot, waiting up to ``timeout`` seconds (default: the bulkhead's)."""
        limit = self.timeout if timeout is None else timeout
        started = time.monotonic()
        with self._lock:
            if self._in_use < self.limit and not self._waiters:
                self._take()
                self.wait_histogram.observe(0.0)
                return
            loop = asyncio.get_running_loop()
            waiter = _Waiter(loop, loop.create_future(), None)
            self._waiters.append(waiter)
        future = waiter.future
        assert future is not None
        try:
            async with asyncio.timeout(limit):
                await future
        except TimeoutError:
            if not self._granted_on_give_up(waiter):
                raise self._reject(time.monotonic() - started, limit) from None
        except BaseException:
            if self._granted_on_give_up(waiter):
                self.release()
            raise
        self.wait_histogram.observe(time.monotonic() - started)

    def acquire_sync(self, timeout: float | None = None) -> None:
        """Take a slot from a thread, blocking it up to ``timeout`` seconds."""
        if _running_loop() is not None:
            raise RuntimeError(
                f"bulkhead {self.name!r}: 'with' would block the event loop; "
                "use 'async with' in async code"
            )
        limit = self.timeout if timeout is None else timeout
        started = time.monotonic()
        with self._lock:
            if self._in_use < self.limit and not self._waiters:
                self._take()
                self.wait_histogram.observe(0.0)
                return
            waiter = _Waiter(None, None, threading.Event())
            self._waiters.append(waiter)
        assert waiter.event is not None
        try:
            signalled = waiter.event.wait(limit)
        except BaseException:
            if self._granted_on_give_up(waiter):
                self.release()
            raise
        if not signalled and not self._granted_on_give_up(waiter):
            raise self._reject(time.monotonic() - started, limit)
        self.wait_histogram.observe(time.monotonic() - started)

    def release(self) -> None:
        """Give a slot back: to the longest waiter if any, else to the bulkhead."""
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.event is not None:
                    waiter.event.set()
                else:
                    assert waiter.loop is not None
                    assert waiter.future is not None
                    try:
                        waiter.loop.call_soon_threadsafe(_wake, waiter.future)
                    except RuntimeError:  # its loop is closed: nobody is waiting there
                        continue
                waiter.granted = True
                self.acquired += 1
                return
            self._in_use -= 1

    # -- context managers and decorator ---------------------------------------------

    def _enter(self) -> None:
        _outer.set((*_outer.get(), current_bulkhead.get()))
        current_bulkhead.set(self.name)

    def _exit(self) -> None:
        outer = _outer.get()
        current_bulkhead.set(outer[-1] if outer else None)
        _outer.set(outer[:-1])
        self.release()

    async def __aenter__(self) -> Bulkhead:
        await self.acquire()
        self._enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit()

    def __enter__(self) -> Bulkhead:
        self.acquire_sync()
        self._enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit()

    @overload
    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, func: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, func: Callable[P, Any]) -> Callable[P, Any]:
        """Run every call of ``func`` (async or sync) inside the bulkhead."""
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self:
                    return await func(*args, **kwargs)

            return run_async

        @functools.wraps(func)
        def run_sync(*args: P.args, **kwargs: P.kwargs) -> Any:
            with self:
                return func(*args, **kwargs)

        return run_sync


class Bulkheads:
    """The bulkheads of one host: its ``bulkheads`` check (non-critical: ``warn`` for a
    minute after a caller was turned away) and metrics. A layer part, registered with
    ``host.layer("db.bulkheads", ...)`` by :func:`bulkhead`."""

    def __init__(self) -> None:
        self._by_name: dict[str, Bulkhead] = {}
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[Bulkhead]:
        return iter(list(self._by_name.values()))

    def get(self, name: str) -> Bulkhead | None:
        """The bulkhead called ``name``, if any."""
        return self._by_name.get(name)

    def add(self, name: str, max_connections: int, timeout: float) -> Bulkhead:
        """The bulkhead ``name``: created, or the existing one if its settings match."""
        with self._lock:
            found = self._by_name.get(name)
            if found is not None:
                if found.limit != max_connections or found.timeout != float(timeout):
                    raise ConfigError(
                        f"bulkhead {name!r} already exists as {found!r}; "
                        f"asked for max_connections={max_connections}, timeout={timeout:g}"
                    )
                return found
            bulkhead = Bulkhead(name, max_connections, timeout=timeout)
            self._by_name = {**self._by_name, name: bulkhead}
            return bulkhead

    def state(self) -> dict[str, dict[str, Any]]:
        """Every bulkhead's state, by name."""
        return {b.name: b.state() for b in self}

    async def check(self) -> dict[str, Any]:
        """The ``bulkheads`` health check."""
        now = time.monotonic()
        recent = [
            b
            for b in self
            if b.last_rejection is not None and now - b.last_rejection < REJECTION_MEMORY
        ]
        if recent:
            raise Degraded(
                "; ".join(
                    f"bulkhead {b.name!r} (limit {b.limit}) turned work away "
                    f"{now - (b.last_rejection or now):.0f} s ago, {b.rejected} times in all"
                    for b in recent
                )
            )
        return self.state()


class BulkheadCollector(Collector):
    """Prometheus series of the bulkheads (prefix ``lifesigns_bulkhead_``)."""

    def __init__(self, bulkheads: Bulkheads) -> None:
        self._bulkheads = bulkheads

    def collect(self) -> Iterator[Metric]:
        """Limit, in use, waiting, peak; acquired and rejected; wait histogram."""
        gauges = {
            "limit": "Most units of work the bulkhead admits at once.",
            "in_use": "Units of work inside the bulkhead now.",
            "waiting": "Callers waiting for the bulkhead now.",
            "peak": "Most units of work inside the bulkhead at once.",
        }
        families = {
            k: GaugeMetricFamily(f"lifesigns_bulkhead_{k}", d, labels=["bulkhead"])
            for k, d in gauges.items()
        }
        acquired = CounterMetricFamily(
            "lifesigns_bulkhead_acquired", "Entries into the bulkhead.", labels=["bulkhead"]
        )
        rejected = CounterMetricFamily(
            "lifesigns_bulkhead_rejections",
            "Callers turned away after waiting for the bulkhead's timeout.",
            labels=["bulkhead"],
        )
        waits: Metric | None = None
        for b in self._bulkheads:
            families["limit"].add_metric([b.name], b.limit)
            families["in_use"].add_metric([b.name], b.in_use)
            families["waiting"].add_metric([b.name], b.waiting)
            families["peak"].add_metric([b.name], b.peak)
            acquired.add_metric([b.name], b.acquired)
            rejected.add_metric([b.name], b.rejected)
            family = b.wait_histogram.family(
                "lifesigns_bulkhead_wait_seconds", "Time spent waiting to enter.", b.name
            )
            for sample in family.samples:
                sample.labels["bulkhead"] = sample.labels.pop("pool")
            if waits is None:
                waits = family
            else:
                waits.samples.extend(family.samples)
        yield from families.values()
        yield acquired
        yield rejected
        if waits is not None:
            yield waits

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the series depend on which bulkheads exist."""
        return iter(())


BULKHEADS_LAYER = "db.bulkheads"
"""The key of a host's :class:`Bulkheads` (see :meth:`lifesigns.host.Host.layer`)."""


def bulkheads_of(host: Host) -> Bulkheads | None:
    """The bulkheads of ``host``, if it has any."""
    found = host.find_layer(BULKHEADS_LAYER)
    return found if isinstance(found, Bulkheads) else None


def bulkhead(host: Host, name: str, max_connections: int, *, timeout: float = 30.0) -> Bulkhead:
    """The bulkhead ``name`` of ``host`` (see :meth:`lifesigns.Lifesigns.bulkhead`).

    The first one registers the non-critical ``bulkheads`` check and the
    ``lifesigns_bulkhead_*`` metrics; asking again for an existing name with the same
    settings returns the same bulkhead, with other settings raises ``ConfigError``.
    """

    def build() -> Bulkheads:
        registry = Bulkheads()
        host.add_check("bulkheads", registry.check, critical=False, pass_ttl=1.0, fail_ttl=1.0)
        host.registry.register(BulkheadCollector(registry))
        return registry

    return host.layer(BULKHEADS_LAYER, None, build).add(name, max_connections, timeout)
