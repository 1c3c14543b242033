"""Pure ASGI middleware that answers the probe paths and passes everything else on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .deadline import DeadlineMiddleware
from .probes import ProbeEndpoints
from .responses import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from ..core import Lifesigns


class LifesignsMiddleware:
    """Serves ``/livez``, ``/readyz``, ``/startupz``, ``/health`` and ``/metrics``.

    Every other request goes to ``app`` untouched, recorded as in flight while it runs
    (see :mod:`lifesigns.http.requests`) and, when the ``deadline`` setting is given,
    cut at that deadline with a 504 (see :mod:`lifesigns.http.deadline`). The probes
    answer before any of the application's own middleware (authentication, sessions).

    **Usage**::

        app = LifesignsMiddleware(app, signs=signs)
    """

    def __init__(self, app: ASGIApp, signs: Lifesigns) -> None:
        if signs.settings.deadline is not None:
            app = DeadlineMiddleware(app, signs=signs)
        self.app = app
        self.endpoints = ProbeEndpoints(signs)
        self.requests = signs.requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handler = self.endpoints.match(scope["path"])
        if handler is not None:
            await handler(scope, send)
            return
        info = self.requests.begin(scope, receive, send)
        try:
            await self.app(scope, info.receive, info.send)
        finally:
            self.requests.end(info)
