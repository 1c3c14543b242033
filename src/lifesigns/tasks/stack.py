"""Where a suspended task is stuck: its await chain, innermost frame last.

``Task.get_stack()`` shows only the outermost coroutine of a suspended task (a suspended
coroutine's frame has no ``f_back``), which says "in my_job" but not "in my_job, awaiting
``client.fetch``, awaiting ``asyncio.sleep``". This follows ``cr_await`` down instead.
Capture it before cancelling: cancellation unwinds the chain.
"""

from __future__ import annotations

import asyncio
import linecache
from dataclasses import dataclass
from typing import Any

_MAX_DEPTH = 64


@dataclass(frozen=True)
class StackLine:
    """One level of an await chain: ``app/jobs.py:42 in clean, awaiting sleep``."""

    filename: str
    lineno: int
    function: str

    @property
    def source(self) -> str:
        """The line of source, stripped (empty when the file cannot be read)."""
        return linecache.getline(self.filename, self.lineno).strip()

    def __str__(self) -> str:
        text = f"{self.filename}:{self.lineno} in {self.function}"
        source = self.source
        return f"{text}: {source}" if source else text


def await_chain(task: asyncio.Task[Any]) -> list[StackLine]:
    """The chain of frames ``task`` is suspended in, outermost first.

    Empty when the task is done or is not running a coroutine. Reads frame attributes
    only: call it on the task's own loop (the frames change while it runs).
    """
    lines: list[StackLine] = []
    awaitable: Any = task.get_coro()
    while awaitable is not None and len(lines) < _MAX_DEPTH:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            frame = getattr(awaitable, "ag_frame", None)
        if frame is None:
            break
        code = frame.f_code
        lines.append(StackLine(code.co_filename, frame.f_lineno, code.co_name))
        awaitable = (
            getattr(awaitable, "cr_await", None)
            or getattr(awaitable, "gi_yieldfrom", None)
            or getattr(awaitable, "ag_await", None)
        )
    return lines


def innermost_own_frame(chain: list[StackLine]) -> StackLine | None:
    """The deepest frame outside the standard library's ``asyncio`` (where the user is stuck)."""
    for line in reversed(chain):
        if "/asyncio/" not in line.filename.replace("\\", "/"):
            return line
    return chain[-1] if chain else None


def format_chain(chain: list[StackLine]) -> str:
    """The chain as indented lines, outermost first, for a log record."""
    return "\n".join(f"  {line}" for line in chain) or "  (no frames: the task was not suspended)"
