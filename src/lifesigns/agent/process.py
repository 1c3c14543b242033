"""The server as the agent's child: its signals, its exit status, and no orphans.

The server runs in its own process group, so that a terminal's Ctrl-C reaches it once
(through the agent) rather than twice; SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2,
SIGTTIN and SIGTTOU sent to the agent are passed on, so drains and reloads work as they
would without it. The child asks the kernel to SIGKILL it if the agent dies (even by
SIGKILL); its workers ask the same of it (:mod:`~lifesigns.agent.worker`). When the server
exits, whatever is left of its process group is killed, and the agent exits as it did.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from types import FrameType

from . import _linux

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGTTIN,
    signal.SIGTTOU,
)


class ServerProcess:
    """``command`` run as a child with ``env``; see the module docstring."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str]) -> None:
        if not command:
            raise ValueError("no server command given; put it after --, e.g. -- uvicorn app:app")
        self.command = list(command)
        self.env = dict(env)
        self._process: subprocess.Popen[bytes] | None = None
        self._pending: list[int] = []

    def __repr__(self) -> str:
        return f"<ServerProcess {self.command!r} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        """The server's pid once started."""
        return None if self._process is None else self._process.pid

    def install_forwarding(self) -> None:
        """Pass the agent's signals on (call before :meth:`start`: none is lost)."""
        for sig in FORWARDED:
            signal.signal(sig, self._forward)

    def _forward(self, sig: int, frame: FrameType | None) -> None:
        if self._process is None:
            self._pending.append(sig)
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(sig)

    def start(self) -> None:
        """Start the server. Raises ``OSError`` (``FileNotFoundError``...) if it cannot run."""
        parent = os.getpid()
        _linux.preload()

        def in_child() -> None:  # between fork and exec: no locks, no allocation to speak of
            _linux.die_with_parent()
            if os.getppid() != parent:  # the agent died before the line above
                os._exit(1)

        self._process = subprocess.Popen(
            self.command, env=self.env, preexec_fn=in_child, process_group=0
        )
        for sig in self._pending:
            self._forward(sig, None)
        self._pending.clear()

    def wait(self) -> int:
        """Wait for the server to exit; its return code (negative: killed by that signal)."""
        assert self._process is not None
        return self._process.wait()

    def kill_leftovers(self) -> None:
        """SIGKILL whatever is left in the server's process group."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)


def exit_like(returncode: int) -> int:
    """End this process as the server ended: by the same signal, or with the same code."""
    if returncode < 0:
        sig = -returncode
        with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP have no handler
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig  # only reached for signals whose default is to ignore
    return returncode
