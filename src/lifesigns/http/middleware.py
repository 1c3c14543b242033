"""Pure ASGI middleware that answers the probe paths and passes everything else on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .deadline import DeadlineMiddleware
from .probes import ProbeEndpoints
from .responses import ASGIApp, Message, Receive, Scope, Send

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
        info = self.requests.begin(scope)

        async def send_recording_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                info.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        except BaseException as exc:
            info.error = type(exc).__name__
            raise
        finally:
            self.requests.end(info)
