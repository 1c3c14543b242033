"""The requests in flight and the requests served: who is being served, and how it went.

A cheap record per request, kept by :class:`~lifesigns.http.LifesignsMiddleware`, so that
other layers can say which request a stall, a held connection or a deadline belongs to:

* :data:`current_request` is a context variable: code running for a request (its task,
  the threads anyio lends it, SQLAlchemy's greenlets) sees that request. It is set once a
  reader asked for :attr:`RequestTracker.current` (pool forensics does), not before.
* :meth:`RequestTracker.for_task` finds the request a task is serving, from any thread,
  without touching the event loop: a watchdog names the request of a frozen loop this way.
* :meth:`RequestTracker.served` is the tally of finished requests by route template, method
  and status, with their durations: :mod:`lifesigns.http.metrics` turns it into the
  ``lifesigns_http_*`` metrics when Prometheus scrapes.

The tally costs a few integer additions per request, taken on the thread that serves the
request, with no lock: each row has one writer (the event loop), and a scrape that reads a
row while it changes sees the previous or the next count, never a torn one.

Routes are named by their template with every mount prefix (``/api/v1/items/{id}``), never
by the raw path: requests that match no route count as ``<unmatched>``, and past
:data:`MAX_ROUTES` distinct templates further ones count as ``<other>``, so a flood of
random paths adds no series.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar, Token
from typing import Any

from .responses import Message, Receive, Send

_ids = itertools.count(1)

UNMATCHED = "<unmatched>"
"""The route label of requests that matched no route (404s, redirects, probes of scanners)."""
OTHER_ROUTE = "<other>"
"""The route label of templates past :data:`MAX_ROUTES`."""
MAX_ROUTES = 500
"""Distinct route templates counted apart; an application has far fewer."""
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds (seconds) of the request duration histogram; ``+Inf`` follows."""
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
"""Methods counted by name; any other counts as ``OTHER``."""
CLIENT_CLOSED = 499
"""The status counted for a request whose client left before its response started (nginx's)."""

_DEADLINE_TASK = "lifesigns deadline 504"
"""The name of the task :mod:`lifesigns.http.deadline` sends its 504 from."""
_LABEL_CACHE_SIZE = 2048
_ENDED: MutableMapping[str, Any] = {}
"""The scope of every ended request: empty, and never written."""


