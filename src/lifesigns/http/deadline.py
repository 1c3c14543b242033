"""Request deadlines: past its deadline a handler is cancelled and the client gets 504.

uvicorn has no request timeout (Kludex/uvicorn#157) and gunicorn's ``timeout`` does not
bound requests under ``UvicornWorker``; a handler waiting on a stuck dependency holds its
connection, its database session and the client for as long as it likes. This pure ASGI
middleware gives each request a deadline: an app-wide default and per-route overrides.

At the deadline the handler's task is cancelled, so ``async with`` blocks unwind and
return their connections to the pool. If the response has not started, the client gets
``504 Gateway Timeout`` with a JSON body naming the deadline, sent at once even when the
handler cannot be interrupted (a sync endpoint in a worker thread finishes in the
background; its late output is dropped). If the response has started, the connection is
closed. Each expiry is counted by route template.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import Counter

from .. import _config
from .._config import UNSET
from ..errors import ConfigError
from ..host import HasHost, Host, as_host
from .requests import route_template
from .responses import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("lifesigns.http")

_CACHE_SIZE = 4096
_TICK = 0.025
"""Seconds between sweeps for expired requests: a 504 comes at most this late."""
_STALE_SWEEP = 1.0
"""Seconds without a sweep after which the sweeping timer is taken for lost."""
_EXEMPT = float("inf")
"""The deadline of a request exempt by a rule (``routes={"/events": None}``)."""
DEADLINE_TASK = "lifesigns deadline 504"
"""The name of the task the 504 is sent from (the request tally tells it apart by it)."""
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")


def expiries(owner: Host | HasHost) -> Counter:
    """The host's ``lifesigns_request_deadlines_exceeded`` counter, shared by its middlewares.

    Built on first use (the ``deadline`` layer of the host), so two deadline middlewares
    on one host count into one metric.
    """
    host = as_host(owner)

    def build() -> Counter:
        return Counter(
            "lifesigns_request_deadlines_exceeded",
            "Requests cancelled at their deadline, by route template.",
            ["route"],
            registry=host.registry,
        )

    return host.layer("deadline", None, build)


def _template_regex(template: str) -> re.Pattern[str]:
    """``/orders/{id}`` -> ``^/orders/[^/]+$`` (``{p:path}`` matches across ``/``)."""
    out, last = [], 0
    for match in _PARAM.finditer(template):
        out.append(re.escape(template[last : match.start()]))
        out.append(".*" if match.group(2) == "path" else "[^/]+")
        last = match.end()
    out.append(re.escape(template[last:]))
    return re.compile("^" + "".join(out) + "$")


class DeadlineMiddleware:
    """Cancels requests at their deadline and answers 504 if nothing was sent yet.

    * ``default``: seconds for every request (default: the ``deadline`` setting of
      ``signs``, from ``LIFESIGNS_DEADLINE``; ``None`` means no deadline).
    * ``routes``: overrides by route template (``"/orders/{order_id}"``, matched whole)
      or by path prefix (``"/reports"`` covers ``/reports`` and ``/reports/...``); the
      longest prefix wins, templates before prefixes; ``None`` exempts (streams, SSE).
      Every value has the ``deadline`` option's limits (the settings table).
    * ``signs``: a ``Lifesigns`` or a ``Host``: where expiries are counted
      (``lifesigns_request_deadlines_exceeded``).

    **Usage**::

        app.add_middleware(
            DeadlineMiddleware, signs=signs, default=10.0,
            routes={"/reports": 60.0, "/events": None, "/orders/{order_id}": 2.0},
        )
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: float | object | None = UNSET,
        routes: Mapping[str, float | None] | None = None,
        signs: Host | HasHost | None = None,
    ) -> None:
        self.app = app
        host = as_host(signs) if signs is not None else None
        limits = _config.option("deadline")
        if default is UNSET:
            default = host.settings.deadline if host is not None else None
        self.default: float | None = limits.parse(default, given_as="default")
        self._templates: list[tuple[str, re.Pattern[str], float | None]] = []
        self._prefixes: list[tuple[str, float | None]] = []
        for key, value in (routes or {}).items():
            if not isinstance(key, str) or not key.startswith("/"):
                raise ConfigError(f"routes key {key!r} must be a path or template such as '/x'")
            chosen = limits.parse(value, given_as=f"routes[{key!r}]")
            if "{" in key:
                self._templates.append((key, _template_regex(key), chosen))
            else:
                self._prefixes.append((key.rstrip("/"), chosen))
        self._prefixes.sort(key=lambda item: len(item[0]), reverse=True)
        self._cache: dict[str, tuple[float | None, str | None]] = {}
        self._expired = expiries(host) if host is not None else None
        shortest = min(
            [v for v in [self.default, *(v for _, _, v in self._templates)] if v is not None]
            + [v for _, v in self._prefixes if v is not None]
            + [1.0]
        )
        self._tick = min(_TICK, shortest / 4)
        self._active: dict[Guarded, None] = {}
        self._flight: Callable[[], Iterable[Shared]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._swept = 0.0  # time.monotonic() of the latest sweep

    def __repr__(self) -> str:
        routes = {k: v for k, _, v in self._templates} | {k or "/": v for k, v in self._prefixes}
        return f"DeadlineMiddleware(default={self.default!r}, routes={routes!r})"

    def deadline_for(self, path: str) -> tuple[float | None, str | None]:
        """The deadline for ``path`` and the rule that chose it (``None``: the default)."""
        if not self._templates and not self._prefixes:
            return self.default, None
        found = self._cache.get(path)
        if found is not None:
            return found
        found = self._match(path)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()  # paths with ids are unbounded: keep memory bounded
        self._cache[path] = found
        return found

    def _match(self, path: str) -> tuple[float | None, str | None]:
        for key, regex, value in self._templates:
            if regex.match(path):
                return value, key
        for prefix, value in self._prefixes:
            if path == prefix or path.startswith(prefix + "/") or prefix == "":
                return value, prefix or "/"
        return self.default, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline, rule = self.deadline_for(scope["path"])
        if deadline is None:
            await self.app(scope, receive, send)
            return
        responder = _DeadlineResponder(self, scope, send, deadline, rule)
        await self.serve(responder, self.app, receive, responder.send)

    async def serve(self, item: Guarded, app: ASGIApp, receive: Receive, send: Send) -> None:
        """Run ``app`` for ``item`` under ``item.deadline`` (already set), then any 504.

        ``send`` is what the application sends through; it must drop what comes after the
        deadline. :class:`~lifesigns.http.LifesignsMiddleware` does the same steps inline
        (:meth:`guard`, :meth:`swallow`, :meth:`settle`) around its own request record, so
        that one ASGI pass does the tally and the deadline.
        """
        task = self.arm(item)
        try:
            await app(item.scope, receive, send)
        except asyncio.CancelledError:
            if not self.swallow(item, task):
                raise
        else:
            self.settle(item, task)
        finally:
            self._active.pop(item, None)
        if item.answer is not None:
            await item.answer

    def arm(self, item: Guarded) -> asyncio.Task[Any] | None:
        """Start the clock of ``item`` (on the loop, in its task); returns that task."""
        task = item.task
        if task is None:
            task = item.task = asyncio.current_task()
        now = time.monotonic()
        item.due = now + item.deadline
        self._active[item] = None
        if self._timer is None or now - self._swept > _STALE_SWEEP:
            self._start_sweeping(now)
        return task

    def guard(self, item: Guarded, path: str, started: float) -> None:
        """Put ``item`` (a request record among those :meth:`shared <share>` with this
        middleware) under its deadline for ``path``, counted from ``started``
        (``time.monotonic()``).

        The sweep finds it among the requests in flight: no entry of its own to add and
        remove per request, and with no per-route rules nothing is written on ``item``
        (its ``deadline`` of 0 stands for the default).
        """
        if self._templates or self._prefixes:
            limit, rule = self.deadline_for(path)
            if limit is None:
                item.deadline = _EXEMPT
                return
            item.deadline = limit
            item.rule = rule
        elif self.default is None:
            return
        if self._timer is None or started - self._swept > _STALE_SWEEP:
            self._start_sweeping(started)

    def share(self, flight: Callable[[], Iterable[Shared]]) -> None:
        """Also sweep what ``flight()`` lists (the requests in flight of a tracker).

        Only those :meth:`guard` saw: it keeps the sweep running while they are in flight.
        """
        self._flight = flight

    @staticmethod
    def swallow(item: Guarded, task: asyncio.Task[Any] | None) -> bool:
        """Whether a ``CancelledError`` that ended ``item`` was ours alone (then swallow it).

        Also cancelled by someone else (a shutdown): ``False``, re-raise it.
        """
        return item.expired and (task is None or task.uncancel() == 0)

    @staticmethod
    def settle(item: Guarded, task: asyncio.Task[Any] | None) -> None:
        """``item`` returned normally: if it was expired, it swallowed our cancellation."""
        if item.expired and task is not None:
            task.uncancel()

    def _start_sweeping(self, now: float) -> None:
        # One timer sweeps every request instead of one timer per request: a timer
        # handle per request cost more than the rest of the middleware together. Called
        # when no sweep is scheduled, or when none ran for a while: that one belonged to
        # a loop that is gone (a test client's), and this loop gets its own.
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._swept = now
        self._timer = loop.call_later(self._tick, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        now = self._swept = time.monotonic()
        for item in [r for r in self._active if r.due <= now]:
            self._active.pop(item, None)
            item.expire()
        shared = list(self._flight()) if self._flight is not None else []
        default = self.default
        for item in shared:
            limit = item.deadline or default
            if limit is None or item.expired or item.started + limit > now:
                continue
            task = item.task
            if task is None or task.get_loop() is loop:
                item.guard, item.deadline = self, limit
                item.due = item.started + limit
                item.expire()
        if self._active or shared:
            self._timer = loop.call_later(self._tick, self._sweep)

    def expire(self, item: Guarded, send: Send, started: bool) -> None:
        """Cut ``item`` at its deadline: count it, answer 504 through ``send`` if nothing
        was ``started`` yet (else the connection closes), and cancel its task."""
        item.expired = True
        scope = item.scope
        label = route_template(scope) or item.rule or "(unrouted)"
        if self._expired is not None:
            self._expired.labels(label).inc()
        if not started:
            # Sent from its own task: the handler may not be interruptible (a thread).
            item.answer = asyncio.get_running_loop().create_task(
                _send_504(send, item.deadline, label), name=DEADLINE_TASK
            )
        logger.warning(
            "%s %s exceeded its deadline of %g s: handler cancelled%s",
            scope.get("method", "GET"),
            label,
            item.deadline,
            ", 504 sent" if not started else ", response already started: connection closed",
        )
        if item.task is not None:
            item.task.cancel(f"lifesigns: deadline of {item.deadline:g} s exceeded")


class Guarded(Protocol):
    """A request under a deadline, as :class:`DeadlineMiddleware` sweeps and cuts it."""

    scope: Scope
    deadline: float
    rule: str | None
    due: float
    expired: bool
    task: asyncio.Task[Any] | None
    answer: asyncio.Task[None] | None

    def expire(self) -> None:
        """Called once, on the loop, when the sweep finds the request past ``due``."""


class Shared(Guarded, Protocol):
    """A request record the sweep finds among a tracker's requests in flight."""

    started: float
    guard: Any


class _DeadlineResponder:
    """One request under a deadline: its due time, a guarded ``send`` and the 504."""

    __slots__ = (
        "answer",
        "deadline",
        "due",
        "expired",
        "guard",
        "middleware",
        "raw_send",
        "rule",
        "scope",
        "started",
        "task",
    )

    def __init__(
        self,
        middleware: DeadlineMiddleware,
        scope: Scope,
        send: Send,
        deadline: float,
        rule: str | None,
    ) -> None:
        self.middleware = self.guard = middleware
        self.scope = scope
        self.raw_send = send
        self.deadline = deadline
        self.rule = rule
        self.started = False
        self.expired = False
        self.answer: asyncio.Task[None] | None = None
        self.task: asyncio.Task[Any] | None = None
        self.due = 0.0

    async def send(self, message: Message) -> None:
        if self.expired:
            return  # the client has its answer (or its closed connection) already
        if message["type"] == "http.response.start":
            self.started = True
        await self.raw_send(message)

    def expire(self) -> None:
        self.middleware.expire(self, self.raw_send, self.started)


async def _send_504(send: Send, deadline: float, route: str) -> None:
    body = json.dumps(
        {
            "error": "deadline exceeded",
            "detail": f"the request did not finish within its deadline of "
            f"{deadline:g} s and was cancelled",
            "deadline_s": deadline,
            "route": route,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 504,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
