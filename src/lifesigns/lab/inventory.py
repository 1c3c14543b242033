"""The inventory sync: a periodic task whose upstream feed can break (incident ``crash-loop``)."""

from __future__ import annotations

import time

_broken_until = [0.0]


class FeedUnavailable(Exception):
    """The supplier's inventory feed answered 503 (simulated)."""


def break_feed(seconds: float) -> None:
    """Make the feed fail for ``seconds`` (the lab's trigger)."""
    _broken_until[0] = time.monotonic() + seconds


async def sync_inventory() -> None:
    """Pull stock levels from the supplier's feed."""
    if time.monotonic() < _broken_until[0]:
        raise FeedUnavailable("supplier feed answered 503 Service Unavailable")
