"""The requests in flight: who is being served right now, and by which task.

A cheap record per request, kept by :class:`~lifesigns.http.LifesignsMiddleware`, so that
other layers can say which request a stall, a held connection or a deadline belongs to:

* :data:`current_request` is a context variable: code running for a request (its task,
  the threads anyio lends it, SQLAlchemy's greenlets) sees that request.
* :meth:`RequestTracker.for_task` finds the request a task is serving, from any thread,
  without touching the event loop: a watchdog names the request of a frozen loop this way.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class RequestInfo:
    """One request in flight: method, path, route template, id and start time."""

    method: str
    path: str
    request_id: str
    started: float = field(default_factory=time.monotonic)
    scope: MutableMapping[str, Any] = field(default_factory=dict, repr=False)
    task_id: int = field(default=0, repr=False)
    # How it ended, for layers that judge what outlives a request (the pool's leaks):
    # the response status, the exception type that escaped, time.monotonic() at the end.
    status: int | None = field(default=None, repr=False)
    error: str | None = field(default=None, repr=False)
    ended: float | None = field(default=None, repr=False)

    @property
    def route(self) -> str:
        """The route template (``/orders/{order_id}``) once routed, else the raw path."""
        route = self.scope.get("route")
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        return template if isinstance(template, str) else self.path

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


current_request: ContextVar[RequestInfo | None] = ContextVar("lifesigns_request", default=None)
"""The request the running code serves, or ``None`` outside a request."""


class RequestTracker:
    """Keeps the requests in flight, by task, readable from any thread."""

    # This is on every request's path: plain dicts keyed by id(), entries removed in
    # end(), no weak references (their callbacks cost more than the rest together).
    def __init__(self) -> None:
        self._by_task: dict[int, RequestInfo] = {}
        self._active: dict[int, RequestInfo] = {}

    def begin(self, scope: MutableMapping[str, Any]) -> RequestInfo:
        """Record a request arriving; returns its record (and sets :data:`current_request`)."""
        request_id = _request_id(scope) or str(next(_ids))
        task = asyncio.current_task()
        info = RequestInfo(
            scope.get("method", "GET"),
            scope.get("path", ""),
            request_id,
            time.monotonic(),
            scope,
            id(task) if task is not None else 0,
        )
        self._active[id(info)] = info
        if task is not None:
            self._by_task[info.task_id] = info
        current_request.set(info)
        return info

    def end(self, info: RequestInfo) -> None:
        """Record a request leaving."""
        info.ended = time.monotonic()
        self._active.pop(id(info), None)
        if self._by_task.get(info.task_id) is info:
            del self._by_task[info.task_id]

    def in_flight(self) -> list[RequestInfo]:
        """Every request in flight, oldest first (safe from any thread)."""
        return sorted(self._active.values(), key=lambda r: r.started)

    def __len__(self) -> int:
        return len(self._active)

    def current(self) -> RequestInfo | None:
        """The request the calling code serves, in any thread it runs in (or ``None``)."""
        return current_request.get()

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
