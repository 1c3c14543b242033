"""The holder registry: who holds each checked-out connection, since when, from where.

SQLAlchemy's pool events feed it (``connect``, ``checkout``, ``checkin``, ``detach``,
``invalidate``); each checked-out connection gets a :class:`Holder` carrying when it
was taken, its checkout site (see :mod:`lifesigns.db.sites`), what took it (its *owner*:
the request, else the asyncio task and its coroutine, else the thread) and the PostgreSQL
backend pid of the connection. Holders are dropped at checkin: the registry never keeps
a connection, a record or a holder beyond its checkout.

An owner that has finished while its connection is still checked out is the surest sign
of a leak there is, whatever the connection's age: :meth:`Holder.owner_ended` says when
and how it ended (the request's status or exception, the task's exception), read from
the request record the edge keeps (``status``, ``error``, ``ended``) or from the task.

The listeners run inside the application's checkout and checkin, in its threads and
SQLAlchemy's greenlets: they never block, await, log or do I/O, and never raise (an
exception in a ``checkout`` listener would fail the checkout). Whatever needs a log
line or a query is handed to the forensics thread through :attr:`HolderRegistry.wake`.

Waits are measured by wrapping the pool's ``_do_get``, the one place where a checkout
queues for a free connection and where ``sqlalchemy.exc.TimeoutError`` ("QueuePool limit
of size 5 overflow 10 reached") is raised; no pool event fires there. The wrapper is put
back on a new pool after ``engine.dispose()`` (which replaces the pool but keeps its
event listeners).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import Pool

from .bulkhead import current_bulkhead
from .pool_metrics import HOLD_BUCKETS, WAIT_BUCKETS, LightHistogram
from .sites import RawFrame, SiteCapture, format_frame, format_site

logger = logging.getLogger("lifesigns.pool")

_PID_KEY = "lifesigns.backend_pid"
_NO_PID = -1
# Unlike asyncio.get_running_loop(), returns None instead of raising when there is none.
_get_running_loop: Callable[[], asyncio.AbstractEventLoop | None] = asyncio._get_running_loop
_AUTO_TASK_NAME = re.compile(r"^Task-\d+$")
_THREAD_NUMBER = re.compile(r"[-_ ]?\(?\d+\)?$")


class OwnerRequest(Protocol):
    """What the pool reads of a request in flight (the edge's ``RequestInfo`` is one).

    Optionally also ``status`` (the response's status code), ``error`` (the exception
    type that ended it) and ``ended`` (``time.monotonic()`` when it ended), read with
    ``getattr``: without them, leaks are found by age alone.
    """

    @property
    def method(self) -> str: ...

    @property
    def route(self) -> str: ...

    def describe(self) -> str: ...


CurrentRequest = Callable[[], OwnerRequest | None]
"""Returns the request the calling code serves (a context variable's ``get``)."""


def request_outcome(request: object) -> str:
    """``ended with status 404``, ``raised KeyError (a 500)``, ``was cancelled``."""
    status = getattr(request, "status", None)
    error = getattr(request, "error", None)
    if error == "CancelledError":  # the client left, or a deadline cut it
        return "was cancelled" + (f" after status {status}" if status else "")
    if error:
        # Nothing sent yet: the framework's error handler answers 500 after it.
        return f"raised {error}" + (f" (status {status})" if status else " (a 500)")
    if status:
        return f"ended with status {status}"
    return "ended without a response"


def task_outcome(task: asyncio.Task[Any] | None) -> str | None:
    """How a finished task ended, or ``None`` while it runs."""
    if task is None:
        return "ended"
    if not task.done():
        return None
    if task.cancelled():
        return "was cancelled"
    # Read, not task.exception(): that would mark it retrieved and silence asyncio's own
    # "Task exception was never retrieved" report.
    error = getattr(task, "_exception", None)
    return f"raised {type(error).__name__}" if error is not None else "returned"


def backend_pid(dbapi_connection: Any) -> int | None:
    """The server process id of a PostgreSQL connection, read without a round trip.

    psycopg 3 and psycopg2 (``info.backend_pid``), asyncpg (``get_server_pid()``),
    directly or behind SQLAlchemy's async adapter (``driver_connection``). ``None`` for
    other databases.
    """
    try:
        conn = getattr(dbapi_connection, "driver_connection", None) or dbapi_connection
        pid = getattr(getattr(conn, "info", None), "backend_pid", None)
        if isinstance(pid, int) and pid > 0:
            return pid
        getter = getattr(conn, "get_server_pid", None) or getattr(conn, "get_backend_pid", None)
        if callable(getter):
            pid = getter()
            if isinstance(pid, int) and pid > 0:
                return pid
    except Exception:  # noqa: S110 - a pid is a nicety; the checkout must not fail for it
        pass
    return None


@dataclass(eq=False, slots=True)
class Holder:
    """One checked-out connection: when, where and by what it was taken."""

    number: int
    taken: float
    frames: tuple[RawFrame, ...]
    request: OwnerRequest | None
    task: str | None
    thread: str | None
    bulkhead: str | None
    backend_pid: int | None
    full_stack: tuple[RawFrame, ...] | None = None
    leak_reported: bool = False
    invalidated: bool = False
    coroutine: str | None = None
    task_ref: weakref.ref[asyncio.Task[Any]] | None = None
    owner_seen_ended: float | None = None
    leak_kind: str | None = None

    @property
    def site(self) -> str:
        """``app/orders.py:88 in list_orders``."""
        return format_site(self.frames)

    @property
    def owner(self) -> str:
        """``GET /orders/{id} (request 42)``, ``task refresh-cache`` or ``thread worker-3``."""
        if self.request is not None:
            return self.request.describe()
        if self.task is not None:
            return self.task_owner
        return f"thread {self.thread or '?'}"

    @property
    def task_owner(self) -> str:
        """``task refresh-cache``; an unnamed task (``Task-1621``) by its coroutine."""
        name = self.task or "?"
        if _AUTO_TASK_NAME.match(name) and self.coroutine:
            return f"task {self.coroutine}"
        return f"task {name}"

    @property
    def group(self) -> str:
        """What holders are grouped by: ``GET /orders/{id}``, ``task refresh.<locals>.run``,
        ``thread batch`` (one line for forty worker threads, not forty lines)."""
        request = self.request
        if request is not None:
            return f"{request.method} {request.route}"
        if self.task is not None:
            return f"task {self.coroutine or self.task}"
        return f"thread {_THREAD_NUMBER.sub('', self.thread or '?') or self.thread}"

    def owner_ended(self, now: float | None = None) -> tuple[float, str] | None:
        """When (monotonic) and how the owner ended, or ``None`` while it still runs.

        A request's end is its own record's; a task's is when it was first seen done.
        A thread is never seen to end (pool threads outlive their work).
        """
        request = self.request
        ref = self.task_ref
        if request is not None and (ref is None or self.task is None):
            ended = getattr(request, "ended", None)
            if not isinstance(ended, float):
                return None
            return ended, f"{request.describe()} {request_outcome(request)}"
        if ref is None:
            return None
        # A task: on its own, or spawned by a request (it owns what it took, and may
        # rightly outlive the request).
        how = task_outcome(ref())
        if how is None:
            return None
        if self.owner_seen_ended is None:
            self.owner_seen_ended = time.monotonic() if now is None else now
        if request is None:
            return self.owner_seen_ended, f"{self.task_owner} {how}"
        ended = getattr(request, "ended", None)
        if isinstance(ended, float):  # both over: the request's end says more
            when = max(ended, self.owner_seen_ended)
            return when, f"{request.describe()} {request_outcome(request)}"
        return self.owner_seen_ended, f"{self.task_owner} (spawned by {request.describe()}) {how}"

    def age(self, now: float | None = None) -> float:
        """Seconds since checkout (never negative: one monotonic clock)."""
        return max(0.0, (time.monotonic() if now is None else now) - self.taken)

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """JSON-ready data (already free of secrets: sites, names and ids only)."""
        request = self.request
        data: dict[str, Any] = {
            "connection": self.number,
            "age_s": round(self.age(now), 3),
            "site": self.site,
            "stack": [format_frame(f) for f in self.frames],
            "owner": self.owner,
            "group": self.group,
            "route": request.route if request else None,
            "method": request.method if request else None,
            "request_id": getattr(request, "request_id", None),
            "endpoint": getattr(request, "endpoint", None),
            "task": self.task,
            "coroutine": self.coroutine,
            "thread": self.thread,
            "bulkhead": self.bulkhead,
            "backend_pid": self.backend_pid,
            "leak_reported": self.leak_reported,
        }
        if self.leak_kind is not None:
            data["leak_kind"] = self.leak_kind
        ended = self.owner_ended(now)
        if ended is not None:
            data["owner_ended"] = ended[1]
        if self.invalidated:
            data["invalidated"] = True
        if self.full_stack is not None:
            data["full_stack"] = [format_frame(f) for f in self.full_stack]
        return data


class HolderRegistry:
    """Holders of one engine's pool, kept current by pool events.

    ``high_water`` (a fraction of capacity) and ``low_water`` bound an exhaustion
    episode: it opens when checked-out connections reach ``high_water`` or a checkout
    times out, and closes once they fall to ``low_water``; :attr:`wake` is set when one
    opens, when a connection reported as leaked comes back, and at the first checkout
    while the forensics thread sleeps long (it then scans often, for leaks by owner).
    """

    def __init__(
        self,
        engine: Engine,
        sites: SiteCapture,
        *,
        high_water: float = 0.9,
        low_water: float = 0.5,
        recent: int = 2048,
        current_request: CurrentRequest | None = None,
    ) -> None:
        self.engine = engine
        self.sites = sites
        self.current_request: CurrentRequest = current_request or _no_request
        self.high_water = high_water
        self.low_water = low_water
        self.holders: dict[int, Holder] = {}
        self.pending: dict[int, float] = {}
        self.wait_histogram = LightHistogram(WAIT_BUCKETS)
        self.hold_histogram = LightHistogram(HOLD_BUCKETS)
        self.recent_holds: deque[float] = deque(maxlen=recent)
        # (monotonic time the wait ended, seconds waited): the pressure check's window.
        self.recent_waits: deque[tuple[float, float]] = deque(maxlen=recent)
        self.timeout_times: deque[float] = deque(maxlen=256)
        self.returned: deque[tuple[Holder, float]] = deque(maxlen=256)
        self.timeouts = 0
        self.internal_errors = 0
        self.peak = 0
        self.saturated_since: float | None = None
        self.wake = threading.Event()
        self.idle_sleep = False  # the forensics thread's long sleep: the next checkout wakes it
        self.episode_open = False
        self.episode_trigger: str | None = None
        self.episode_started: float | None = None
        self.episode_holders: list[Holder] = []
        self.episode_number = 0
        self._episode_lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._tokens = itertools.count()
        self._pool: Pool | None = None
        self._original_do_get: Callable[[], Any] | None = None
        self.capacity: int | None = None
        self._high_count = 1 << 62
        self._low_count = -1
        self._installed = False
        self._counter_lock = threading.Lock()

    # -- installation ---------------------------------------------------------------

    def install(self) -> None:
        """Listen to the engine's pool events and time its checkouts."""
        if self._installed:
            return
        target = self.engine
        event.listen(target, "connect", self._on_connect)
        event.listen(target, "checkout", self._on_checkout)
        event.listen(target, "checkin", self._on_checkin)
        event.listen(target, "detach", self._on_detach)
        event.listen(target, "invalidate", self._on_invalidate)
        self._installed = True
        self._adopt(self.engine.pool)

    def remove(self) -> None:
        """Stop listening and restore the pool's own ``_do_get``."""
        if not self._installed:
            return
        target = self.engine
        for name, fn in (
            ("connect", self._on_connect),
            ("checkout", self._on_checkout),
            ("checkin", self._on_checkin),
            ("detach", self._on_detach),
            ("invalidate", self._on_invalidate),
        ):
            if event.contains(target, name, fn):
                event.remove(target, name, fn)
        self._unwrap()
        self._installed = False

    def _adopt(self, pool: Pool) -> None:
        """Time ``pool``'s checkouts (a new pool after ``dispose()``)."""
        if pool is self._pool:
            return
        self._unwrap()
        self._pool = pool
        self.capacity = pool_capacity(pool)
        if self.capacity:
            self._high_count = max(1, int(self.capacity * self.high_water + 0.999999))
            self._low_count = int(self.capacity * self.low_water)
        else:
            self._high_count, self._low_count = 1 << 62, -1
        original = pool.__dict__.get("_do_get")
        if original is not None or not hasattr(pool, "_do_get"):
            return  # someone else wrapped it; leave theirs alone
        bound: Callable[[], Any] = pool._do_get
        self._original_do_get = bound
        pending = self.pending
        tokens = self._tokens
        waits = self.wait_histogram
        recent = self.recent_waits
        clock = time.monotonic

        def _do_get() -> Any:
            token = next(tokens)
            start = pending[token] = clock()
            try:
                record = bound()
            except sa_exc.TimeoutError:
                self._timed_out(clock() - start)
                raise
            finally:
                pending.pop(token, None)
            end = clock()
            waited = end - start
            waits.observe(waited)
            recent.append((end, waited))
            return record

        pool._do_get = _do_get  # type: ignore[method-assign]

    def _unwrap(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None and self._original_do_get is not None:
            pool.__dict__.pop("_do_get", None)
        self._original_do_get = None

    def refresh(self) -> None:
        """Follow the engine to a new pool, and correct the saturation state.

        Called by the forensics thread each tick: events alone can miss a change when
        two threads race between reading and writing the state.
        """
        pool = self.engine.pool
        if pool is not self._pool:
            self._adopt(pool)
        out = self.checked_out()
        capacity = self.capacity
        saturated = bool(self.pending) or (capacity is not None and out >= capacity)
        if saturated and self.saturated_since is None:
            self.saturated_since = time.monotonic()
        elif not saturated and self.saturated_since is not None:
            self.saturated_since = None
        if self.episode_open and out <= self._low_count and not self.pending:
            self.episode_open = False

    # -- listeners (hot path) ---------------------------------------------------------

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        try:
            record.info[_PID_KEY] = backend_pid(dbapi_connection) or _NO_PID
        except Exception:
            self.internal_errors += 1

    def _on_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        try:
            pool = self.engine.pool
            if pool is not self._pool:
                self._adopt(pool)
            now = time.monotonic()
            sites = self.sites
            frames = sites.capture(1)
            full = sites.capture_full(1) if sites.full_stacks and sites.sample_full() else None
            request = self.current_request()
            if request is not None and getattr(request, "ended", None) is not None:
                request = None  # work that outlived its request (its context was copied)
            task = thread = coroutine = None
            task_ref = None
            loop = _get_running_loop()
            if loop is not None:
                running = asyncio.current_task(loop)
                if running is not None:
                    task_ref = weakref.ref(running)
                    if request is None or id(running) != getattr(request, "task_id", 0):
                        task = running.get_name()
                        coroutine = getattr(running.get_coro(), "__qualname__", None)
            elif request is None:
                thread = threading.current_thread().name
            info = record.info
            pid = info.get(_PID_KEY)
            if pid is None:
                pid = info[_PID_KEY] = backend_pid(dbapi_connection) or _NO_PID
            holder = Holder(
                next(self._numbers),
                now,
                frames,
                request,
                task,
                thread,
                current_bulkhead.get(),
                pid if pid != _NO_PID else None,
                full,
                coroutine=coroutine,
                task_ref=task_ref,
            )
            holders = self.holders
            holders[id(record)] = holder
            # The registry's own count: the pool's checkedout() takes a lock. Connections
            # checked out before install() are not counted until refresh() sees them.
            out = len(holders)
            if self.idle_sleep:
                # The forensics thread sleeps long while the pool is idle; from now on it
                # scans often, so that a connection left behind by its owner is seen.
                self.idle_sleep = False
                self.wake.set()
            if out > self.peak:
                self.peak = out
            capacity = self.capacity
            if capacity is not None and out >= capacity and self.saturated_since is None:
                self.saturated_since = now
            if out >= self._high_count and not self.episode_open:
                self._open_episode(
                    f"{out} of {capacity} connections checked out "
                    f"(high-water mark {self.high_water:.0%})",
                    now,
                )
        except Exception:
            self.internal_errors += 1

    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        try:
            holder = self.holders.pop(id(record), None)
            if holder is None:
                return
            held = time.monotonic() - holder.taken
            self.hold_histogram.observe(held)
            self.recent_holds.append(held)
            if holder.leak_reported:
                self.returned.append((holder, held))
                self.wake.set()
            if self.saturated_since is not None or self.episode_open:
                out = len(self.holders)
                if not self.pending:
                    if self.capacity is None or out < self.capacity:
                        self.saturated_since = None
                    if self.episode_open and out <= self._low_count:
                        self.episode_open = False
                        self.wake.set()
        except Exception:
            self.internal_errors += 1

    def _on_detach(self, dbapi_connection: Any, record: Any) -> None:
        # A detached connection is no longer the pool's: nobody "holds" it from the pool.
        self.holders.pop(id(record), None)

    def _on_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        holder = self.holders.get(id(record))
        if holder is not None:
            holder.invalidated = True

    def _timed_out(self, waited: float) -> None:
        try:
            now = time.monotonic()
            with self._counter_lock:
                self.timeouts += 1
                self.timeout_times.append(now)
            if self.saturated_since is None:
                self.saturated_since = now - waited
            if not self.episode_open:
                self._open_episode(f"a checkout timed out after {waited:.2f} s", now)
        except Exception:
            self.internal_errors += 1

    def _open_episode(self, trigger: str, now: float) -> None:
        with self._episode_lock:
            if self.episode_open:
                return
            self.episode_open = True
            self.episode_number += 1
            self.episode_trigger = trigger
            self.episode_started = now
            self.episode_holders = list(self.holders.values())
        self.wake.set()

    # -- reading ----------------------------------------------------------------------

    @property
    def checkouts(self) -> int:
        """Checkouts seen: those returned plus those held now."""
        return self.hold_histogram.count + len(self.holders)

    def checked_out(self) -> int:
        """Connections checked out now (the pool's count where it keeps one)."""
        pool = self._pool
        counter = getattr(pool, "checkedout", None)
        if counter is not None and self.capacity is not None:
            value = counter()
            if isinstance(value, int):
                return max(0, min(value, self.capacity))
        return len(self.holders)

    def current(self) -> list[Holder]:
        """Every holder now, oldest first (safe from any thread)."""
        return sorted(self.holders.values(), key=lambda h: h.taken)

    @property
    def pool_timeout(self) -> float | None:
        """The pool's ``pool_timeout`` (seconds a checkout waits before it fails)."""
        timeout = getattr(self._pool, "timeout", None)
        if callable(timeout):
            try:
                value = timeout()
            except Exception:
                return None
            return float(value) if isinstance(value, int | float) else None
        return None

    def waiting(self) -> tuple[int, float]:
        """Checkouts waiting now, and how long the oldest has waited (seconds)."""
        starts = list(self.pending.values())
        if not starts:
            return 0, 0.0
        return len(starts), max(0.0, time.monotonic() - min(starts))


def _no_request() -> None:
    return None


def pool_capacity(pool: Pool) -> int | None:
    """``pool_size + max_overflow`` of a QueuePool; ``None`` when unbounded or unknown."""
    size = getattr(pool, "size", None)
    extra = getattr(pool, "_max_overflow", None)
    if not callable(size) or not isinstance(extra, int):
        return None
    value = size()
    if not isinstance(value, int) or value <= 0 or extra < 0:
        return None
    return value + extra


def pool_figures(pool: Pool) -> dict[str, Any]:
    """What the pool says about itself: class, size, checked in and out, overflow."""
    figures: dict[str, Any] = {"pool": type(pool).__name__}
    for key, attr in (
        ("size", "size"),
        ("checked_in", "checkedin"),
        ("checked_out", "checkedout"),
        ("overflow", "overflow"),
        ("timeout", "timeout"),
    ):
        method = getattr(pool, attr, None)
        if callable(method):
            try:
                figures[key] = method()
            except Exception:  # noqa: S112 - a pool that cannot count is reported without it
                continue
    capacity = pool_capacity(pool)
    figures["capacity"] = capacity
    out = figures.get("checked_out")
    if capacity is not None and isinstance(out, int):
        # QueuePool counts a connection being opened as checked out, and an overflow
        # slot can be counted before it is refused: never more borrowed than there are.
        figures["checked_out"] = max(0, min(out, capacity))
    max_overflow = getattr(pool, "_max_overflow", None)
    if isinstance(max_overflow, int):
        figures["max_overflow"] = max_overflow
    return figures
