"""A legacy token-refresh job that starts itself at import (incident ``import-time-task``).

Seed 001's bug: importing the module creates a task on the running loop, outside any
supervision, and its loop does blocking clean-up between awaits. lifesigns names each
stall it causes and counts the task as unsupervised. The loop ends after a few runs so
the lab's incident is bounded.
"""

from __future__ import annotations

import asyncio
import time

RUNS = 5


def purge_expired_tokens() -> None:
    """Clean-up written as sync code: blocks the loop for 0.6 s each run."""
    time.sleep(0.6)  # the incident: a blocking call in the task's loop


async def refresh_tokens_forever() -> None:
    """The job: refresh, purge, wait; no timeout, no supervisor."""
    for _ in range(RUNS):
        # lifesigns: ignore[LS102] the lab's import-time-task incident blocks on purpose
        purge_expired_tokens()
        await asyncio.sleep(0.5)


# lifesigns: ignore[LS101] the lab's import-time-task incident: seed 001's bug, on purpose
_task = asyncio.get_event_loop().create_task(refresh_tokens_forever())
