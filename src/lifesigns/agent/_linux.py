"""The few Linux calls the agent and its workers need, through ctypes (standard library)."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys

_PR_SET_PDEATHSIG = 1

_libc: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            return None
    return _libc


def preload() -> None:
    """Load libc now, so that a ``preexec_fn`` after ``fork`` need not (it may not lock)."""
    _load()


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits.

    ``prctl(PR_SET_PDEATHSIG)``; returns whether it took effect (False off Linux). The
    signal follows the parent *thread* that forked this process: uvicorn and gunicorn
    start their workers from their main threads, which live as long as they do.
    """
    libc = _load()
    if libc is None:
        return False
    return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
