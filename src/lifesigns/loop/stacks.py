"""Cheap stack capture of a thread (the loop's, a worker's): classified frames.

Capturing walks ``f_back`` and copies three attributes per frame plus a cached
classification; it reads no source and keeps no frame (frames pin their locals and can
make cycles). Everything costly, reading source lines and shortening paths, happens
later in :func:`describe_stack` and :func:`call_at` on a thread that is allowed to be slow.

Frames, their kinds and their short paths are :mod:`lifesigns._frames`'.
"""

from __future__ import annotations

import linecache
import re
import sys
from collections.abc import Iterable
from types import CodeType, FrameType
from typing import NamedTuple

from .._frames import Frame, FrameClassifier, FrameKind, default_classifier, short_path

__all__ = [
    "MAX_DEPTH",
    "Blocker",
    "Frame",
    "Stack",
    "all_stacks",
    "capture",
    "first_app_frame",
    "is_library",
    "short_path",
    "signature",
    "thread_stack",
]

_APPLICATION = FrameKind.APPLICATION

MAX_DEPTH = 128
"""Deepest stack captured; deeper frames (towards the thread's start) are dropped."""


Stack = tuple[Frame, ...]
"""A captured stack, innermost frame first."""


class Blocker(NamedTuple):
    """Where the innermost application frame was executing: enough to name its call later."""

    code: CodeType
    lasti: int


def is_library(filename: str, classifier: FrameClassifier | None = None) -> bool:
    """Whether ``filename`` is not the application's own code (see :mod:`lifesigns._frames`)."""
    return not (classifier or default_classifier()).is_app(filename)


def capture(
    frame: FrameType | None,
    limit: int = MAX_DEPTH,
    classifier: FrameClassifier | None = None,
) -> tuple[Stack, Blocker | None]:
    """The stack from ``frame`` outwards, innermost first, and where its first app frame stood.

    Safe to call on another thread's frame in a GIL build; holds no reference to any
    frame once it returns. Costs a dictionary lookup per frame to classify it.
    """
    classifier = classifier or default_classifier()
    kinds = classifier.kinds
    kind_of = classifier.kind
    frames: list[Frame] = []
    blocker: Blocker | None = None
    while frame is not None and len(frames) < limit:
        code = frame.f_code
        filename = code.co_filename
        kind = kinds.get(filename) or kind_of(filename)
        if blocker is None and kind is _APPLICATION:
            blocker = Blocker(code, frame.f_lasti)
        frames.append(Frame(filename, frame.f_lineno or 0, code.co_name, kind))
        frame = frame.f_back
    del frame
    return tuple(frames), blocker


def _frames_readable() -> bool:
    # Free-threaded builds: reading another thread's frame is a use-after-free
    # (python/cpython#152355). Degrade to no stacks there.
    gil_enabled = getattr(sys, "_is_gil_enabled", None)
    return gil_enabled is None or bool(gil_enabled())


def thread_stack(
    thread_id: int, limit: int = MAX_DEPTH, classifier: FrameClassifier | None = None
) -> tuple[Stack, Blocker | None]:
    """The current stack of thread ``thread_id`` (empty when unknown or unreadable)."""
    if not _frames_readable():
        return (), None
    frame = sys._current_frames().get(thread_id)
    try:
        return capture(frame, limit, classifier)
    finally:
        del frame


def all_stacks(
    limit: int = MAX_DEPTH, classifier: FrameClassifier | None = None
) -> dict[int, Stack]:
    """Every thread's current stack, by thread id."""
    if not _frames_readable():
        return {}
    frames = sys._current_frames()
    try:
        return {tid: capture(frame, limit, classifier)[0] for tid, frame in frames.items()}
    finally:
        frames.clear()


def first_app_frame(stack: Iterable[Frame]) -> Frame | None:
    """The innermost application frame, if any."""
    return next((f for f in stack if f.app), None)


def signature(stack: Stack) -> tuple[tuple[str, str], ...]:
    """The shape of a stack (files and functions, not lines): equal while stuck in one place."""
    return tuple((f.filename, f.name) for f in stack)


# -- formatting: slow, never on the watchdog thread ----------------------------------


def call_at(code: CodeType, lasti: int) -> str | None:
    """The callee of the call ``code`` was executing at ``lasti``: ``time.sleep``, ``re.search``.

    Reads the source line (through ``linecache``), so call it only where I/O is allowed.
    ``None`` when the instruction is not a call or the source is unavailable.
    """
    try:
        positions = list(code.co_positions())[lasti // 2]
    except (IndexError, ValueError):
        return None
    start_line, end_line, start_col, end_col = positions
    if start_line is None or start_col is None or end_col is None:
        return None
    text = linecache.getline(code.co_filename, start_line)
    if not text:
        return None
    segment = text[start_col:] if end_line != start_line else text[start_col:end_col]
    return callee(segment)


_CALL_IN_LINE = re.compile(r"(?<![\w.])([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)\s*\(")
_NOT_CALLEES = frozenset(
    {"if", "while", "return", "await", "for", "in", "not", "and", "or", "elif"}
)


def call_in_line(filename: str, lineno: int) -> str | None:
    """The first call on a source line (a fallback when no instruction offset is known)."""
    text = linecache.getline(filename, lineno)
    for match in _CALL_IN_LINE.finditer(text):
        if match.group(1) not in _NOT_CALLEES:
            return match.group(1)
    return None


def callee(expression: str) -> str | None:
    """``time.sleep`` from ``time.sleep(5)``; ``None`` if ``expression`` is not a call."""
    depth = 0
    opening = -1
    for i, char in enumerate(expression):
        if char in "([{":
            if depth == 0 and char == "(":
                opening = i
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0 and opening >= 0 and i == len(expression.rstrip()) - 1:
                break
    if opening <= 0:
        return None
    name = expression[:opening].strip()
    if name.startswith("await "):
        name = name[6:].strip()
    if len(name) > 80 or not name or not (name[0].isalpha() or name[0] == "_"):
        return None
    return name


def describe_stack(stack: Stack, limit: int = 40) -> list[str]:
    """One line per frame, innermost first; application frames start with ``*``."""
    lines = [f"{'*' if f.app else ' '} {f.site}" for f in stack[:limit]]
    if len(stack) > limit:
        lines.append(f"  ... {len(stack) - limit} more frames")
    return lines
