"""The inventory sync: a periodic task whose upstream feed can break (incident ``crash-loop``).

Under the agent one worker of the container runs the periodic tasks, not necessarily the
one the lab's trigger reached: the feed's state is a small file every worker reads (in the
agent's runtime folder, else the temporary folder), as a real outage is seen by all.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


class FeedUnavailable(Exception):
    """The supplier's inventory feed answered 503 (simulated)."""


def _state_file() -> Path:
    folder = os.environ.get("LIFESIGNS_AGENT_DIR") or tempfile.gettempdir()
    return Path(folder) / f"lifesigns-lab-feed-{os.getuid()}"


def break_feed(seconds: float) -> None:
    """Make the feed fail for ``seconds``, for every worker (the lab's trigger)."""
    target = _state_file()
    temporary = target.with_suffix(".tmp")
    temporary.write_text(str(time.time() + seconds))
    temporary.replace(target)


def feed_broken() -> bool:
    """Whether the feed is broken now."""
    try:
        until = float(_state_file().read_text())
    except (OSError, ValueError):
        return False
    return time.time() < until


async def sync_inventory() -> None:
    """Pull stock levels from the supplier's feed."""
    if feed_broken():
        raise FeedUnavailable("supplier feed answered 503 Service Unavailable")
