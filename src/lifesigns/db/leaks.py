"""Leak detection: by owner first, by age for owners still alive; each reported once.

**By owner** (issue 10): a connection still checked out after the request or task that
took it has finished is a leak, whatever its age. It is reported within a second of the
owner's end (:data:`OWNER_GRACE` after it, at the next scan) with its checkout site and
how the owner ended: the request's status (``ended with status 404``), the exception
that ended it (``raised KeyError (status 500)``), or the task's fate. A session left
open on an error path shows up as what it is, not as "load" at the 90 % mark.

**By age**, for holders whose owner still runs (a batch job, a request stuck on a
lock): a connection held past ``leak_threshold`` is reported once, by site.

Modelled on HikariCP's ``leakDetectionThreshold``: the forensics thread compares each
holder's age with the threshold at every scan; a holder past it is logged once (WARNING,
with its checkout site and stack, its route or task, its age, and what PostgreSQL says
about its backend), counted in ``lifesigns_pool_leaks_total{site}`` (the metric HikariCP
never had, HikariCP#2054), and logged again (INFO) when it comes back: "returned after
47.0 s". That second line tells a slow unit of work from a true leak. The connection is
never closed behind the application's back (HikariCP#947 rejected that too).

Default threshold **30 s**: SQLAlchemy's default ``pool_timeout``. A connection held
that long has already made any checkout queued behind it fail, so it is worth a line
whatever the cause; web requests rarely run that long, and batch work that does is
exactly what seed 002 needed named. HikariCP's maintainers advise one to two minutes to
avoid false positives; the "returned after" line makes a false positive cheap here.

Minimum **2 s**, HikariCP's own floor: below it, ordinary slow queries and request
bursts would be reported as leaks and the log would drown the real ones.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from .._config import seconds
from ..errors import ConfigError
from .holders import Holder
from .pool_metrics import MAX_SITE_LABELS
from .server_view import Backend
from .sites import format_frame

DEFAULT_LEAK_THRESHOLD = 30.0
MINIMUM_LEAK_THRESHOLD = 2.0

OWNER_GRACE = 0.2
"""Seconds after its owner ended that a connection may still be on its way back (a
checkin racing the end of the request) before it counts as leaked."""


def leak_threshold(value: object) -> float | None:
    """Validate ``leak_threshold`` (seconds, >= 2; ``None`` turns detection off)."""
    if value is None:
        return None
    number = seconds("leak_threshold", value, maximum=86_400)
    if number < MINIMUM_LEAK_THRESHOLD:
        raise ConfigError(
            f"leak_threshold={value!r} is below the minimum; allowed: >= "
            f"{MINIMUM_LEAK_THRESHOLD:g} seconds (shorter holds are ordinary work), "
            "or None to turn leak detection off"
        )
    return number


class LeakDetector:
    """Finds holders past the threshold, counts them by site, and words the reports."""

    def __init__(self, pool: str, threshold: float | None, *, history: int = 50) -> None:
        self.pool = pool
        self.threshold = threshold
        self.reported = 0
        self.returned = 0
        self._by_site: dict[str, int] = {}
        self._lock = threading.Lock()
        self.recent: deque[dict[str, Any]] = deque(maxlen=history)

    def scan(self, holders: Iterable[Holder], now: float | None = None) -> list[Holder]:
        """Holders past the threshold not reported yet; marks and counts them."""
        threshold = self.threshold
        if threshold is None:
            return []
        now = time.monotonic() if now is None else now
        found = [h for h in holders if not h.leak_reported and now - h.taken >= threshold]
        self._count(found, "held past leak_threshold")
        return found

    def owner_scan(
        self, holders: Iterable[Holder], now: float | None = None
    ) -> list[tuple[Holder, float, str]]:
        """Holders whose owner ended :data:`OWNER_GRACE` ago or more, not reported yet:
        (holder, seconds since the owner ended, how it ended); marks and counts them."""
        now = time.monotonic() if now is None else now
        found: list[tuple[Holder, float, str]] = []
        for holder in holders:
            if holder.leak_reported:
                continue
            ended = holder.owner_ended(now)
            if ended is None or now - ended[0] < OWNER_GRACE:
                continue
            found.append((holder, max(0.0, now - ended[0]), ended[1]))
        self._count([h for h, _, _ in found], "owner ended")
        return found

    def _count(self, holders: list[Holder], kind: str) -> None:
        with self._lock:
            for holder in holders:
                holder.leak_reported = True
                holder.leak_kind = kind
                self.reported += 1
                site = holder.site
                if site not in self._by_site and len(self._by_site) >= MAX_SITE_LABELS:
                    site = "other"
                self._by_site[site] = self._by_site.get(site, 0) + 1

    def owner_report(
        self,
        holder: Holder,
        since_end: float,
        how: str,
        backend: Backend | None,
        note: str | None,
    ) -> str:
        """The WARNING for a connection its finished owner left checked out."""
        now = time.monotonic()
        lines = [
            f"connection leak suspected: pool {self.pool!r} checkout #{holder.number} is "
            f"still checked out {since_end:.1f} s after its owner ended: {how}; checked "
            f"out at {holder.site}, {holder.age(now):.1f} s ago"
        ]
        return self._finish(holder, lines, backend, note, now, owner_ended=how)

    def by_site(self) -> dict[str, int]:
        """Leaks reported so far, by checkout site."""
        with self._lock:
            return dict(self._by_site)

    def report(self, holder: Holder, backend: Backend | None, note: str | None) -> str:
        """The WARNING for a holder past the threshold (and keeps it for the dump)."""
        now = time.monotonic()
        age = holder.age(now)
        threshold = self.threshold if self.threshold is not None else 0.0
        lines = [
            f"connection leak suspected: pool {self.pool!r} checkout #{holder.number}: connection "
            f"held {age:.1f} s (leak_threshold {threshold:g} s) by {holder.owner}, "
            f"checked out at {holder.site}"
        ]
        return self._finish(holder, lines, backend, note, now)

    def _finish(
        self,
        holder: Holder,
        lines: list[str],
        backend: Backend | None,
        note: str | None,
        now: float,
        owner_ended: str | None = None,
    ) -> str:
        endpoint = getattr(holder.request, "endpoint", None)
        if endpoint:
            lines.append(f"  endpoint: {endpoint}")
        if holder.bulkhead:
            lines.append(f"  bulkhead: {holder.bulkhead}")
        for frame in holder.full_stack or holder.frames:
            lines.append(f"    at {format_frame(frame)}")
        lines.append(f"  server: {_server_line(holder, backend, note)}")
        entry = holder.as_dict(now)
        if owner_ended is not None:
            entry["owner_ended"] = owner_ended
        entry["server"] = backend.as_dict() if backend is not None else note
        entry["reported_at"] = time.time()
        self.recent.append(entry)
        return "\n".join(lines)

    def returned_report(self, holder: Holder, held: float) -> str:
        """The INFO when a connection reported as leaked comes back."""
        self.returned += 1
        for entry in self.recent:
            if entry.get("connection") == holder.number:
                entry["returned_after_s"] = round(held, 3)
        return (
            f"previously reported connection leak returned: pool {self.pool!r} checkout "
            f"#{holder.number} from {holder.site} ({holder.owner}) returned after {held:.1f} s"
        )

    def state(self) -> dict[str, Any]:
        """JSON-ready summary: threshold, counts, by site, recent reports."""
        return {
            "leak_threshold_s": self.threshold,
            "reported": self.reported,
            "returned": self.returned,
            "by_site": self.by_site(),
            "recent": list(self.recent),
        }


def _server_line(holder: Holder, backend: Backend | None, note: str | None) -> str:
    if backend is not None:
        return backend.describe()
    if note:
        return note
    if holder.backend_pid is None:
        return "no server view (not PostgreSQL, or the driver gave no backend pid)"
    return f"backend {holder.backend_pid} not found in pg_stat_activity"
