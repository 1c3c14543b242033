"""Checkout sites: where the application took a connection, captured cheaply.

A checkout site is the first frame of application code above the pool, plus a few of
the application frames above it. It is captured on every checkout, so it keeps only each
frame's code object and instruction offset (``f_code``, ``f_lasti``) while walking
``f_back``: no source files, no ``linecache``, no ``traceback`` objects, not even
``f_lineno`` (which scans the line table). File, function and line number are worked out
later, only when a report or a dump needs the text.

Frames are sorted into three kinds, cached by file name:

* infrastructure (the standard library, SQLAlchemy, the ASGI stack, the drivers,
  lifesigns itself): never a checkout site;
* other installed packages (``site-packages``): a site only when no application frame
  is found, which is the case when the application itself is installed as a package;
* everything else: application code.

Under an ``AsyncEngine`` the checkout runs in a greenlet whose frames end at
SQLAlchemy's ``greenlet_spawn``; the walk continues in the parent greenlet, where the
awaiting coroutines (the endpoint among them) are suspended.
"""

from __future__ import annotations

import importlib
import os
import random
import site
import sys
import sysconfig
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import CodeType, FrameType
from typing import Any, Final, TypeAlias

Frame: TypeAlias = tuple[str, str, int]
"""One frame of a checkout site: file name, function name, line number."""

RawFrame: TypeAlias = tuple[CodeType, int]
"""A frame as captured: its code object and instruction offset (see :func:`resolve`)."""

INFRASTRUCTURE_PACKAGES: Final = (
    "sqlalchemy",
    "greenlet",
    "asyncpg",
    "psycopg",
    "psycopg2",
    "psycopg_pool",
    "aiosqlite",
    "starlette",
    "fastapi",
    "anyio",
    "sniffio",
    "uvicorn",
    "uvloop",
    "gunicorn",
    "lifesigns",
)
"""Installed packages whose frames are never a checkout site."""

_INFRA, _THIRD_PARTY, _APP = 0, 1, 2
_MAX_WALK = 128  # frames; a checkout deeper than this keeps what was found so far
_MAX_GREENLET_HOPS = 3


def _greenlet_getcurrent() -> Callable[[], Any] | None:
    # greenlet comes with sqlalchemy[asyncio]; without it there is nothing to cross.
    try:
        module = importlib.import_module("greenlet")
    except ImportError:  # pragma: no cover
        return None
    getcurrent: Callable[[], Any] | None = getattr(module, "getcurrent", None)
    return getcurrent


_greenlet_current = _greenlet_getcurrent()


def _package_roots() -> list[str]:
    roots = {*site.getsitepackages(), sysconfig.get_paths()["purelib"]}
    roots.add(sysconfig.get_paths()["platlib"])
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if isinstance(user, str):
        roots.add(user)
    return sorted((os.path.join(r, "") for r in roots), key=len, reverse=True)


def _stdlib_roots() -> list[str]:
    paths = sysconfig.get_paths()
    roots = {paths["stdlib"], paths["platstdlib"], os.path.dirname(os.__file__)}
    return sorted((os.path.join(r, "") for r in roots), key=len, reverse=True)


class SiteCapture:
    """Captures checkout sites; one instance per watched engine.

    ``depth`` is how many application frames the compact site keeps (the first one is
    the site proper). ``full_stacks`` is the fraction of checkouts (0 to 1) that also
    record every frame, infrastructure included: 0 by default, since a full stack costs
    several microseconds more per checkout.
    """

    def __init__(
        self,
        *,
        depth: int = 6,
        full_stacks: float = 0.0,
        library_paths: Iterable[str] = (),
    ) -> None:
        self.depth = depth
        self.full_stacks = full_stacks
        self._kinds: dict[str, int] = {}
        self._packages = _package_roots()
        self._stdlib = _stdlib_roots()
        here = Path(__file__).resolve().parents[1]  # the lifesigns package
        self._infra = [os.path.join(str(here), "")]
        self._infra += [
            os.path.join(root, name, "")
            for root in self._packages
            for name in INFRASTRUCTURE_PACKAGES
        ]
        self._infra += [os.path.join(str(Path(p).resolve()), "") for p in library_paths]

    def __repr__(self) -> str:
        return f"SiteCapture(depth={self.depth}, full_stacks={self.full_stacks:g})"

    def kind(self, filename: str) -> int:
        """0 for infrastructure, 1 for other installed packages, 2 for application code."""
        kind = self._kinds.get(filename)
        if kind is None:
            kind = self._classify(filename)
            self._kinds[filename] = kind
        return kind

    def _classify(self, filename: str) -> int:
        if filename.startswith("<"):  # <frozen ...>, <string>
            return _INFRA
        if any(filename.startswith(p) for p in self._infra):
            return _INFRA
        if any(filename.startswith(p) for p in self._packages):
            return _THIRD_PARTY
        if any(filename.startswith(p) for p in self._stdlib):
            return _INFRA
        return _APP

    def capture(self, skip: int = 1) -> tuple[RawFrame, ...]:
        """The compact site of the calling code, innermost frame first.

        ``skip`` frames above this call are ignored (the listener's own).
        """
        kinds = self._kinds
        depth = self.depth
        frames: list[RawFrame] = []
        first_app = -1
        f: FrameType | None = sys._getframe(skip + 1)
        hops = 0
        greenlet: Any = None
        for _ in range(_MAX_WALK):
            if f is None:
                if _greenlet_current is None or hops >= _MAX_GREENLET_HOPS:
                    break
                greenlet = (greenlet or _greenlet_current()).parent
                if greenlet is None:
                    break
                hops += 1
                f = greenlet.gr_frame
                continue
            code = f.f_code
            kind = kinds.get(code.co_filename)
            if kind is None:
                kind = self.kind(code.co_filename)
            if kind:
                frames.append((code, f.f_lasti))
                if kind == _APP and first_app < 0:
                    first_app = len(frames) - 1
                if first_app >= 0 and len(frames) - first_app >= depth:
                    break
            f = f.f_back
        start = max(first_app, 0)
        return tuple(frames[start : start + depth])

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
                if _greenlet_current is None or hops >= _MAX_GREENLET_HOPS:
                    break
                greenlet = (greenlet or _greenlet_current()).parent
                if greenlet is None:
                    break
                hops += 1
                f = greenlet.gr_frame
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


_short_names: dict[str, str] = {}


def short_filename(filename: str) -> str:
    """``app/orders.py`` rather than ``/srv/app/app/orders.py``: relative to the working
    directory or to the ``sys.path`` entry it was imported from."""
    short = _short_names.get(filename)
    if short is not None:
        return short
    short = filename
    candidates = [os.getcwd(), *(p for p in sys.path if p)]
    best = ""
    for entry in candidates:
        prefix = os.path.join(os.path.abspath(entry), "")
        if filename.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    if best:
        short = filename[len(best) :]
    if len(_short_names) < 4096:
        _short_names[filename] = short
    return short


def format_frame(frame: Frame | RawFrame) -> str:
    """``app/orders.py:88 in list_orders``."""
    filename, name, line = resolve(frame) if len(frame) == 2 else frame
    return f"{short_filename(filename)}:{line} in {name}"


def format_site(frames: Sequence[Frame | RawFrame]) -> str:
    """The site proper (the innermost application frame), or ``unknown``."""
    return format_frame(frames[0]) if frames else "unknown"
