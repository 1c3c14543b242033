"""Who keeps a leak alive, and the line that adds to it.

An allocation site alone names a victim: the code that builds a payload, not the cache
that never lets it go. This module names the *retainer* (a growing container found by
:class:`~lifesigns.memory.containers.ContainerCensus`, reachable from a long-lived root)
and two lines:

* the **insert line**: where the application's code puts entries into that container,
  found by reading the bytecode of the application's functions for a load of the
  container's name followed by a store into it (``_store[key] = v``, ``.append(v)``,
  ``.add``, ``.setdefault``, ``.update``...); when several functions do, the one whose
  frames appear in the newest entries' allocation tracebacks wins;
* the **allocation line**: where the newest entries were allocated, from tracemalloc
  (only while a time-boxed comparison runs, so tracing is never left on).

Everything here runs on the memory monitor's thread, bounded in time.
"""

from __future__ import annotations

import dis
import linecache
import os
import sys
import time
import tracemalloc
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .containers import ContainerGrowth, newest_entries

__all__ = ["InsertSite", "Retainer", "find_insert_sites", "name_retainers"]

_MUTATORS = frozenset(
    {
        "append",
        "appendleft",
        "extend",
        "extendleft",
        "insert",
        "add",
        "update",
        "setdefault",
        "__setitem__",
    }
)
_LOADS = frozenset(
    {"LOAD_GLOBAL", "LOAD_NAME", "LOAD_ATTR", "LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_METHOD"}
)
_PASS_THROUGH = frozenset(
    {
        "LOAD_FAST",
        "LOAD_CONST",
        "LOAD_GLOBAL",
        "LOAD_DEREF",
        "LOAD_ATTR",
        "LOAD_NAME",
        "BINARY_SUBSCR",
        "BINARY_OP",
        "FORMAT_VALUE",
        "BUILD_STRING",
        "BUILD_TUPLE",
        "COPY",
        "SWAP",
        "CACHE",
        "PRECALL",
        "CALL",
        "PUSH_NULL",
        "KW_NAMES",
    }
)


def short_path(filename: str) -> str:
    """A path a user can open: relative to the working directory, else to its sys.path entry."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        relative = filename
    if not relative.startswith(".."):
        return relative
    best = filename
    for entry in sys.path:
        if entry and filename.startswith(entry.rstrip("/") + "/"):
            candidate = filename[len(entry.rstrip("/")) + 1 :]
            if len(candidate) < len(best):
                best = candidate
    return best


@dataclass(frozen=True)
class InsertSite:
    """A line of the application's code that puts entries into a container."""

    filename: str
    lineno: int
    function: str
    how: str
    """``[]=`` for a subscript store, else the method called (``append``, ``add``...)."""
    first_line: int
    last_line: int

    @property
    def where(self) -> str:
        """``app/cache.py:41 in remember``."""
        return f"{short_path(self.filename)}:{self.lineno} in {self.function}"

    @property
    def source(self) -> str:
        """The line's source text."""
        return linecache.getline(self.filename, self.lineno).strip()


def find_insert_sites(
    name: str,
    *,
    is_app_file: Callable[[str], bool],
    budget: float = 0.5,
) -> list[InsertSite]:
    """Lines of the application's functions that insert into the container called ``name``.

    ``name`` is the census's qualified name; its last dotted part (``_store`` of
    ``services.cache._store``, ``reports`` of ``app.state.reports``, the cell name of a
    ``<closure cache>``) is what the bytecode loads before storing into it.
    """
    attr = _last_part(name)
    if not attr:
        return []
    deadline = time.monotonic() + budget
    sites: list[InsertSite] = []
    for code in _app_code_objects(is_app_file, deadline):
        if attr not in code.co_names and attr not in code.co_freevars + code.co_cellvars:
            continue
        sites.extend(_inserts_in(code, attr))
        if len(sites) >= 20:
            break
    return sites


def _last_part(name: str) -> str:
    tail = name.rsplit(".", 1)[-1]
    if tail.startswith("<closure ") and tail.endswith(">"):
        return tail[len("<closure ") : -1]
    if tail.startswith("<"):
        return ""
    return tail


def _app_code_objects(
    is_app_file: Callable[[str], bool], deadline: float
) -> Iterator[types.CodeType]:
    seen: set[int] = set()
    for module in list(sys.modules.values()):
        if time.monotonic() > deadline:
            return
        filename = getattr(module, "__file__", None) or ""
        if not isinstance(module, types.ModuleType) or not is_app_file(filename):
            continue
        for value in list(vars(module).values()):
            for code in _codes_of(value):
                if id(code) not in seen and code.co_filename == filename:
                    seen.add(id(code))
                    yield from _nested(code)
        time.sleep(0)


def _codes_of(value: object) -> Iterator[types.CodeType]:
    function = getattr(value, "__wrapped__", value)
    code = getattr(function, "__code__", None)
    if isinstance(code, types.CodeType):
        yield code
    if isinstance(value, type):
        for member in list(vars(value).values()):
            member = getattr(member, "__func__", member)
            member = getattr(member, "__wrapped__", member)
            inner = getattr(member, "__code__", None)
            if isinstance(inner, types.CodeType):
                yield inner


