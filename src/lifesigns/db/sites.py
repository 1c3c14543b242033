"""Checkout sites: where the application took a connection, captured cheaply.

A checkout site is the first frame of application code above the pool, plus a few of
the application frames above it. It is captured on every checkout, so it keeps only each
frame's code object and instruction offset (``f_code``, ``f_lasti``) while walking
``f_back``: no source files, no ``linecache``, no ``traceback`` objects, not even
``f_lineno`` (which scans the line table). File, function and line number are worked out
later, only when a report or a dump needs the text.

Frames are ranked by :meth:`lifesigns._frames.FrameClassifier.rank`, cached by file name:

* the standard library, lifesigns, launchers (console scripts, click, typer...) and the
  serving stack (SQLAlchemy, the ASGI stack, the drivers): never a checkout site;
* other libraries: a site only when no application frame is found;
* the application's code: the site, and the short stack (application frames only).

Under an ``AsyncEngine`` the checkout runs in a greenlet whose frames end at
SQLAlchemy's ``greenlet_spawn``; the walk continues in the parent greenlet, where the
awaiting coroutines (the endpoint among them) are suspended.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from types import CodeType, FrameType
from typing import Any, Final, TypeAlias

from .._frames import (
    MAX_GREENLET_HOPS,
    OWN,
    FrameClassifier,
    default_classifier,
    parent_greenlet,
    short_path,
)
from .._frames import Frame as _Frame

Frame: TypeAlias = tuple[str, str, int]
"""One frame of a checkout site: file name, function name, line number."""

RawFrame: TypeAlias = tuple[CodeType, int]
"""A frame as captured: its code object and instruction offset (see :func:`resolve`)."""

_MAX_WALK: Final = 128  # frames; a checkout deeper than this keeps what was found so far


class SiteCapture:
    """Captures checkout sites; one instance per watched engine.

    ``depth`` is how many application frames the compact site keeps (the first one is
    the site proper). ``full_stacks`` is the fraction of checkouts (0 to 1) that also
    record every frame, infrastructure included: 0 by default, since a full stack costs
    several microseconds more per checkout. ``classifier`` says what the application's
    code is (:func:`~lifesigns._frames.default_classifier` by default).
    """

    def __init__(
        self,
        *,
        depth: int = 6,
        full_stacks: float = 0.0,
        classifier: FrameClassifier | None = None,
    ) -> None:
        self.depth = depth
        self.full_stacks = full_stacks
        self.classifier = classifier or default_classifier()
        self._ranks = self.classifier.ranks

    def __repr__(self) -> str:
        return f"SiteCapture(depth={self.depth}, full_stacks={self.full_stacks:g})"

    def kind(self, filename: str) -> int:
        """0 (:data:`~lifesigns._frames.SKIP`) for code that never makes a site (the
        stdlib, lifesigns, launchers, the serving stack), 1 for other libraries (a site
        only when no application frame shows), 2 for the application's code (cached)."""
        rank = self._ranks.get(filename)
        return self.classifier.rank(filename) if rank is None else rank

    def capture(self, skip: int = 1) -> tuple[RawFrame, ...]:
        """The compact site of the calling code, innermost frame first.

        The innermost application frame and the application frames around it (at most
        ``depth`` in all); other libraries' frames only when no application frame is
        found. ``skip`` frames above this call are ignored (the listener's own). Walks
        out of SQLAlchemy's greenlet into the coroutines that awaited it.
        """
        ranks = self._ranks
        rank_of = self.kind
        left = self.depth
        own: list[RawFrame] = []
        fallback: list[RawFrame] = []
        f: FrameType | None = sys._getframe(skip + 1)
        hops = 0
        greenlet: Any = None
        for _ in range(_MAX_WALK):
            if f is None:
                if hops >= MAX_GREENLET_HOPS:
                    break
                greenlet, f = parent_greenlet(greenlet)
                if greenlet is None:
                    break
                hops += 1
                continue
            code = f.f_code
            rank = ranks.get(code.co_filename)
            if rank is None:
                rank = rank_of(code.co_filename)
            if rank:
                if rank == OWN:
                    own.append((code, f.f_lasti))
                    left -= 1
                    if not left:
                        break
                elif not own and len(fallback) < self.depth:
                    fallback.append((code, f.f_lasti))
            f = f.f_back
        return tuple(own or fallback)

    def sample_full(self) -> bool:
        """Whether this checkout should also record its full stack."""
        rate = self.full_stacks
        return rate >= 1.0 or (rate > 0.0 and random.random() < rate)

    def capture_full(self, skip: int = 1) -> tuple[RawFrame, ...]:
        """Every frame of the calling code (across greenlets), innermost first."""
        frames: list[RawFrame] = []
        f: FrameType | None = sys._getframe(skip + 1)
        greenlet: Any = None
        hops = 0
        while len(frames) < _MAX_WALK:
            if f is None:
                if hops >= MAX_GREENLET_HOPS:
                    break
                greenlet, f = parent_greenlet(greenlet)
                if greenlet is None:
                    break
                hops += 1
                continue
            frames.append((f.f_code, f.f_lasti))
            f = f.f_back
        return tuple(frames)


_lines: dict[RawFrame, int] = {}


def resolve(raw: RawFrame) -> Frame:
    """File name, function name and line number of a captured frame."""
    code, offset = raw
    line = _lines.get(raw)
    if line is None:
        line = code.co_firstlineno
        for start, end, number in code.co_lines():
            if start <= offset < end and number is not None:
                line = number
                break
        if len(_lines) < 65536:
            _lines[raw] = line
    return code.co_filename, code.co_name, line


def short_filename(filename: str) -> str:
    """``app/orders.py`` rather than ``/srv/app/app/orders.py`` (see
    :func:`lifesigns._frames.short_path`)."""
    return short_path(filename)


def as_frame(frame: Frame | RawFrame, classifier: FrameClassifier | None = None) -> _Frame:
    """A captured site frame as a :class:`lifesigns._frames.Frame`."""
    filename, name, line = resolve(frame) if len(frame) == 2 else frame
    return (classifier or default_classifier()).frame(filename, line, name)


def format_frame(frame: Frame | RawFrame) -> str:
    """``app/orders.py:88 in list_orders``."""
    return as_frame(frame).where


def format_site(frames: Sequence[Frame | RawFrame]) -> str:
    """The site proper (the innermost application frame), or ``unknown``."""
    return format_frame(frames[0]) if frames else "unknown"
