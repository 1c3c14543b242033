"""Exhaustion snapshots: one report per episode, listing every holder.

An episode opens when checked-out connections reach the high-water mark (90 % of
``pool_size + max_overflow`` by default) or when a checkout times out
(``sqlalchemy.exc.TimeoutError``, "QueuePool limit of size 10 overflow 20 reached"),
and closes once they fall back to the low-water mark (50 %). Each episode gets exactly
one WARNING: the trigger, the pool's figures, the checkouts waiting, and every holder
with its age, route or task, checkout site and, on PostgreSQL, its backend's state
("idle in transaction for 41.2 s; last query: ..."), plus the holders grouped by site
by route or coroutine (one line for forty tasks of one coroutine, not forty), and by
both, since a pile-up at one site is the usual answer. When the episode is over,
one INFO line says how long it lasted and how many checkouts timed out in it.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import Any

from .holders import Holder
from .server_view import Backend
from .sites import format_frame

MAX_LISTED = 8
"""Holders a snapshot lists one by one (the oldest); the rest are in its groups."""


class ExhaustionSnapshots:
    """Words the snapshot of each episode and keeps the last few for the dump."""

    def __init__(self, pool: str, *, history: int = 10) -> None:
        self.pool = pool
        self.recent: deque[dict[str, Any]] = deque(maxlen=history)
        self.reported_episode = 0
        self.timeouts_at_start = 0
        self.started: float | None = None

    def report(
        self,
        episode: int,
        trigger: str,
        holders: Sequence[Holder],
        figures: Mapping[str, Any],
        waiting: tuple[int, float],
        backends: Mapping[int, Backend],
        note: str | None,
        now: float | None = None,
        returned: Sequence[Holder] = (),
    ) -> str:
        """The WARNING of episode ``episode`` (and keeps it for the dump)."""
        now = time.monotonic() if now is None else now
        self.reported_episode = episode
        self.started = now
        gone = {h.number for h in returned}
        ordered = sorted([*holders, *returned], key=lambda h: h.taken)
        count, oldest_wait = waiting
        lines = [
            f"connection pool exhausted: pool {self.pool!r} episode {episode}: {trigger}; "
            f"{figures.get('checked_out', len(ordered))} of {figures.get('capacity')} "
            f"checked out, {count} waiting"
            + (f" (oldest {oldest_wait:.1f} s)" if count else "")
            + f"; {len(ordered)} holders:"
        ]
        entries = []
        for index, holder in enumerate(ordered):
            backend = backends.get(holder.backend_pid or 0)
            server = backend.describe() if backend is not None else (note or "no server view")
            held = "returned since" if holder.number in gone else f"held {holder.age(now):.1f} s"
            if index < MAX_LISTED:
                lines.append(
                    f"  #{holder.number} {held} by {holder.owner} at {holder.site}"
                    + (f" [bulkhead {holder.bulkhead}]" if holder.bulkhead else "")
                )
                for frame in holder.frames[1:3]:
                    lines.append(f"      from {format_frame(frame)}")
                lines.append(f"      server: {server}")
            elif index == MAX_LISTED:
                lines.append(
                    f"  ... {len(ordered) - MAX_LISTED} more holders, grouped below "
                    "(each of them in /debug/pool)"
                )
            entry = holder.as_dict(now)
            if holder.number in gone:
                entry["returned_since"] = True
            entry["server"] = backend.as_dict() if backend is not None else note
            entries.append(entry)
        by_site = Counter(h.site for h in ordered)
        by_owner = Counter(h.group for h in ordered)
        by_both = Counter(f"{h.group} at {h.site}" for h in ordered)
        lines.append(f"  by site: {_top(by_site)}")
        lines.append(f"  by route or coroutine: {_top(by_owner)}")
        lines.append(f"  by owner and site: {_top(by_both)}")
        self.recent.append(
            {
                "episode": episode,
                "trigger": trigger,
                "at": time.time(),
                "pool": dict(figures),
                "waiting": count,
                "oldest_wait_s": round(oldest_wait, 3),
                "holders": entries,
                "by_site": dict(by_site),
                "by_route": dict(by_owner),
                "by_owner_and_site": dict(by_both),
                "server_note": note,
            }
        )
        return "\n".join(lines)

    def over(self, episode: int, timeouts: int) -> str:
        """The INFO when an episode closes."""
        lasted = max(0.0, time.monotonic() - self.started) if self.started is not None else 0.0
        for entry in self.recent:
            if entry["episode"] == episode:
                entry["lasted_s"] = round(lasted, 3)
                entry["timeouts"] = timeouts
        self.started = None
        return (
            f"connection pool recovered: pool {self.pool!r} episode {episode} lasted "
            f"{lasted:.1f} s; {timeouts} checkouts timed out in it"
        )


def _top(counter: Counter[str], n: int = 5) -> str:
    return ", ".join(f"{key} x{count}" for key, count in counter.most_common(n)) or "none"
