"""The agent's side port: one per container, for every worker, served by the agent.

Routing (:func:`route`: method, target, headers -> status, headers, body) is apart from the
socket code (:class:`SidePortServer`, a standard library ``ThreadingHTTPServer`` on the
agent's own threads), so that the shared probe router can take its place.

* ``/livez``: fails only when the service cannot serve (see
  :meth:`~lifesigns.agent.monitor.Monitor.liveness`); ``?verbose`` lists every worker.
* ``/readyz``: ready when at least ``min_ready`` workers (default all) are ready.
* ``/metrics``: every worker's metrics labelled ``worker="<slot>"``, and the agent's own
  (:mod:`~lifesigns.agent.metrics`).
* ``/debug/``, ``/debug/workers``, ``/debug/stalls?worker=N``, ``/debug/published?worker=N``
  (what the worker last published), ``/debug/threads?worker=N`` (sampled live with py-spy,
  one at a time), ``/debug/incidents``: with the bearer token (``LIFESIGNS_TOKEN``) only.

Every connection has a 5 s socket timeout and at most ``max_connections`` are served at
once (further ones are closed at once): a probe flood cannot pile up threads.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .._secrets import SecretRedactor, tokens_match
from . import metrics
from .incidents import IncidentWriter
from .monitor import Monitor

logger = logging.getLogger("lifesigns.agent")

Answer = tuple[int, dict[str, str], bytes]

_TEXT = {"Content-Type": "text/plain; charset=utf-8"}
_JSON = {"Content-Type": "application/json"}
_DUMPS = ("incidents", "published", "stalls", "threads", "workers")


class AgentRouter:
    """Answers the side port's requests from the monitor's state; no socket here."""

    def __init__(
        self,
        monitor: Monitor,
        *,
        token: str | None,
        incidents: IncidentWriter | None = None,
        redactor: SecretRedactor | None = None,
    ) -> None:
        self.monitor = monitor
        self.token = token
        self.incidents = incidents
        self.redactor = redactor or SecretRedactor([token] if token else [])

    def authorized(self, headers: Mapping[str, str]) -> bool:
        """Whether the ``Authorization`` header carries the bearer token."""
        value = headers.get("authorization") or headers.get("Authorization") or ""
        if not value.lower().startswith("bearer "):
            return False
        return tokens_match(value[7:].strip(), self.token)

    def route(self, method: str, target: str, headers: Mapping[str, str]) -> Answer:
        """Answer one request: status, headers, body."""
        if method not in ("GET", "HEAD"):
            return 405, {**_TEXT, "Allow": "GET, HEAD"}, b"only GET and HEAD\n"
        parts = urlsplit(target)
        params = parse_qs(parts.query, keep_blank_values=True)
        path = parts.path.rstrip("/") or "/"
        if path == "/livez":
            return self._livez("verbose" in params, self.authorized(headers))
        if path == "/readyz":
            return self._readyz("verbose" in params)
        if path == "/metrics":
            return self._metrics()
        if path == "/debug" or path.startswith("/debug/"):
            if not self.authorized(headers):
                return (
                    401,
                    {**_TEXT, "WWW-Authenticate": 'Bearer realm="lifesigns"'},
                    b"dumps need the bearer token (Authorization: Bearer ...)\n",
                )
            return self._debug(path.removeprefix("/debug").strip("/"), params)
        return 404, _TEXT, b"not found; try /livez, /readyz or /debug/\n"

    def _livez(self, verbose: bool, detailed: bool) -> Answer:
        alive, reasons = self.monitor.liveness()
        lines = [f"[-]{reason}" for reason in reasons]
        if verbose:
            for w in self.monitor.workers():
                state = "ok"
                if w["stall"] is not None:
                    state = f"stalled {w['heartbeat_age_s']:.1f} s"
                    if detailed:
                        state += f": {w['stall']['headline']}"
                lines.append(
                    f"[{'+' if w['stall'] is None else '-'}]worker {w['slot']} pid {w['pid']} "
                    f"{w['phase']} heartbeat {w['heartbeat_age_s']:.3f} s ago {state}"
                )
        lines.append("livez check passed" if alive else "livez check failed")
        body = self.redactor.redact("\n".join(lines) + "\n").encode()
        return (200 if alive else 503), _TEXT, body

    def _readyz(self, verbose: bool) -> Answer:
        ready, reason = self.monitor.readiness()
        lines = [f"[{'+' if ready else '-'}]{reason}"] if verbose or not ready else []
        if verbose:
            for w in self.monitor.workers():
                mark = "+" if w["ready"] else "-"
                lines.append(f"[{mark}]worker {w['slot']} pid {w['pid']} {w['phase']}")
        lines.append("readyz check passed" if ready else "readyz check failed")
        return (200 if ready else 503), _TEXT, ("\n".join(lines) + "\n").encode()

    def _metrics(self) -> Answer:
        m = self.monitor
        workers = m.workers()
        own = "".join(
            [
                metrics.family(
                    "lifesigns_agent_workers",
                    "gauge",
                    "Workers holding a heartbeat slot.",
                    [("", len(workers))],
                ),
                metrics.family(
                    "lifesigns_agent_heartbeat_age_seconds",
                    "gauge",
                    "Seconds since each worker's event loop last beat, read by the agent.",
                    [(f'worker="{w["slot"]}"', w["heartbeat_age_s"]) for w in workers],
                ),
                metrics.family(
                    "lifesigns_agent_stalls_total",
                    "counter",
                    "Stalls the agent saw, by worker slot.",
                    [(f'worker="{slot}"', n) for slot, n in sorted(m.stall_counts.items())],
                ),
                metrics.family(
                    "lifesigns_agent_incidents_total",
                    "counter",
                    "Incident files written.",
                    [("", m.incident_count)],
                ),
                metrics.family(
                    "lifesigns_agent_restarts_total",
                    "counter",
                    "Frozen workers replaced.",
                    [("", m.restarts)],
                ),
            ]
        )
        published = metrics.read_published(m.runtime_dir, [w["slot"] for w in workers])
        text = self.redactor.redact(metrics.merge(published, own))
        return 200, {"Content-Type": metrics.CONTENT_TYPE}, text.encode()

    def _debug(self, name: str, params: dict[str, list[str]]) -> Answer:
        slot = None
        if "worker" in params:
            raw = params["worker"][0]
            if not raw.isdigit():
                return (
                    400,
                    _TEXT,
                    f"worker={raw!r} is not a slot number; see /debug/workers\n".encode(),
                )
            slot = int(raw)
        data: Any
        if name == "":
            data = {"dumps": list(_DUMPS)}
        elif name == "workers":
            data = {"workers": self.monitor.workers(), "restarts": self.monitor.restarts}
        elif name == "stalls":
            data = self.monitor.stalls(slot)
        elif name == "published":
            if slot is None:
                return 400, _TEXT, b"published needs ?worker=N (a slot number)\n"
            data = self.monitor.published(slot)
            if data is None:
                return 404, _TEXT, f"worker {slot} has published nothing\n".encode()
        elif name == "threads":
            if slot is None:
                return 400, _TEXT, b"threads needs ?worker=N (a slot number)\n"
            data = self.monitor.sample_live(slot)
            if data is None:
                return 404, _TEXT, f"no worker in slot {slot}\n".encode()
        elif name == "incidents":
            data = {"incidents": self.incidents.recent() if self.incidents else []}
        else:
            return (
                404,
                _TEXT,
                f"no dump {name!r}; dumps: {', '.join(_DUMPS)}\n".encode(),
            )
        text = self.redactor.redact(json.dumps(data, indent=2, default=str))
        return 200, _JSON, (text + "\n").encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], router: AgentRouter, limit: int) -> None:
        self.router = router
        self.slots = threading.BoundedSemaphore(limit)
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
    server_version = "lifesigns-agent"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: probes arrive every few seconds."""

    def _answer(self, *, body: bool) -> None:
        try:
            status, headers, data = self.server.router.route(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}
            )
        except Exception as exc:  # a bug here must not kill liveness for good
            logger.exception("the side port failed to answer %s", self.path)
            status, headers, data = 500, dict(_TEXT), f"{type(exc).__name__}\n".encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(data)


class SidePortServer:
    """Serves an :class:`AgentRouter` on ``host:port`` from a daemon thread."""

    def __init__(self, router: AgentRouter, host: str, port: int, *, max_connections: int = 16):
        self.router = router
        self.host = host
        self.requested_port = port
        self.max_connections = max_connections
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"SidePortServer(host={self.host!r}, port={self.port or self.requested_port!r})"

    @property
    def port(self) -> int | None:
        """The port bound (``None`` before :meth:`start`)."""
        return None if self._server is None else int(self._server.server_address[1])

    def bind(self) -> None:
        """Bind the socket (no thread yet); raises ``OSError`` if the port is taken."""
        if self._server is None:
            self._server = _Server(
                (self.host, self.requested_port), self.router, self.max_connections
            )

    def start(self) -> None:
        """Bind if not done yet, and serve from a daemon thread."""
        self.bind()
        assert self._server is not None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="lifesigns-agent-side-port",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket (about a second at most)."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is not None:
            if thread is not None:  # shutdown() waits for serve_forever: only if it runs
                server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(1.0)
