"""``lifesigns run -- <server>`` in a subprocess, for the agent's tests.

An :class:`AgentRun` starts ``python -m lifesigns run`` from the repository root, with
the agent's and the server's output in one log file. :meth:`AgentRun.close` ends the agent
(SIGTERM, then SIGKILL) and then every process it left (the server's group, the workers
it listed), so nothing outlives a test.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from tests.support.servers import REPO_ROOT, free_port

TOKEN = "agent-test-token-0123456789"
APP = "tests.apps.agent_service:app"
APP_FILE = REPO_ROOT / "tests" / "apps" / "agent_service.py"


def marker_line(marker: str) -> int:
    """The line of ``agent_service.py`` that carries ``# stall: <marker>``."""
    for number, line in enumerate(APP_FILE.read_text().splitlines(), 1):
        if line.rstrip().endswith(f"# stall: {marker}"):
            return number
    raise LookupError(marker)


def uvicorn(port: int, workers: int = 2) -> list[str]:
    """A uvicorn command for the test app."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        APP,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
    ]


def gunicorn(port: int, workers: int = 2) -> list[str]:
    """A gunicorn command with uvicorn workers for the test app."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-w",
        str(workers),
        "-k",
        "uvicorn_worker.UvicornWorker",
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "10",
        APP,
    ]


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[-1].split()[0] != b"Z"


def poll(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Call ``predicate`` until it returns something true; ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:g} s")
        time.sleep(every)


class AgentRun:
    """``lifesigns run <options> -- <server>`` in a subprocess; see the module docstring."""

    def __init__(
        self,
        server: Callable[[int], list[str]] = uvicorn,
        *,
        options: Sequence[str] = (),
        env: dict[str, str] | None = None,
        python: Sequence[str] | None = None,
    ) -> None:
        self.app_port = free_port()
        self.side_port = free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="lifesigns-agent-", suffix=".log")[1])
        self.incident_dir = Path(tempfile.mkdtemp(prefix="lifesigns-incidents-"))
        self.command = [
            *(python or [sys.executable, "-m", "lifesigns"]),
            "run",
            "--port",
            str(self.side_port),
            "--incident-dir",
            str(self.incident_dir),
            *options,
            "--",
            *server(self.app_port),
        ]
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO_ROOT),
            "LIFESIGNS_TOKEN": TOKEN,
            "LIFESIGNS_DRAIN_DELAY": "0.2",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.seen_pids: set[int] = set()

    @property
    def side(self) -> str:
        """The agent's side port URL."""
        return f"http://127.0.0.1:{self.side_port}"

    @property
    def app(self) -> str:
        """The server's URL."""
        return f"http://127.0.0.1:{self.app_port}"

    def start(self, workers: int = 2, timeout: float = 40.0) -> Self:
        """Start, and wait until ``workers`` workers are listed and ready."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        poll(
            lambda: self._exited() or len(self.ready_workers()) >= workers,
            timeout,
            f"{workers} ready workers on the agent's side port\n{self.tail()}",
        )
        if self._exited():
            raise RuntimeError(f"the agent exited with {self.process.returncode}\n{self.tail()}")
        return self

    def _exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def get(self, path: str, *, token: bool = True, timeout: float = 5.0) -> httpx.Response:
        """GET ``path`` on the side port (with the token by default)."""
        headers = {"Authorization": f"Bearer {TOKEN}"} if token else {}
        return httpx.get(self.side + path, headers=headers, timeout=timeout)

    def workers(self) -> list[dict[str, Any]]:
        """``/debug/workers`` (empty while the side port does not answer)."""
        try:
            listed: list[dict[str, Any]] = self.get("/debug/workers", timeout=2).json()["workers"]
        except (httpx.HTTPError, ValueError, KeyError):
            return []
        self.seen_pids.update(w["pid"] for w in listed)
        return listed

    def ready_workers(self) -> list[dict[str, Any]]:
        """Workers whose phase is ready."""
        return [w for w in self.workers() if w["ready"] and w["phase"] == "ready"]

    def log(self) -> str:
        """Everything the agent and the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        """The log's last lines, for failure messages."""
        text = "\n".join(self.log().splitlines()[-lines:])
        return f"--- {self.log_path} ---\n{text}"

    def wait_for_log(self, pattern: str, timeout: float, since: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` (a multiline regex) is in the log after offset ``since``."""
        regex = re.compile(pattern, re.MULTILINE)
        try:
            match: re.Match[str] = poll(lambda: regex.search(self.log(), since), timeout, pattern)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.tail()}") from None
        return match

    def server_pid(self) -> int:
        """The server's pid, from the agent's first log line."""
        found = re.search(r"for server pid (\d+)", self.log())
        assert found, self.tail()
        return int(found.group(1))

    def close(self) -> int | None:
        """Stop the agent and everything it started; its return code."""
        process = self.process
        if process is None:
            return None
        server = None
        with contextlib.suppress(AssertionError):
            server = self.server_pid()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        for group in (process.pid, server):
            if group is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)
        for pid in self.seen_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.incident_dir, ignore_errors=True)  # the log file stays
        return process.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ProbePoller:
    """Polls a URL every ``every`` seconds from a thread; keeps each answer's status and time."""

    def __init__(self, url: str, every: float = 0.1, timeout: float = 2.0) -> None:
        self.url = url
        self.every = every
        self.timeout = timeout
        self.results: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                began = time.perf_counter()
                try:
                    status = client.get(self.url).status_code
                except httpx.HTTPError:
                    status = 0
                self.results.append((status, time.perf_counter() - began))
                self._stop.wait(max(0.0, self.every - (time.perf_counter() - began)))

    def p99(self) -> float:
        """The 99th percentile latency in seconds."""
        times = sorted(t for _, t in self.results)
        return times[min(len(times) - 1, int(len(times) * 0.99))]


_CONTROL = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Answer(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"ok\\n")

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Answer).serve_forever()
"""


class ControlServer:
    """The simplest threaded HTTP server, in its own process: what this machine allows now.

    Polled beside the agent's side port, it tells a slow agent from a loaded machine.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CONTROL, str(self.port)], stdin=subprocess.DEVNULL
        )
        poll(self._answers, 10, "the control server answering")

    @property
    def url(self) -> str:
        """Its URL."""
        return f"http://127.0.0.1:{self.port}/"

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait(10)
