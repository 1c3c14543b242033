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

The tally costs a dictionary look-up and two additions per request, made on the thread
that serves the request as it ends, with no lock: each row has one writer (the event loop),
and a scrape copies a row in one step, so it sees the previous or the next count, never
a torn one. Nothing is kept per request once it ended.

Routes are named by their template with every mount prefix (``/api/v1/items/{id}``), never
by the raw path: requests that match no route count as ``<unmatched>``, and past
:data:`MAX_ROUTES` distinct templates further ones count as ``<other>``, so a flood of
random paths adds no series.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections.abc import Awaitable, Callable, Generator, MutableMapping
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
_ROW_WIDTH = len(DURATION_BUCKETS) + 2


class RequestInfo:
    """One request: method, path, route template, id, start time, and how it is answered.

    Built once per request by :meth:`RequestTracker.begin`, so it is kept cheap: its
    ``__init__`` stores what every request has, and what few requests change (a client
    gone, a deadline, an error) keeps the class's default until one does.
    """

    # What a request rarely changes: class defaults, written on the instance when it does.
    status = 0
    """The status of the response once started (0 before)."""
    complete = False
    """Whether the response's last body message was sent."""
    streaming = False
    """Whether a body message with more to come was sent."""
    disconnected = False
    """Whether the client went away before the response was complete."""
    left_unanswered = False
    """Whether the client went away before the response started (counted as 499)."""
    deadline_exceeded = False
    """Whether the answer was the 504 of :mod:`lifesigns.http.deadline`."""
    error: str | None = None
    """The type of the exception that escaped the application, if one did."""
    ended: float | None = None
    """``time.monotonic()`` when it ended: what outlives it (a checked-out connection)
    is judged against this."""
    # Under a deadline (lifesigns.http.deadline): the guard that sweeps it, its limit
    # (0: the guard's default; inf: exempt) and due time (time.monotonic()), the rule
    # that chose it, whether it expired, and the task sending the 504 then.
    guard: Any = None
    deadline = 0.0
    due = 0.0
    rule: str | None = None
    expired = False
    answer: asyncio.Task[None] | None = None
    _id: str | None = None
    _token: Token[RequestInfo | None] | None = None
    _context_left = False

    def __init__(
        self,
        method: str,
        path: str,
        request_id: str | None = None,
        started: float | None = None,
        scope: MutableMapping[str, Any] | None = None,
        task: asyncio.Task[Any] | None = None,
        raw_receive: Receive | None = None,
        raw_send: Send | None = None,
    ) -> None:
        self.method = method
        self.path = path
        if request_id is not None:
            self._id = request_id
        self.started: float = time.monotonic() if started is None else started
        self.scope: MutableMapping[str, Any] = {} if scope is None else scope
        self.task = task
        """The task serving the request, while it runs."""
        self.raw_receive = raw_receive
        self.raw_send = raw_send

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
            found = self._id = _request_id(self.scope) or str(next(_ids))
        return found

    @property
    def task_id(self) -> int:
        """``id()`` of the task serving the request while it runs (0 without one)."""
        task = self.task
        return id(task) if task is not None else 0

    @property
    def started_response(self) -> bool:
        """Whether the response has started (its status is known)."""
        return self.status != 0

    @property
    def route(self) -> str:
        """The full route template (``/api/v1/orders/{order_id}``) once routed, else the path."""
        return route_template(self.scope) or self.path

    @property
    def endpoint(self) -> str | None:
        """The qualified name of the endpoint function, once routed."""
        endpoint = self.scope.get("endpoint")
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

    # The application gets these two in place of the server's receive and send (bound
    # methods: a call to one costs less than a call to an object with __call__).

    async def receive(self) -> Message:
        """The server's ``receive``, noting a client that left before its answer."""
        if self.raw_receive is None:
            raise RuntimeError(f"{self.describe()} has ended: nothing more to receive")
        message = await self.raw_receive()
        if message["type"] == "http.disconnect" and not self.complete:
            self.disconnected = True
            self.left_unanswered = self.status == 0
        return message

    def send(self, message: Message) -> Awaitable[None]:
        """The server's ``send``, noting the status and the end of the response.

        Past the request's deadline only the deadline's own 504 gets through: the client
        has its answer (or its closed connection) already. Not a coroutine function: it
        hands on the server's own awaitable, a coroutine less on every message. A server
        that raises ``OSError`` for a client gone (ASGI 2.4) is noticed where the error
        comes out of the application (:meth:`gone`).
        """
        if self.expired and asyncio.current_task() is not self.answer:
            return _DROPPED
        raw = self.raw_send
        if raw is None:
            raise RuntimeError(f"{self.describe()} has ended: its response cannot be sent")
        if message["type"] == "http.response.start":
            self.status = status = message["status"]
            if status == 504:
                task = asyncio.current_task()
                self.deadline_exceeded = task is not None and task.get_name() == _DEADLINE_TASK
        elif message.get("more_body", False):
            self.streaming = True
        else:
            self.complete = True
            if self._token is not None:
                # The server schedules its keep-alive timer from inside the last send,
                # and a timer handle keeps a copy of the context it was made in: with the
                # record in it, each idle connection kept its last request's record and
                # context alive, and the garbage collector, seeing them survive, ran 50
                # times as often under load (bench/overhead.py). Code after the response
                # (background tasks) still finds the request by its task.
                self._leave_context()
        return raw(message)

    def _leave_context(self) -> None:
        """Take the record out of :data:`current_request`, once; from another context
        (a send from BaseHTTPMiddleware's task) it stays for the request's end to take."""
        token = self._token
        if token is None or self._context_left:
            return
        try:
            current_request.reset(token)
        except ValueError:  # set in another context than this one
            return
        self._context_left = True

    def gone(self, error: BaseException) -> None:
        """``error`` came out of the application: if it is the server's ``OSError`` for a
        client gone, note it (Starlette answers 500 itself for an ``OSError`` of its own,
        completing the response, so one that escapes incomplete is the server's)."""
        if isinstance(error, OSError) and not self.complete:
            self.disconnected = True
            self.left_unanswered = not self.streaming

    def expire(self) -> None:
        """Past its deadline: cancel the handler, answer 504 (:mod:`lifesigns.http.deadline`)."""
        self.guard.expire(self, self.send, self.status != 0)


