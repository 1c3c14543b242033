"""The side port: liveness, readiness and dumps served from a thread, not from the loop.

A probe routed through a frozen event loop times out and says nothing; one served here
answers within milliseconds while the loop is frozen, and says why. It is a standard
library ``ThreadingHTTPServer`` in a daemon thread, started and stopped by the lifespan,
bound where the settings say (``side_host``, ``side_port``; port 0 picks a free one,
see :attr:`SidePort.port`).

* ``/livez``: the liveness probe (the loop's heartbeat age among its conditions): it
  fails once the loop has been frozen longer than ``live_fail_after``; the body says
  ``loop stalled 12.4 s`` to anyone, and the frame, call and request with the token.
* ``/readyz``: readiness, run on the loop when it is alive (within the probe budget);
  while the loop is frozen, the last result marked stale, and 503.
* ``/debug/`` and ``/debug/<name>``: every dump registered with ``signs.add_dump``
  (stalls, threads, tasks, the pool's...), with the bearer token only; each dump gets
  ``dump_timeout`` seconds.

Pointing an orchestrator at it::

    # Dockerfile (curl in the image; LIFESIGNS_SIDE_PORT=9000)
    HEALTHCHECK --interval=10s --timeout=3s --retries=3 \\
      CMD curl -fsS --max-time 2 http://127.0.0.1:9000/livez || exit 1

    # Kubernetes
    livenessProbe:
      httpGet: {path: /livez, port: 9000}
      periodSeconds: 10
      timeoutSeconds: 2
      failureThreshold: 3
    readinessProbe:
      httpGet: {path: /readyz, port: 9000}

In Kubernetes bind the side port to ``0.0.0.0`` (the kubelet connects to the pod IP);
keep dumps behind the token, and the port off any Service.

Every connection has a 5 s socket timeout and at most ``max_connections`` are served
at once (further ones are closed at once): a flood of probes cannot pile up threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..health.render import probe_text

if TYPE_CHECKING:
    from ..core import Lifesigns

logger = logging.getLogger("lifesigns.loop")

LoopState = Callable[[], tuple[asyncio.AbstractEventLoop | None, float | None]]
"""Returns the watched loop and, when it is frozen, for how long (else ``None``)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], side: SidePort) -> None:
        self.side = side
        self.slots = threading.BoundedSemaphore(side.max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5.0
    server_version = "lifesigns"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: probes arrive every few seconds."""

    def _answer(self, *, body: bool) -> None:
        try:
            status, content_type, text, extra = self.server.side.route(
                self.path, self.headers.get("authorization")
            )
        except Exception as exc:  # a bug here must not kill liveness for good
            status, content_type, text, extra = 500, "text/plain", f"{type(exc).__name__}\n", {}
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)


Answer = tuple[int, str, str, dict[str, str]]


class SidePort:
    """The out-of-band HTTP server: a lifesigns component (``name = "side-port"``)."""

    name = "side-port"

    def __init__(
        self,
        signs: Lifesigns,
        host: str,
        port: int,
        *,
        loop_state: LoopState,
        dump_timeout: float = 2.0,
        max_connections: int = 16,
    ) -> None:
        self.signs = signs
        self.host = host
        self.requested_port = port
        self.loop_state = loop_state
        self.dump_timeout = dump_timeout
        self.max_connections = max_connections
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"SidePort(host={self.host!r}, port={self.port or self.requested_port!r})"

    @property
    def port(self) -> int | None:
        """The port actually bound (``None`` until started)."""
        return None if self._server is None else int(self._server.server_address[1])

    async def start(self) -> None:
        """Bind and serve in a daemon thread. Raises ``OSError`` if the port is taken."""
        if self._server is not None:
            return
        self._server = _Server((self.host, self.requested_port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="lifesigns-side-port",
            daemon=True,
        )
        self._thread.start()
        logger.info("lifesigns side port listening on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop serving and close the socket (waits at most about a second)."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is None:
            return
        await asyncio.wait_for(asyncio.to_thread(server.shutdown), timeout=2.0)
        server.server_close()
        if thread is not None:
            await asyncio.to_thread(thread.join, 1.0)

    # -- routing (on a server thread) ----------------------------------------------

    def route(self, target: str, authorization: str | None) -> Answer:
        """Answer one request: status, content type, body text, extra headers."""
        parts = urlsplit(target)
        params = parse_qs(parts.query, keep_blank_values=True)
        path = parts.path
        detailed = self.signs.is_authorized(authorization)
        if path == "/livez":
            result = self.signs.probes.liveness()
            text = probe_text(result, verbose="verbose" in params, detailed=detailed)
            return result.status.http_status, "text/plain", text, {}
        if path == "/readyz":
            return self._readyz("verbose" in params, detailed)
        if path == "/debug" or path.startswith("/debug/"):
            return self._debug(path.removeprefix("/debug").strip("/"), detailed)
        return 404, "text/plain", "not found; try /livez, /readyz or /debug/\n", {}

    def _readyz(self, verbose: bool, detailed: bool) -> Answer:
        probes = self.signs.probes
        loop, frozen_for = self.loop_state()
        if loop is not None and frozen_for is None:
            future = asyncio.run_coroutine_threadsafe(probes.readiness(), loop)
            try:
                result = future.result(timeout=probes.budget + 0.5)
            except Exception:  # timed out, or the loop froze while we waited
                future.cancel()
            else:
                text = probe_text(result, verbose=verbose, detailed=detailed)
                return result.status.http_status, "text/plain", text, {}
            _, frozen_for = self.loop_state()
        last = probes.last_readiness
        lines = []
        if frozen_for is not None:
            lines.append(f"[-]event loop stalled {frozen_for:.1f} s")
        else:
            lines.append("[-]readiness did not answer within the probe budget")
        if last is None:
            lines.append("no readiness result yet")
        else:
            age = time.time() - last.at
            previous = probe_text(last, verbose=True, detailed=detailed).splitlines()
            lines.append(f"last result (stale, {age:.1f} s old):")
            lines.extend(f"    {line}" for line in previous)
        lines.append("readyz check failed")
        return 503, "text/plain", "\n".join(lines) + "\n", {"X-Lifesigns-Stale": "true"}

    def _debug(self, name: str, detailed: bool) -> Answer:
        if not detailed:
            return (
                401,
                "text/plain",
                "dumps need the bearer token (Authorization: Bearer ...)\n",
                {"WWW-Authenticate": 'Bearer realm="lifesigns"'},
            )
        dumps = self.signs.dumps
        if name == "":
            return 200, "application/json", json.dumps({"dumps": sorted(dumps)}) + "\n", {}
        producer = dumps.get(name)
        if producer is None:
            known = ", ".join(sorted(dumps))
            return 404, "text/plain", f"no dump {name!r}; dumps: {known}\n", {}
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(("ok", dict(producer())))
            except Exception as exc:
                outcome.append(("error", f"{type(exc).__name__}: {exc}"))

        # A dump that blocks (a lock the frozen loop holds) must not take this thread.
        worker = threading.Thread(target=run, name=f"lifesigns-dump-{name}", daemon=True)
        worker.start()
        worker.join(self.dump_timeout)
        if not outcome:
            return (
                504,
                "text/plain",
                f"dump {name!r} did not answer within {self.dump_timeout:g} s\n",
                {},
            )
        kind, value = outcome[0]
        if kind == "error":
            return (
                500,
                "text/plain",
                f"dump {name!r} failed: {self.signs.redactor.redact(value)}\n",
                {},
            )
        return 200, "application/json", json.dumps(value, indent=2, default=str) + "\n", {}
