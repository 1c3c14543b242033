"""The probe endpoints: routing, authorization and rendering of ``health`` results."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..health import ProbeResult, UnknownCheckError
from ..health.render import HEALTH_JSON, health_json, probe_text, startup_lines
from ..metrics import CONTENT_TYPE, render
from .responses import Scope, Send, exclusions, header, query, send_json, send_response

if TYPE_CHECKING:
    from ..core import Lifesigns

Handler = Callable[[Scope, Send], Awaitable[None]]


class ProbeEndpoints:
    """Maps paths to probe handlers for one :class:`~lifesigns.Lifesigns`."""

    def __init__(self, signs: Lifesigns) -> None:
        self.signs = signs
        settings = signs.settings
        handlers: dict[str, Handler] = {
            "livez": self.livez,
            "readyz": self.readyz,
            "startupz": self.startupz,
            "health": self.health,
            "metrics": self.metrics,
        }
        self.routes: dict[str, Handler] = {}
        for probe, handler in handlers.items():
            path = settings.probe_path(probe)
            if path is not None:
                self.routes[path] = handler
        readyz = settings.probe_path("readyz")
        self._per_check_prefix = f"{readyz}/" if readyz else None
        self._debug_prefix = f"{settings.prefix}/debug/"

    def match(self, path: str) -> Handler | None:
        """The handler for ``path``, or ``None`` when it is not a probe."""
        handler = self.routes.get(path)
        if handler is None and self._per_check_prefix and path.startswith(self._per_check_prefix):
            return self.readyz
        if handler is None and path.startswith(self._debug_prefix):
            return self.debug
        return handler

    async def livez(self, scope: Scope, send: Send) -> None:
        """Liveness: never a dependency check."""
        if await self._refuse_method(scope, send, "livez"):
            return
        await self._answer_text(scope, send, self.signs.probes.liveness())

    async def readyz(self, scope: Scope, send: Send) -> None:
        """Readiness, or one check's readiness at ``/readyz/<name>``."""
        if await self._refuse_method(scope, send, "readyz"):
            return
        params = query(scope)
        only = None
        if self._per_check_prefix and scope["path"].startswith(self._per_check_prefix):
            only = scope["path"][len(self._per_check_prefix) :]
        try:
            result = await self.signs.probes.readiness(exclusions(params), only=only)
        except UnknownCheckError as error:
            await self._bad_request(send, "readyz", str(error))
            return
        await self._answer_text(scope, send, result)

    async def startupz(self, scope: Scope, send: Send) -> None:
        """Start-up progress."""
        if await self._refuse_method(scope, send, "startupz"):
            return
        detailed = self._detailed(scope)
        progress = startup_lines(self.signs.lifecycle.steps, detailed=detailed)
        await self._answer_text(scope, send, self.signs.probes.startup(), progress=progress)

    async def health(self, scope: Scope, send: Send) -> None:
        """The full report as ``application/health+json``."""
        if await self._refuse_method(scope, send, "health"):
            return
        try:
            result = await self.signs.probes.health(exclusions(query(scope)))
        except UnknownCheckError as error:
            await self._bad_request(send, "health", str(error))
            return
        detailed = self._detailed(scope)
        notes = startup_lines(self.signs.lifecycle.steps, detailed=True) if detailed else None
        settings = self.signs.settings
        document = health_json(
            result,
            service=settings.service,
            version=settings.version,
            detailed=detailed,
            notes=notes,
        )
        self._count("health", result.status.http_status)
        await send_json(send, result.status.http_status, document, HEALTH_JSON)

    async def metrics(self, scope: Scope, send: Send) -> None:
        """Prometheus text exposition of this instance's registry."""
        if await self._refuse_method(scope, send, "metrics"):
            return
        await send_response(send, 200, render(self.signs.registry), CONTENT_TYPE)

    async def debug(self, scope: Scope, send: Send) -> None:
        """A token-protected dump at ``/debug/<name>``; ``/debug/`` lists them."""
        if await self._refuse_method(scope, send, "debug"):
            return
        if not self._detailed(scope):
            self._count("debug", 401)
            await send_response(
                send,
                401,
                "dumps need the bearer token (Authorization: Bearer ...)\n",
                headers=[(b"www-authenticate", b'Bearer realm="lifesigns"')],
            )
            return
        name = scope["path"][len(self._debug_prefix) :]
        dumps = self.signs.dumps
        if name == "":
            await send_json(send, 200, {"dumps": sorted(dumps)})
            return
        producer = dumps.get(name)
        if producer is None:
            self._count("debug", 404)
            await send_response(send, 404, f"no dump {name!r}; dumps: {', '.join(sorted(dumps))}\n")
            return
        self._count("debug", 200)
        await send_json(send, 200, dict(producer()))

    def _detailed(self, scope: Scope) -> bool:
        return self.signs.is_authorized(header(scope, b"authorization"))

    async def _answer_text(
        self, scope: Scope, send: Send, result: ProbeResult, progress: list[str] | None = None
    ) -> None:
        params = query(scope)
        body = probe_text(
            result, verbose="verbose" in params, detailed=self._detailed(scope), progress=progress
        )
        code = result.status.http_status
        self._count(result.probe, code)
        await send_response(send, code, body)

    async def _bad_request(self, send: Send, probe: str, message: str) -> None:
        self._count(probe, 400)
        await send_response(send, 400, f"{message}\n")

    async def _refuse_method(self, scope: Scope, send: Send, probe: str) -> bool:
        if scope.get("method", "GET") in ("GET", "HEAD"):
            return False
        self._count(probe, 405)
        await send_response(send, 405, "use GET or HEAD\n", headers=[(b"allow", b"GET, HEAD")])
        return True

    def _count(self, probe: str, code: int) -> None:
        self.signs.metrics.probe_answers.labels(probe, str(code)).inc()