class RequestInfo:
    """One request: method, path, route template, id, start time, and how it is answered.

    Built once per request by :meth:`RequestTracker.begin`; a plain slotted class with
    one ``__init__`` (no dataclass defaults to run) because it is on every request's path.
    """

    __slots__ = (
        "_endpoint",
        "_id",
        "_number",
        "_route",
        "_token",
        "answer",
        "complete",
        "deadline",
        "deadline_exceeded",
        "disconnected",
        "due",
        "ended",
        "error",
        "expired",
        "guard",
        "left_unanswered",
        "method",
        "path",
        "raw_receive",
        "raw_send",
        "rule",
        "scope",
        "started",
        "status",
        "task",
        "task_id",
    )

    def __init__(
        self,
        method: str,
        path: str,
        request_id: str | None = None,
        started: float | None = None,
        scope: MutableMapping[str, Any] | None = None,
        task_id: int = 0,
        raw_receive: Receive | None = None,
        raw_send: Send | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self._id = request_id
        self._number = next(_ids)
        self._route: str | None = None  # the route and endpoint, kept once it ended
        self._endpoint: Any = None
        self._token: Token[RequestInfo | None] | None = None
        self.started: float = time.monotonic() if started is None else started
        self.scope: MutableMapping[str, Any] = {} if scope is None else scope
        self.task_id = task_id
        self.raw_receive = raw_receive
        self.raw_send = raw_send
        self.status = 0
        """The status of the response once started (0 before)."""
        self.complete = False
        """Whether the response's last body message was sent."""
        self.disconnected = False
        """Whether the client went away before the response was complete."""
        self.left_unanswered = False
        """Whether the client went away before the response started (counted as 499)."""
        self.deadline_exceeded = False
        """Whether the answer was the 504 of :mod:`lifesigns.http.deadline`."""
        self.error: str | None = None
        """The type of the exception that escaped the application, if one did."""
        self.ended: float | None = None
        """``time.monotonic()`` when it ended: what outlives it (a checked-out connection)
        is judged against this."""
        # Set only for a request under a deadline (see lifesigns.http.deadline): the
        # guard that sweeps it, its limit and due time (loop clock), the rule that chose
        # it, the serving task, and the task sending the 504 once expired.
        self.guard: Any = None
        self.deadline = 0.0
        self.due = 0.0
        self.rule: str | None = None
        self.expired = False
        self.task: asyncio.Task[Any] | None = None
        self.answer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return (
            f"RequestInfo(method={self.method!r}, path={self.path!r}, "
            f"request_id={self.request_id!r}, status={self.status!r})"
        )

    @property
    def request_id(self) -> str:
        """The client's ``X-Request-ID`` (or ``X-Correlation-ID``), else a number of ours.

        Read from the headers when first asked (a stall report, a held connection), not
        on every request.
        """
        found = self._id
        if found is None:
            found = self._id = _request_id(self.scope) or str(self._number)
        return found

    @property
    def started_response(self) -> bool:
        """Whether the response has started (its status is known)."""
        return self.status != 0

    @property
    def route(self) -> str:
        """The full route template (``/api/v1/orders/{order_id}``) once routed, else the path."""
        final = self._route
        if final is not None:
            return final
        return route_template(self.scope) or self.path

    @property
    def endpoint(self) -> str | None:
        """The qualified name of the endpoint function, once routed."""
        endpoint = self._endpoint if self.ended is not None else self.scope.get("endpoint")
        if endpoint is None:
            return None
        return f"{getattr(endpoint, '__module__', '?')}.{getattr(endpoint, '__qualname__', '?')}"

    def age(self, now: float | None = None) -> float:
        """Seconds since the request arrived."""
        return (now if now is not None else time.monotonic()) - self.started

    def describe(self) -> str:
        """``GET /orders/{order_id} (request 42)``."""
        return f"{self.method} {self.route} (request {self.request_id})"

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """The record as JSON-ready data."""
        return {
            "method": self.method,
            "route": self.route,
            "path": self.path,
            "request_id": self.request_id,
            "endpoint": self.endpoint,
            "age_s": round(self.age(now), 3),
        }

    # The application gets these two in place of the server's receive and send.

    async def receive(self) -> Message:
        """The server's ``receive``, noting a client that left before its answer."""
        if self.raw_receive is None:
            raise RuntimeError(f"{self.describe()} has ended: nothing more to receive")
        message = await self.raw_receive()
        if message["type"] == "http.disconnect" and not self.complete:
            self.disconnected = True
            self.left_unanswered = self.status == 0
        return message

    async def send(self, message: Message) -> None:
        """The server's ``send``, noting the status and the end of the response.

        Past the request's deadline only the deadline's own 504 gets through: the client
        has its answer (or its closed connection) already.
        """
        if self.expired and asyncio.current_task() is not self.answer:
            return
        if self.raw_send is None:
            raise RuntimeError(f"{self.describe()} has ended: its response cannot be sent")
        if message["type"] == "http.response.start":
            self.status = status = message["status"]
            if status == 504:
                task = asyncio.current_task()
                self.deadline_exceeded = task is not None and task.get_name() == _DEADLINE_TASK
        elif not message.get("more_body", False):
            self.complete = True
        try:
            await self.raw_send(message)
        except OSError:  # servers that raise for a client gone (uvicorn's ClientDisconnected)
            self.disconnected = True
            self.left_unanswered = message["type"] == "http.response.start"
            raise

    def __call__(self, message: Message | None = None) -> Awaitable[Any]:
        """The record is both the ``receive`` (no argument) and the ``send`` the
        application gets: no bound method per request to keep alive while it runs."""
        return self.receive() if message is None else self.send(message)

    def expire(self) -> None:
        """Past its deadline: cancel the handler, answer 504 (:mod:`lifesigns.http.deadline`)."""
        self.guard.expire(self, self.send, self.status != 0)


current_request: ContextVar[RequestInfo | None] = ContextVar("lifesigns_request", default=None)
"""The request the running code serves, or ``None`` outside a request."""


def route_template(scope: MutableMapping[str, Any]) -> str | None:
    """The full route template a routed request matched, mount prefixes included.

    ``/api/v1/items/{item_id}`` for a route ``/items/{item_id}`` of a router included with
    ``prefix="/api/v1"`` or of an application mounted at ``/api/v1``; a mount's own
    parameters are templated too (``/tenants/{tenant}/...``). ``None`` before routing and
    for a request no route matched. Works from any thread; never raises.
    """
    route = scope.get("route")
    prefix = ""
    if "app_root_path" in scope:  # set by the first Mount a request went through
        root = scope.get("root_path") or ""
        prefix = root[len(scope.get("app_root_path") or "") :]
        if prefix:
            prefix = _template_mount_params(prefix, scope, route)
            if route is None or _is_mount(route):
                # Served by a mounted app that does no routing of its own (static files),
                # or by one that matched nothing: the mount's own match is in root_path.
                return prefix + "/{path}"
    if route is None:
        return None
    own = _own_template(scope, route)
    if own is None:
        return None
    return prefix + own


def _own_template(scope: MutableMapping[str, Any], route: Any) -> str | None:
    # FastAPI (0.120+) keeps included routers apart: the route's own path lacks the
    # router's prefix, which the effective route context carries.
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        context = fastapi_scope.get("effective_route_context")
        if context is not None and getattr(context, "original_route", None) is route:
            starlette_route = getattr(context, "starlette_route", None)
            full = getattr(starlette_route, "path_format", None) or getattr(
                context, "path_format", None
            )
            if isinstance(full, str) and full:
                return full
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else None


def _is_mount(route: Any) -> bool:
    template = getattr(route, "path_format", None)
    return hasattr(route, "routes") and isinstance(template, str) and template.endswith("/{path}")


def _template_mount_params(prefix: str, scope: MutableMapping[str, Any], route: Any) -> str:
    """``/tenants/acme`` -> ``/tenants/{tenant}``: the mount's parameter values back to names."""
    params = scope.get("path_params") or {}
    own = getattr(route, "param_convertors", None) or {}
    mount_params = [(k, str(v)) for k, v in params.items() if k not in own]
    if not mount_params:
        return prefix
    segments = prefix.split("/")
    for name, value in mount_params:
        for i, segment in enumerate(segments):
            if segment == value:
                segments[i] = "{" + name + "}"
                break
    return "/".join(segments)


class RequestTracker:
    """Keeps the requests in flight, by task, and the tally of those served.

    Readable from any thread (a scrape, the side port, a watchdog).
    """

    # This is on every request's path: plain dicts keyed by id(), entries removed in
    # end(), no weak references (their callbacks cost more than the rest together).
    def __init__(self) -> None:
        self._by_task: dict[int, RequestInfo] = {}
        self._active: dict[int, RequestInfo] = {}
        # (route, method, status) -> [count in each duration bucket..., +Inf, sum of seconds]
        self._served: dict[tuple[str, str, int], list[float]] = {}
        # (route, method) -> requests whose client left / that got the deadline's 504
        self._disconnects: dict[tuple[str, str], int] = {}
        self._deadlines: dict[tuple[str, str], int] = {}
        # (id(route), root_path, id(route context)) -> (label, route, context): the
        # objects are kept so their ids cannot be reused while the entry lives.
        self._labels: dict[tuple[int, str, int], tuple[str, Any, Any]] = {}
        self._routes: set[str] = set()
        self._loops = threading.local()
        # current_request is set only once a reader asked for it (see current).
        self._context_wanted = False

    def _current_task(self) -> asyncio.Task[Any] | None:
        # asyncio.current_task() asks get_running_loop(), which on 3.11 costs a getpid()
        # system call: the loop is remembered per thread while it runs (one loop runs in
        # a thread at a time, so a running remembered loop is the running loop).
        loop: asyncio.AbstractEventLoop | None = getattr(self._loops, "loop", None)
        if loop is None or not loop.is_running():
            try:
                loop = self._loops.loop = asyncio.get_running_loop()
            except RuntimeError:
                return None
        return asyncio.current_task(loop)

    def begin(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> RequestInfo:
        """Record a request arriving; returns its record (and sets :data:`current_request`).

        Hand the application the record's :meth:`~RequestInfo.receive` and
        :meth:`~RequestInfo.send`, so that the tally sees the status and a client leaving.
        """
        task = self._current_task()
        info = RequestInfo(
            scope.get("method", "GET"),
            scope.get("path", ""),
            None,
            time.monotonic(),
            scope,
            id(task) if task is not None else 0,
            receive,
            send,
        )
        info.task = task  # let go of in end(): the task's context may hold the record
        self._active[id(info)] = info
        if task is not None:
            self._by_task[info.task_id] = info
        if self._context_wanted:
            info._token = current_request.set(info)
        return info

    def end(self, info: RequestInfo) -> None:
        """Record a request leaving, and count it by route template, method and status."""
        now = time.monotonic()
        duration = now - info.started
        # The task's context holds the record (current_request): a reference back to the
        # task would make a cycle per request for the garbage collector to find.
        info.task = info.answer = info.guard = None
        self._active.pop(id(info), None)
        if self._by_task.get(info.task_id) is info:
            del self._by_task[info.task_id]
        route = self._label(info.scope)
        method = info.method if info.method in METHODS else "OTHER"
        # A client that left before the response started never saw it (nginx's 499);
        # with no response started the server answers 500 itself.
        status = CLIENT_CLOSED if info.left_unanswered else (info.status or 500)
        key = (route, method, status)
        row = self._served.get(key)
        if row is None:
            row = self._served[key] = [0] * (len(DURATION_BUCKETS) + 2)
        row[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        row[-1] += duration
        if info.disconnected:
            pair = (route, method)
            self._disconnects[pair] = self._disconnects.get(pair, 0) + 1
        if info.deadline_exceeded:
            pair = (route, method)
            self._deadlines[pair] = self._deadlines.get(pair, 0) + 1
        # What outlives the request (a task it spawned, a connection it left checked
        # out) keeps its record through the context: keep the route and endpoint, drop
        # the scope and the server's callables, which hold the whole request (a record
        # that held them made every request's objects outlive it, for the collector).
        info._route = route if route != UNMATCHED and route != OTHER_ROUTE else None
        info._endpoint = info.scope.get("endpoint")
        if info._route is None:
            info._route = route_template(info.scope) or info.path
        info.scope = _ENDED
        info.raw_receive = info.raw_send = None
        token = info._token
        if token is not None:
            # What captured the context meanwhile (spawned tasks, lent threads) keeps it;
            # the request's own task lets go of the record now instead of at its end.
            info._token = None
            with contextlib.suppress(ValueError):  # ended in another context than begun
                current_request.reset(token)
        info.ended = now

    def _label(self, scope: MutableMapping[str, Any]) -> str:
        route = scope.get("route")
        if route is None and "app_root_path" not in scope:
            return UNMATCHED
        fastapi_scope = scope.get("fastapi")
        context = (
            fastapi_scope.get("effective_route_context")
            if isinstance(fastapi_scope, dict)
            else None
        )
        key = (id(route), scope.get("root_path") or "", id(context))
        cached = self._labels.get(key)
        if cached is not None:
            return cached[0]
        label = route_template(scope) or UNMATCHED
        if label not in self._routes:
            if len(self._routes) >= MAX_ROUTES:
                label = OTHER_ROUTE
            self._routes.add(label)
        if len(self._labels) >= _LABEL_CACHE_SIZE:
            self._labels.clear()  # mounts with parameters make root paths unbounded
        self._labels[key] = (label, route, context)
        return label

    def served(self) -> list[tuple[str, str, int, list[float]]]:
        """A copy of the tally: ``(route, method, status, row)`` for each combination seen.

        ``row`` holds the count in each bucket of :data:`DURATION_BUCKETS`, then ``+Inf``
        (not cumulative), then the sum of the durations in seconds.
        """
        return [(r, m, s, list(row)) for (r, m, s), row in list(self._served.items())]

    def disconnects(self) -> dict[tuple[str, str], int]:
        """Requests whose client left before the response was complete, by route and method."""
        return dict(self._disconnects)

    def deadlines_exceeded(self) -> dict[tuple[str, str], int]:
        """Requests answered with the deadline's 504, by route and method."""
        return dict(self._deadlines)

    def in_flight(self) -> list[RequestInfo]:
        """Every request in flight, oldest first (safe from any thread)."""
        return sorted(self._active.values(), key=lambda r: r.started)

    def __len__(self) -> int:
        return len(self._active)

    @property
    def current(self) -> Callable[[], RequestInfo | None]:
        """``current()``: the request the calling code serves, in any thread (or ``None``).

        Asking for it (pool forensics does, when an engine is watched) turns
        :data:`current_request` on for every request from then on: the context variable is
        what threads and tasks a request lends or spawns see it by, and setting it on every
        request costs more than the rest of the record when nothing reads it.
        """
        self._context_wanted = True
        return self._current

    def _current(self) -> RequestInfo | None:
        found = current_request.get()
        if found is not None:
            return found
        try:
            task = asyncio.current_task()
        except RuntimeError:  # a thread without a loop: only the context could tell
            return None
        return self.for_task(task) if task is not None else None

    def for_task(self, task: asyncio.Task[Any] | None) -> RequestInfo | None:
        """The request ``task`` serves, if it is one still in flight."""
        if task is None:
            return None
        return self._by_task.get(id(task))


def _request_id(scope: MutableMapping[str, Any]) -> str | None:
    for key, value in scope.get("headers", ()):
        if key in (b"x-request-id", b"x-correlation-id"):
            text = bytes(value).decode("latin-1")[:64]
            return text if text.isprintable() else None
    return None
