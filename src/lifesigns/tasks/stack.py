"""Where a suspended task is stuck: its await chain, innermost frame last.

``Task.get_stack()`` shows only the outermost coroutine of a suspended task (a suspended
coroutine's frame has no ``f_back``), which says "in my_job" but not "in my_job, awaiting
``client.fetch``, awaiting ``asyncio.sleep``". :func:`lifesigns._frames.await_chain`
follows ``cr_await`` (and awaited tasks, and ``gather``) down instead; this module keeps
the frames of that chain for the supervisor. Capture it before cancelling: cancellation
unwinds the chain.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._frames import Frame, FrameClassifier, FrameKind, frames_of
from .._frames import await_chain as _await_chain

StackLine = Frame
"""One level of an await chain: ``app/jobs.py:42 in clean: await client.fetch()``."""

_MAX_DEPTH = 64


def await_chain(
    task: asyncio.Task[Any], classifier: FrameClassifier | None = None
) -> list[StackLine]:
    """The chain of frames ``task`` is suspended in, outermost first.

    Empty when the task is done or is not running a coroutine. Reads frame attributes
    only: call it on the task's own loop (the frames change while it runs).
    """
    if task.done():
        return []
    return frames_of(_await_chain(task, limit=_MAX_DEPTH, classifier=classifier))


def innermost_own_frame(chain: list[StackLine]) -> StackLine | None:
    """The deepest frame of the application (else outside the stdlib and lifesigns):
    where the user's code is stuck."""
    for wanted in ({FrameKind.APPLICATION}, {FrameKind.APPLICATION, FrameKind.LIBRARY}):
        for line in reversed(chain):
            if line.kind in wanted:
                return line
    return chain[-1] if chain else None


def format_chain(chain: list[StackLine]) -> str:
    """The chain as indented lines, outermost first, for a log record."""
    return "\n".join(f"  {line}" for line in chain) or "  (no frames: the task was not suspended)"
