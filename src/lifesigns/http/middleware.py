"""Pure ASGI middleware: lifesigns' router on the application port, everything else passed on.

The application port serves the surfaces the ``expose`` setting names (the probes only by
default; ``/metrics`` and ``/debug/*`` live on the side port unless asked, see
:mod:`lifesigns._surfaces`). A probe path the application routes itself (its own
``/health``) is left to the application, with one warning naming the route and how to
rename lifesigns' probe (``paths=``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator
from typing import Any, Protocol

from .._config import Settings
from .._surfaces import DEBUG, METRICS
from ..host import Host
from ..router import ProbeRouter
from ..sideport import LIFESPAN_SCOPE
from .deadline import DeadlineMiddleware
from .requests import RequestTracker
from .responses import ASGIApp, Receive, Scope, Send, send_answer

logger = logging.getLogger("lifesigns.http")


class Assembled(Protocol):
    """What the middleware needs of a :class:`~lifesigns.Lifesigns` (which is one)."""

    @property
    def host(self) -> Host: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def router(self) -> ProbeRouter: ...

    @property
    def requests(self) -> RequestTracker: ...


class LifesignsMiddleware:
    """Serves lifesigns' exposed surfaces; every other request goes to ``app`` untouched.

    Other requests are recorded as in flight while they run and tallied when they end
    (see :mod:`lifesigns.http.requests`) and, when the ``deadline`` setting is given, cut
    at that deadline with a 504 (see :mod:`lifesigns.http.deadline`): all in one ASGI
    pass, one coroutine and one record per request (whose ``receive`` and ``send`` the
    application gets). The probes answer before any
    of the application's own middleware (authentication, sessions).

    ``track_requests=False`` serves the surfaces only: no request record, metrics or
    deadline (the request path is then one dictionary lookup).

    **Usage**::

        app = LifesignsMiddleware(app, signs=signs)
    """

    def __init__(self, app: ASGIApp, signs: Assembled, *, track_requests: bool = True) -> None:
        self.app = app
        self.signs = signs
        self.router: ProbeRouter = signs.router.for_surfaces(signs.settings.expose)
        self.requests: RequestTracker | None = signs.requests if track_requests else None
        self.deadlines: DeadlineMiddleware | None = None
        if signs.settings.deadline is not None:
            self.deadlines = DeadlineMiddleware(app, signs=signs)
            if not track_requests:
                self.app = self.deadlines  # no record to carry the deadline: its own pass
                self.deadlines = None
            else:
                self.deadlines.share(signs.requests.flight)
        self._looked_at: int | None = None  # id() of the application whose routes were read

    # Not a coroutine function: it picks the one coroutine that serves the request, so
    # that a tracked request costs one coroutine here (objects alive for the whole of
    # every request in flight add up to the garbage collector running under load).
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                return self._lifespan(scope, receive, send)
            return self.app(scope, receive, send)
        app = scope.get("app")
        if self._looked_at != id(app):
            self._look_at(app)
        path = scope["path"]
        if self.router.matches(path):
            return self._answer(scope, path, send)
        if self.requests is None:
            return self.app(scope, receive, send)
        return self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The request record, and the deadline's steps (DeadlineMiddleware.serve()),
        # in one coroutine.
        requests = self.requests
        assert requests is not None
        info = requests.begin(scope, receive, send)
        if self.deadlines is not None:
            self.deadlines.guard(info, info.path, info.started)
        try:
            try:
                await self.app(scope, info.receive, info.send)
            except asyncio.CancelledError:
                if not DeadlineMiddleware.swallow(info, info.task):
                    raise
            else:
                if info.expired:
                    DeadlineMiddleware.settle(info, info.task)
            if info.answer is not None:
                await info.answer
        except BaseException as exc:
            info.error = type(exc).__name__  # what ended it, for what outlives it
            info.gone(exc)
            raise
        finally:
            requests.end(info)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._look_at(scope.get("app"))
        self._note_private_surfaces()
        token = LIFESPAN_SCOPE.set(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            LIFESPAN_SCOPE.reset(token)

    async def _answer(self, scope: Scope, path: str, send: Send) -> None:
        method = scope.get("method", "GET")
        reply = await self.router.handle_async(
            method,
            path,
            bytes(scope.get("query_string", b"")).decode("latin-1"),
            _headers(scope),
        )
        await send_answer(send, reply, head=method == "HEAD")

    def _note_private_surfaces(self) -> None:
        settings = self.signs.settings
        hidden = sorted({METRICS, DEBUG} - settings.expose)
        if hidden and settings.side_port is None:
            logger.info(
                "lifesigns serves %s on the side port only, and no side port is set: set "
                "side_port= (LIFESIGNS_SIDE_PORT) to reach them, or expose=... "
                "(LIFESIGNS_EXPOSE) to serve them on the application port",
                " and ".join(hidden),
            )

    def _look_at(self, app: Any) -> None:
        """Leave to ``app`` every probe path it routes itself, warning once per route."""
        if self._looked_at == id(app):
            return
        self._looked_at = id(app)
        if app is None:
            return
        for path, methods in _static_routes(app):
            probe = self.router.probe_for(path)
            if probe is None or probe == "debug" or (methods and "GET" not in methods):
                continue
            self.router.yield_path(path)
            logger.warning(
                "the application has its own route GET %s: lifesigns leaves it to the "
                "application and does not serve its %s probe there (the side port still "
                "does). Serve the probe elsewhere with Lifesigns(paths={%r: '/lifesigns%s'}), "
                "or turn it off with paths={%r: None}",
                path,
                probe,
                probe,
                path.removeprefix(self.signs.settings.prefix),
                probe,
            )


def _static_routes(app: Any) -> Iterator[tuple[str, frozenset[str] | None]]:
    """Paths without parameters the application routes itself, with their methods."""
    router = getattr(app, "router", app)
    for route in getattr(router, "routes", None) or ():
        path = getattr(route, "path", None)
        if not isinstance(path, str) or "{" in path or hasattr(route, "routes"):
            continue  # a parameter, or a mount: only exact routes can collide
        methods = getattr(route, "methods", None)
        yield path, frozenset(methods) if methods else None


def _headers(scope: Scope) -> list[tuple[str, str]]:
    return [
        (bytes(key).decode("latin-1"), bytes(value).decode("latin-1"))
        for key, value in scope.get("headers", ())
    ]