def _nested(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _nested(const)


def _inserts_in(code: types.CodeType, attr: str) -> Iterator[InsertSite]:
    instructions = list(dis.get_instructions(code))
    lines = [i.positions.lineno for i in instructions if i.positions and i.positions.lineno]
    first, last = (min(lines), max(lines)) if lines else (code.co_firstlineno, code.co_firstlineno)
    for index, instr in enumerate(instructions):
        if instr.opname not in _LOADS or instr.argval != attr:
            continue
        how = _store_after(instructions, index)
        if how is None:
            continue
        lineno = instr.positions.lineno if instr.positions and instr.positions.lineno else 0
        yield InsertSite(code.co_filename, lineno, code.co_qualname, how, first, last)


def _store_after(instructions: list[dis.Instruction], index: int) -> str | None:
    """What is done to the container loaded at ``index``: a store into it, or ``None``."""
    for instr in instructions[index + 1 : index + 12]:
        if instr.opname == "STORE_SUBSCR":
            return "[]="
        if instr.opname in ("LOAD_METHOD", "LOAD_ATTR") and instr.argval in _MUTATORS:
            return str(instr.argval)
        if instr.opname not in _PASS_THROUGH:
            return None
    return None


@dataclass
class Retainer:
    """A growing container, what it holds, and the lines that feed it."""

    growth: ContainerGrowth
    inserts: list[InsertSite] = field(default_factory=list)
    allocated_at: list[str] = field(default_factory=list)
    """The newest entries' allocation traceback, innermost application frame first."""

    @property
    def insert(self) -> InsertSite | None:
        """The best insert line."""
        return self.inserts[0] if self.inserts else None

    def describe(self) -> str:
        """One line for the log: what grows, who holds it, the line that adds to it."""
        text = self.growth.describe()
        if self.insert is not None:
            text += f"; inserted at {self.insert.where} (`{self.insert.source}`)"
        if self.allocated_at:
            text += f"; new entries allocated at {self.allocated_at[0]}"
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            **self.growth.as_dict(),
            "text": self.describe(),
            "inserted_at": [
                {"where": s.where, "source": s.source, "how": s.how} for s in self.inserts[:5]
            ],
            "allocated_at": self.allocated_at[:5],
        }


def name_retainers(
    growing: list[ContainerGrowth],
    find: Callable[[str], object | None],
    *,
    is_app_file: Callable[[str], bool],
    top: int = 3,
    budget: float = 1.0,
) -> list[Retainer]:
    """For the ``top`` fastest-growing containers: their insert and allocation lines.

    ``find(name)`` returns the live container (for its newest entries' tracebacks while
    tracemalloc traces). Stops at ``budget`` seconds.
    """
    deadline = time.monotonic() + budget
    named: list[Retainer] = []
    for growth in growing[:top]:
        if time.monotonic() > deadline:
            break
        retainer = Retainer(growth)
        retainer.inserts = find_insert_sites(
            growth.name, is_app_file=is_app_file, budget=max(0.05, deadline - time.monotonic())
        )
        if growth.kind == "lru_cache" and not retainer.inserts:
            retainer.inserts = _lru_sites(growth.name, find)
        frames: list[tracemalloc.Frame] = []
        if tracemalloc.is_tracing():
            container = find(growth.name)
            if container is not None:
                frames = _entry_frames(container, is_app_file)
        if frames:
            retainer.allocated_at = [
                f"{short_path(f.filename)}:{f.lineno}" for f in frames if is_app_file(f.filename)
            ] or [f"{short_path(frames[0].filename)}:{frames[0].lineno}"]
            retainer.inserts.sort(key=lambda site: not _in_frames(site, frames))
        named.append(retainer)
    return named


def _lru_sites(name: str, find: Callable[[str], object | None]) -> list[InsertSite]:
    wrapper = find(name)
    function = getattr(wrapper, "__wrapped__", None)
    code = getattr(function, "__code__", None)
    if not isinstance(code, types.CodeType):
        return []
    return [
        InsertSite(
            code.co_filename,
            code.co_firstlineno,
            code.co_qualname,
            "lru_cache",
            code.co_firstlineno,
            code.co_firstlineno,
        )
    ]


def _entry_frames(container: object, is_app_file: Callable[[str], bool]) -> list[tracemalloc.Frame]:
    """The allocation traceback of the newest traced entry, most recent frame first."""
    for entry in newest_entries(container, 16):
        traceback = tracemalloc.get_object_traceback(entry)
        if traceback is None:
            continue
        frames = list(reversed(list(traceback)))  # tracemalloc stores oldest first
        if any(is_app_file(f.filename) for f in frames):
            return frames
    return []


def _in_frames(site: InsertSite, frames: list[tracemalloc.Frame]) -> bool:
    return any(
        f.filename == site.filename and site.first_line <= f.lineno <= site.last_line
        for f in frames
    )
