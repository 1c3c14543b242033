"""Tasks that application code started outside supervision before the lifespan began.

Seed 001's service created ``asyncio.create_task(self._periodic_cleanup())`` at import
time: a ``while True`` loop nobody owned, awaited, timed or cancelled. At the start of
the lifespan this finds such tasks:

* tasks on the running loop that are not the server's, the framework's or lifesigns' own;
* tasks still pending on *another* loop (``asyncio.get_event_loop().create_task(...)`` at
  import time, before the server created its loop): they will never run at all.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .stack import StackLine

_OWNER_PACKAGES = (
    "uvicorn",
    "uvicorn_worker",
    "gunicorn",
    "hypercorn",
    "starlette",
    "fastapi",
    "anyio",
    "lifesigns",
)


@functools.cache
def _owner_dirs() -> tuple[str, ...]:
    """Directories of the packages whose tasks are not the application's."""
    dirs = []
    for name in _OWNER_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            dirs.append(os.path.join(os.path.realpath(location), ""))
    return tuple(dirs)


@dataclass(frozen=True)
class StrayTask:
    """A task found outside supervision: its name, coroutine and where it was created."""

    name: str
    coroutine: str
    where: StackLine | None
    dead_loop: bool

    def describe(self) -> str:
        """One line for the start-up warning."""
        at = f" at {self.where}" if self.where else ""
        if self.dead_loop:
            return (
                f"task {self.name!r} ({self.coroutine}{at}) is pending on an event loop that "
                "is not running (created before the server's loop existed?): it will never run"
            )
        return f"task {self.name!r} ({self.coroutine}{at}) runs outside lifesigns' supervision"


def _every_task() -> Iterable[asyncio.Task[Any]]:
    # asyncio keeps all tasks of all loops in one weak set; its name changed in 3.12.
    tasks: Iterable[asyncio.Task[Any]] | None = getattr(asyncio.tasks, "_scheduled_tasks", None)
    if tasks is None:
        tasks = getattr(asyncio.tasks, "_all_tasks", ())
    for _ in range(100):
        try:
            return list(tasks)
        except RuntimeError:  # the set changed while being copied
            continue
    return []


def _frame_of(task: asyncio.Task[Any]) -> StackLine | None:
    coro: Any = task.get_coro()
    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    if frame is not None:
        return StackLine(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    if code is not None:
        return StackLine(code.co_filename, code.co_firstlineno, code.co_name)
    return None


def _owned(where: StackLine | None, task: asyncio.Task[Any]) -> bool:
    if task.get_name().startswith("lifesigns"):
        return True
    if where is None:
        return False
    filename = os.path.realpath(where.filename)
    return filename.startswith(_owner_dirs())


def stray_tasks(ignore: Iterable[asyncio.Task[Any]] = ()) -> list[StrayTask]:
    """Tasks not owned by the server, the framework or lifesigns; call it on the loop."""
    loop = asyncio.get_running_loop()
    skip = {id(t) for t in ignore}
    current = asyncio.current_task()
    if current is not None:
        skip.add(id(current))
    found = []
    for task in _every_task():
        if id(task) in skip or task.done():
            continue
        where = _frame_of(task)
        if _owned(where, task):
            continue
        coro: Any = task.get_coro()
        qualname = getattr(coro, "__qualname__", None) or type(coro).__name__
        found.append(
            StrayTask(task.get_name(), f"{qualname}()", where, task.get_loop() is not loop)
        )
    return found
