"""Stacks of another process, from outside, with py-spy.

The agent is the workers' ancestor, so it may read their memory under Yama's default
``ptrace_scope=1``; py-spy (a dependency, a binary in its wheel) reads every thread's
Python stack in tens of milliseconds without stopping the process (``--nonblocking``)
and says which thread holds the GIL, even while C code holds it. ``--native`` adds the
C frames (a regular expression's ``sre`` loop, a C extension) at a few times the cost.

Every run has a timeout; a failure (no py-spy, ptrace forbidden, the process gone) is a
:class:`Sample` with ``error`` set, never an exception.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._frames import FrameClassifier, inferred_app_packages
from .._frames import short_path as _short_path

__all__ = ["Frame", "Sample", "ThreadStack", "is_application_frame", "py_spy", "sample"]

_classifier: FrameClassifier | None = None


def use_classifier(classifier: FrameClassifier) -> None:
    """Judge frames with ``classifier`` from now on (the agent builds one for its server)."""
    global _classifier
    _classifier = classifier
    is_application_frame.cache_clear()


def classifier_for(command: Sequence[str]) -> FrameClassifier:
    """The shared classifier, told which package ``command`` serves (``uvicorn app.main:app``).

    The agent's own ``__main__`` is not the server's, so it is left out.
    """
    return FrameClassifier(inferred=inferred_app_packages(command, main=object()))


@functools.lru_cache(maxsize=4096)
def is_application_frame(filename: str) -> bool:
    """Whether a frame's file is the application's own code.

    :mod:`lifesigns._frames` decides (not site-packages, the standard library, lifesigns,
    launchers or CLI frameworks; ``LIFESIGNS_APP_PACKAGES`` when set); native libraries
    and pseudo-files never are. Cached: a sample has hundreds of frames, and the agent's
    side port wants the GIL meanwhile.
    """
    if not filename or filename.startswith("<") or not filename.endswith(".py"):
        return False
    global _classifier
    if _classifier is None:
        _classifier = FrameClassifier(inferred=())
    return _classifier.is_app(filename)


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: function, file, line, and whether it is the application's."""

    function: str
    filename: str
    line: int
    app: bool
    native: bool = False

    @property
    def site(self) -> str:
        """``app/reports.py:88 in build``, with the path shortened to the working directory."""
        return f"{short_path(self.filename)}:{self.line} in {self.function}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "function": self.function,
            "file": short_path(self.filename),
            "line": self.line,
            "app": self.app,
            **({"native": True} if self.native else {}),
        }


@dataclass(frozen=True, slots=True)
class ThreadStack:
    """One thread of a sample; ``frames`` innermost first."""

    native_id: int
    name: str
    active: bool
    owns_gil: bool
    frames: tuple[Frame, ...]

    @property
    def top_app_frame(self) -> Frame | None:
        """The innermost frame of the application's code."""
        return next((f for f in self.frames if f.app), None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "native_id": self.native_id,
            "name": self.name,
            "active": self.active,
            "owns_gil": self.owns_gil,
            "frames": [f.as_dict() for f in self.frames],
        }


@dataclass(frozen=True, slots=True)
class Sample:
    """All threads of one process at one moment (or why there are none)."""

    pid: int
    taken_ns: int
    duration: float
    threads: tuple[ThreadStack, ...] = ()
    native: bool = False
    error: str | None = None
    tool: str = "py-spy"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gil_holder(self) -> ThreadStack | None:
        """The thread holding the GIL when sampled, if any."""
        return next((t for t in self.threads if t.owns_gil), None)

    @property
    def main(self) -> ThreadStack | None:
        """The process's first thread (where uvicorn and gunicorn run the event loop)."""
        for thread in self.threads:
            if thread.native_id == self.pid:
                return thread
        return next((t for t in self.threads if t.name == "MainThread"), None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "pid": self.pid,
            "tool": self.tool,
            "native": self.native,
            "duration_ms": round(self.duration * 1000, 1),
            "error": self.error,
            "threads": [t.as_dict() for t in self.threads],
        }


