"""The side port: the probe router served from a thread, not from the event loop.

A probe routed through a frozen event loop times out and says nothing; one served here
answers within milliseconds while the loop is frozen, and says why. It is a standard
library ``ThreadingHTTPServer`` in a daemon thread, started and stopped by the lifespan,
bound where the settings say (``side_host``, ``side_port``; port 0 picks a free one, see
:attr:`SidePort.port`). It serves the same router as the application port, with every
surface (probes, ``/metrics``, ``/debug/*``), under the same ``prefix`` and ``paths``:

* ``/livez``: liveness, from thread-safe conditions (the loop's heartbeat age among them),
  so it answers while the loop is frozen: ``loop stalled 12.4 s`` to anyone, the frame,
  call and request with the token.
* ``/readyz`` and ``/health``: run on the loop when it is alive (within the probe budget);
  while the loop is frozen, 503 at once with the last readiness result marked stale.
* ``/debug/<dump>``: every dump, with the bearer token only, each in its own thread for
  at most 2 s.

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

When it binds, and when it does not (the rule):

* **Taken port.** Several workers of one server (``fastapi run --workers 4``,
  ``uvicorn --workers N``, gunicorn) share one ``side_port``: the first to bind serves it
  and logs ``lifesigns side port listening on http://... (worker pid N)``; each other
  worker logs one line saying the port is taken and pointing to ``lifesigns run`` (one
  side port for every worker), and carries on. A taken port never fails the lifespan.
  Any other bind error is logged at ERROR and never fails it either: a diagnostic port
  must not take the service down.
* **Tests and reloaders.** Under a test client (a lifespan scope without the ``asgi`` key,
  as Starlette's ``TestClient`` sends, or a run of pytest) or a reloader's worker
  (``--reload`` on the command line, ``fastapi dev``) a side port that comes from the
  environment (``LIFESIGNS_SIDE_PORT``, the deployment's) is not bound, and one INFO
  line says so. A ``side_port=`` given in code is bound anyway: the code asked for it.
  The rule is :func:`lifesigns._runmode.quiet_reason`, shared with the drain.

Every connection has a 5 s socket timeout and at most ``max_connections`` are served at
once (further ones are closed at once): a flood of probes cannot pile up threads. A client
that goes away mid-answer (``BrokenPipeError``, ``ConnectionResetError``) is logged at
DEBUG, never as a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ._runmode import LIFESPAN_SCOPE, quiet_reason
from .router import Answer, FrozenFor, ProbeRouter

__all__ = ["LIFESPAN_SCOPE", "SidePort", "quiet_reason"]

logger = logging.getLogger("lifesigns.sideport")

_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


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

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is ordinary; anything else is logged once, briefly."""
        error = sys.exc_info()[1]
        if isinstance(error, _GONE):
            logger.debug("side port client %s went away: %r", client_address, error)
            return
        logger.warning("side port failed to serve %s: %r", client_address, error, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5.0
    server_version = "lifesigns"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_POST(self) -> None:
        self._answer(body=True)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: probes arrive every few seconds."""

    def _answer(self, *, body: bool) -> None:
        parts = urlsplit(self.path)
        try:
            reply = self.server.side.router.handle(
                self.command, parts.path, parts.query, self.headers.items()
            )
        except Exception as exc:  # a bug here must not kill liveness for good
            logger.warning("side port answer failed: %r", exc, exc_info=True)
            reply = Answer(500, (("Content-Type", "text/plain; charset=utf-8"),), b"error\n")
        try:
            self.send_response(reply.status)
            for key, value in reply.headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if body:
                self.wfile.write(reply.body)
        except _GONE as gone:
            logger.debug("side port client went away before its answer: %r", gone)
            self.close_connection = True


class SidePort:
    """The out-of-band HTTP server: a lifesigns component (``name = "side-port"``).

    ``explicit`` says the port was given in code (it binds under tests and reloaders
    too); ``frozen_for`` tells at once that the loop is frozen (found among
    ``components`` at start when not given: the loop layer's).
    """

    name = "side-port"

    def __init__(
        self,
        router: ProbeRouter,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        explicit: bool = True,
        frozen_for: FrozenFor | None = None,
        components: Callable[[], Iterable[object]] | None = None,
        max_connections: int = 16,
    ) -> None:
        self.router = router
        self.host = host
        self.requested_port = port
        self.explicit = explicit
        self.frozen_for = frozen_for
        self.components = components
        self.max_connections = max_connections
        self.skipped: str | None = None
        """Why the port was not bound at the last start (``None`` when it was)."""
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"SidePort(host={self.host!r}, port={self.port or self.requested_port!r})"

    @property
    def port(self) -> int | None:
        """The port actually bound (``None`` until started, or when not bound)."""
        return None if self._server is None else int(self._server.server_address[1])

    async def start(self) -> None:
        """Bind and serve in a daemon thread; never raises for a port it cannot bind."""
        if self._server is not None:
            return
        self.skipped = None
        quiet = None if self.explicit else quiet_reason(LIFESPAN_SCOPE.get())
        if quiet is not None:
            self.skipped = quiet
            logger.info(
                "lifesigns side port not bound: %s (LIFESIGNS_SIDE_PORT=%s comes from the "
                "environment; pass side_port= in code to bind it anyway)",
                quiet,
                self.requested_port,
            )
            return
        try:
            server = _Server((self.host, self.requested_port), self)
        except OSError as error:
            self.skipped = str(error)
            self._log_bind_failure(error)
            return
        self.router.bridge.bind(asyncio.get_running_loop(), self._find_frozen_for())
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="lifesigns-side-port",
            daemon=True,
        )
        self._thread.start()
        logger.info(
            "lifesigns side port listening on http://%s:%d (worker pid %d)",
            self.host,
            self.port,
            os.getpid(),
        )

    def _log_bind_failure(self, error: OSError) -> None:
        where = f"{self.host}:{self.requested_port}"
        if error.errno == errno.EADDRINUSE:
            # One line per worker that lost the race: ordinary with several workers.
            several = multiprocessing.parent_process() is not None
            logger.log(
                logging.INFO if several else logging.WARNING,
                "lifesigns side port %s is taken (another worker or process serves it); "
                "this worker (pid %d) answers probes on the application port only. For one "
                "side port serving every worker, run the server under `lifesigns run`",
                where,
                os.getpid(),
            )
            return
        logger.error(
            "lifesigns side port %s cannot be bound: %s; probes are served on the "
            "application port only (check side_host / side_port)",
            where,
            error,
        )

    def _find_frozen_for(self) -> FrozenFor | None:
        if self.frozen_for is not None:
            return self.frozen_for
        for component in self.components() if self.components else ():
            found = getattr(component, "frozen_for", None)
            if callable(found) and component is not self:
                return found  # type: ignore[no-any-return]
        return None

    async def stop(self) -> None:
        """Stop serving and close the socket (waits at most about two seconds)."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is None:
            return
        self.router.bridge.bind(None, None)
        try:
            await asyncio.wait_for(asyncio.to_thread(server.shutdown), timeout=2.0)
        except TimeoutError:
            logger.debug("side port: the serving thread did not stop within 2 s; closing anyway")
        server.server_close()
        if thread is not None:
            await asyncio.to_thread(thread.join, 1.0)
