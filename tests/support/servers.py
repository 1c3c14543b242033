"""Real uvicorn servers in subprocesses, driven over HTTP.

A :class:`UvicornProcess` runs ``python -m uvicorn`` from the repository root (so
``tests.apps.<module>:app`` imports), on ``127.0.0.1`` at a free port, with its output in
a log file that tests can read and wait on. It runs in its own process group, and
:meth:`UvicornProcess.terminate` ends the whole group, so nothing outlives a test.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import httpx

__all__ = ["REPO_ROOT", "StartUvicorn", "UvicornProcess", "free_port"]

#: The repository root: the working directory of servers, and on their ``PYTHONPATH``.
REPO_ROOT = Path(__file__).resolve().parents[2]

_POLL_INTERVAL = 0.05


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now.

    The kernel picks it by binding to port 0; another process could take it before
    the caller binds, which on a test machine is rare enough to accept.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class UvicornProcess:
    """``python -m uvicorn <app>`` in a subprocess, on ``127.0.0.1`` at a free port.

    ``env`` is added to (and overrides) the test process's environment. ``log_path``
    receives stdout and stderr; by default a new file in the temporary directory is
    used and kept for post-mortems. Use as a context manager, or call :meth:`start`
    and finally :meth:`terminate`.
    """

    def __init__(
        self,
        app: str,
        *,
        env: Mapping[str, str] | None = None,
        factory: bool = False,
        access_log: bool = False,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        self.app = app
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.log_path = log_path or Path(
            tempfile.mkstemp(prefix="lifesigns-uvicorn-", suffix=".log")[1]
        )
        self._env = dict(env or {})
        self._args = [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            *(["--factory"] if factory else []),
            "--host",
            self.host,
            "--port",
            str(self.port),
            *([] if access_log else ["--no-access-log"]),
            *extra_args,
        ]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server, without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the uvicorn (main) process."""
        return self._started().pid

    @property
    def returncode(self) -> int | None:
        """Exit code once the process has ended, else ``None``."""
        return self._started().poll()

    def start(self) -> None:
        """Start the subprocess; does not wait for it to serve (see :meth:`wait_ready`)."""
        if self._process is not None:
            raise RuntimeError("a UvicornProcess starts once")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self._env}
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(REPO_ROOT), env.get("PYTHONPATH")) if part
        )
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._args,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: terminate() reaches workers too
            )

    def wait_ready(self, path: str = "/livez", timeout: float = 20.0) -> httpx.Response:
        """Poll ``path`` until the server answers with any status, and return that answer.

        A 503 counts: the server is up, whatever it says about itself. Raises
        :class:`RuntimeError` with the log tail if the process exits first, and
        :class:`TimeoutError` if no answer comes within ``timeout`` seconds.
        """
        process = self._started()
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"uvicorn exited with {process.returncode} before answering "
                        f"{path}\n{self._log_tail()}"
                    )
                try:
                    return client.get(path)
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"uvicorn did not answer {path} within {timeout}s\n{self._log_tail()}"
                    )
                time.sleep(_POLL_INTERVAL)

    def log_text(self) -> str:
        """Return everything the server wrote so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float = 10.0) -> re.Match[str]:
        """Poll the log until ``pattern`` (a regex, searched multiline) matches.

        Raises :class:`TimeoutError` with the log tail after ``timeout`` seconds, or
        :class:`RuntimeError` as soon as the process has exited without a match.
        """
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        process = self._started()
        deadline = time.monotonic() + timeout
        while True:
            exited = process.poll() is not None  # checked before reading: no lost lines
            match = regex.search(self.log_text())
            if match:
                return match
            if exited:
                raise RuntimeError(
                    f"uvicorn exited with {process.returncode} and never logged "
                    f"{regex.pattern!r}\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{regex.pattern!r} not in the log after {timeout}s\n{self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the uvicorn process (not to its whole group)."""
        self._started().send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit by itself and return its exit code.

        Raises :class:`TimeoutError` (the process keeps running) after ``timeout`` seconds.
        """
        try:
            return self._started().wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"uvicorn still runs after {timeout}s\n{self._log_tail()}") from None

    def terminate(self, timeout: float = 15.0) -> int:
        """Stop the server and return its exit code. Safe to call more than once.

        Sends SIGTERM (uvicorn's graceful shutdown) and waits up to ``timeout`` seconds,
        then SIGKILLs. Either way, whatever is left of its process group is killed.
        After a graceful shutdown uvicorn re-raises the signal it caught, so a clean
        stop returns ``-signal.SIGTERM``.
        """
        process = self._started()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                process.wait(timeout)
        self._kill_group()  # workers or children the app started
        return process.returncode

    def kill(self) -> int:
        """SIGKILL the process group at once and return the exit code."""
        process = self._started()
        self._kill_group()
        return process.wait(timeout=15.0)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self.terminate()

    def __repr__(self) -> str:
        returncode = self._process.poll() if self._process else None
        return f"<UvicornProcess {self.app} at {self.url} returncode={returncode}>"

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the UvicornProcess was not started")
        return self._process

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(self._started().pid, signal.SIGKILL)

    def _log_tail(self, lines: int = 40) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- {self.log_path} (last {lines} lines) ---\n{tail or '(empty)'}"


class StartUvicorn(Protocol):
    """The ``uvicorn_process`` fixture: starts a server and waits until it answers."""

    def __call__(
        self,
        app_spec: str,
        env: Mapping[str, str] | None = None,
        factory: bool = False,
        ready_path: str | None = "/livez",
        extra_args: Sequence[str] = (),
        *,
        access_log: bool = False,
    ) -> UvicornProcess: ...