@functools.lru_cache(maxsize=4096)
def short_path(filename: str) -> str:
    """The path as :mod:`lifesigns._frames` prints it (cached)."""
    return _short_path(filename)


@functools.cache
def py_spy() -> str | None:
    """The py-spy executable: beside this interpreter (its wheel's script), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


@functools.cache
def _supports_json(binary: str) -> bool:
    try:
        helped = subprocess.run(
            [binary, "dump", "--help"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--json" in helped.stdout


def sample(pid: int, *, native: bool = False, timeout: float = 2.0) -> Sample:
    """Every thread's stack in ``pid``, within ``timeout`` seconds.

    Without pausing it; with ``native`` the C frames too, for which py-spy pauses the
    process while it reads (tens of milliseconds).
    """
    began = time.monotonic()
    taken = time.monotonic_ns()
    binary = py_spy()
    if binary is None:
        return Sample(pid, taken, 0.0, error="py-spy is not installed", native=native)
    as_json = _supports_json(binary)
    # py-spy reads native stacks only with the process paused (a few tens of ms).
    command = [binary, "dump", "--pid", str(pid), "--native" if native else "--nonblocking"]
    command += ["--json"] if as_json else []
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Sample(
            pid,
            taken,
            time.monotonic() - began,
            native=native,
            error=f"timed out after {timeout:g} s",
        )
    except OSError as exc:
        return Sample(pid, taken, time.monotonic() - began, native=native, error=str(exc))
    duration = time.monotonic() - began
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        return Sample(
            pid, taken, duration, native=native, error=reason[-1] if reason else "py-spy failed"
        )
    try:
        threads = _from_json(done.stdout) if as_json else _from_text(done.stdout)
    except (ValueError, KeyError, TypeError) as exc:
        return Sample(pid, taken, duration, native=native, error=f"unreadable py-spy output: {exc}")
    return Sample(pid, taken, duration, threads=threads, native=native)


def _from_json(text: str) -> tuple[ThreadStack, ...]:
    threads = []
    for entry in json.loads(text):
        frames = []
        for raw in entry.get("frames") or ():
            filename = str(raw.get("filename") or "")
            is_native = raw.get("module") is not None or not filename.endswith(".py")
            frames.append(
                Frame(
                    function=str(raw.get("name") or "?"),
                    filename=filename,
                    line=int(raw.get("line") or 0),
                    app=not is_native and is_application_frame(filename),
                    native=is_native,
                )
            )
        threads.append(
            ThreadStack(
                native_id=int(entry.get("os_thread_id") or 0),
                name=str(entry.get("thread_name") or ""),
                active=bool(entry.get("active")),
                owns_gil=bool(entry.get("owns_gil")),
                frames=tuple(frames),
            )
        )
    return tuple(threads)


_THREAD = re.compile(r'^Thread (0x[0-9A-Fa-f]+|\d+) \(([^)]*)\)(?:: "(.*)")?')
_FRAME = re.compile(r"^\s+(.*) \((.*):(\d+)\)$")


def _from_text(text: str) -> tuple[ThreadStack, ...]:
    """The text ``py-spy dump`` prints (for versions without ``--json``)."""
    threads: list[ThreadStack] = []
    current: dict[str, Any] | None = None
    frames: list[Frame] = []

    def close() -> None:
        if current is not None:
            threads.append(ThreadStack(frames=tuple(frames), **current))

    for line in text.splitlines():
        head = _THREAD.match(line)
        if head:
            close()
            ident, state, name = head.groups()
            current = {
                "native_id": int(ident, 0),
                "name": name or "",
                "active": state.startswith("active"),
                "owns_gil": "gil" in state,
            }
            frames = []
            continue
        frame = _FRAME.match(line)
        if frame and current is not None:
            function, filename, number = frame.groups()
            frames.append(Frame(function, filename, int(number), is_application_frame(filename)))
    close()
    return tuple(threads)
