"""Tasks that application code started outside supervision before the lifespan began.

Seed 001's service created ``asyncio.create_task(self._periodic_cleanup())`` at import
time: a ``while True`` loop nobody owned, awaited, timed or cancelled. At the start of
the lifespan this finds such tasks:

* tasks on the running loop whose coroutine is not the server's, the framework's, the
  standard library's or lifesigns' own (:meth:`lifesigns._frames.FrameClassifier.rank`);
* tasks still pending on *another* loop (``asyncio.get_event_loop().create_task(...)`` at
  import time, before the server created its loop): they will never run at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .._frames import SKIP, FrameClassifier, default_classifier
from .stack import StackLine


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


def _frame_of(task: asyncio.Task[Any], classifier: FrameClassifier) -> StackLine | None:
    coro: Any = task.get_coro()
    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    if frame is not None:
        code = frame.f_code
        return classifier.frame(code.co_filename, frame.f_lineno or 0, code.co_name)
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    if code is not None:
        return classifier.frame(code.co_filename, code.co_firstlineno, code.co_name)
    return None


def _owned(where: StackLine | None, task: asyncio.Task[Any], classifier: FrameClassifier) -> bool:
    if task.get_name().startswith("lifesigns"):
        return True
    return where is not None and classifier.rank(where.filename) == SKIP


def stray_tasks(
    ignore: Iterable[asyncio.Task[Any]] = (), classifier: FrameClassifier | None = None
) -> list[StrayTask]:
    """Tasks not owned by the server, the framework or lifesigns; call it on the loop."""
    classifier = classifier or default_classifier()
    loop = asyncio.get_running_loop()
    skip = {id(t) for t in ignore}
    current = asyncio.current_task()
    if current is not None:
        skip.add(id(current))
    found = []
    for task in _every_task():
        if id(task) in skip or task.done():
            continue
        where = _frame_of(task, classifier)
        if _owned(where, task, classifier):
            continue
        coro: Any = task.get_coro()
        qualname = getattr(coro, "__qualname__", None) or type(coro).__name__
        found.append(
            StrayTask(task.get_name(), f"{qualname}()", where, task.get_loop() is not loop)
        )
    return found