class _Dropped:
    """An awaitable that does nothing: what a send past the deadline gets."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        yield from ()


_DROPPED = _Dropped()


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

    # This is on every request's path, and every operation in begin() and end() shows in
    # the benchmarks (bench/request_path.py): one plain dict of the requests in flight
    # keyed by id(task), entries removed in end(), no weak references (their callbacks
    # cost more than the rest together), and the tally counted in end(). Nothing of a
    # request may outlive it: objects surviving the garbage collector's youngest
    # generation (4,096 ended requests once queued for a later count) made it collect 25
    # times as often under load, with full collections of the whole heap among them.
    def __init__(self) -> None:
        self._flight: dict[int, RequestInfo] = {}
        # (route, method, status) -> [count in each duration bucket..., +Inf, sum of seconds]
        self._served: dict[tuple[str, str, int], list[float]] = {}
        # id(route), or id(FastAPI's route context) -> (label, route, context): kept so
        # that their ids cannot be reused meanwhile
        self._route_labels: dict[int, tuple[str, Any, Any]] = {}
        # (route, method) -> requests whose client left / that got the deadline's 504
        self._disconnects: dict[tuple[str, str], int] = {}
        self._deadlines: dict[tuple[str, str], int] = {}
        # (id(route), root_path, id(route context)) -> (label, route, context): the
        # objects are kept so their ids cannot be reused while the entry lives.
        self._labels: dict[tuple[int, str, int], tuple[str, Any, Any]] = {}
        self._routes: set[str] = set()
        # current_request is set only once a reader asked for it (see current).
        self._context_wanted = False

    def begin(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> RequestInfo:
        """Record a request arriving; returns its record (and sets :data:`current_request`).

        Hand the application the record's :meth:`~RequestInfo.receive` and
        :meth:`~RequestInfo.send`, so that the tally sees the status and a client leaving.
        """
        # The task: the record is let go of in end() (its context may hold the record).
        loop = _running_loop()
        task = None if loop is None else _current_task(loop)
        info = RequestInfo(
            scope.get("method", "GET"),
            scope.get("path", ""),
            None,
            time.monotonic(),
            scope,
            task,
            receive,
            send,
        )
        self._flight[id(task) if task is not None else id(info)] = info
        if self._context_wanted:
            info._token = current_request.set(info)
        return info

    def end(self, info: RequestInfo) -> None:
        """Record a request leaving: out of the flight, counted by route template, method,
        status and duration."""
        now = info.ended = time.monotonic()
        task = info.task
        key = id(task) if task is not None else id(info)
        found = self._flight.pop(key, None)
        if found is not info and found is not None:  # a request nested in its task's
            self._flight[key] = found
        scope = info.scope
        route = scope.get("route")
        if route is None or "app_root_path" in scope:
            label = self._label(scope)  # unrouted, or mounted: the root path counts too
        else:
            # Starlette's routes define __eq__ without __hash__: known by id. FastAPI's
            # route context says which included router (and prefix) the route came by.
            fastapi_scope = scope.get("fastapi")
            context = (
                fastapi_scope.get("effective_route_context")
                if fastapi_scope.__class__ is dict
                else None
            )
            known = self._route_labels.get(id(route) if context is None else id(context))
            if known is not None and known[1] is route:
                label = known[0]
            else:
                label = self._route_label(scope, route, context)
        method = info.method
        # A client that left before the response started never saw it (nginx's 499);
        # with no response started the server answers 500 itself.
        status = CLIENT_CLOSED if info.left_unanswered else (info.status or 500)
        served = self._served
        row_key = (label, method if method in METHODS else "OTHER", status)
        row = served.get(row_key)
        if row is None:
            row = served[row_key] = [0] * _ROW_WIDTH
        duration = now - info.started
        row[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        row[-1] += duration
        if info.disconnected or info.expired:
            self._note_rare(info)
        if info._token is not None:
            # What captured the context meanwhile (spawned tasks, lent threads) keeps the
            # record: it lets go of the task and of the server's callables (which hold
            # the connection), and the request's own task lets go of the record now
            # instead of at its end.
            info.task = info.raw_receive = info.raw_send = None
            info._leave_context()
            info._token = None

    def _route_label(self, scope: MutableMapping[str, Any], route: Any, context: Any) -> str:
        """The label of ``route`` reached without a mount (by ``context``, FastAPI's)."""
        if len(self._route_labels) >= _LABEL_CACHE_SIZE:
            self._route_labels.clear()
        label = self._label(scope)
        self._route_labels[id(route) if context is None else id(context)] = (
            label,
            route,
            context,
        )
        return label

    def _note_rare(self, info: RequestInfo) -> None:
        # The deadline's 504 task holds the record (its send): let go of it, and of the
        # serving task, so that no cycle is left for the garbage collector to find.
        info.answer = info.task = None
        pair = (self._label(info.scope), info.method if info.method in METHODS else "OTHER")
        if info.disconnected:
            self._disconnects[pair] = self._disconnects.get(pair, 0) + 1
        if info.deadline_exceeded:
            self._deadlines[pair] = self._deadlines.get(pair, 0) + 1

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
        return sorted(self._flight.copy().values(), key=lambda r: r.started)

    def __len__(self) -> int:
        return len(self._flight)

    def flight(self) -> list[RequestInfo]:
        """The requests in flight in no order (a copy; safe from any thread)."""
        return list(self._flight.copy().values())

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
        found = self._flight.get(id(task))
        return found if found is not None and found.task is task else None


def _request_id(scope: MutableMapping[str, Any]) -> str | None:
    for key, value in scope.get("headers", ()):
        if key in (b"x-request-id", b"x-correlation-id"):
            text = bytes(value).decode("latin-1")[:64]
            return text if text.isprintable() else None
    return None


def _task_table() -> Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]:
    """``loop -> its current task``, as cheaply as this Python has it.

    On 3.11 ``asyncio.current_task()`` is pure Python and checks again that the loop
    runs; asyncio's own table of current tasks answers the same for the running loop.
    """
    table = getattr(asyncio.tasks, "_current_tasks", None)
    if isinstance(table, dict):
        return table.get
    return asyncio.current_task


_running_loop: Callable[[], asyncio.AbstractEventLoop | None] = asyncio.events._get_running_loop
_current_task = _task_table()
