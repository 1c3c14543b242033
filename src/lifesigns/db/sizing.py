"""Sizing advice from measured figures, not guesswork (seeds 000 and 002 resized by hand).

Little's law: connections in use = checkout rate x hold time. The advisor takes the
busiest minute's checkout rate and the p95 hold time of recent checkouts, so the
suggestion covers the slow tail of the busiest time seen rather than the average:

    suggested = ceil(rate_busiest_minute x hold_p95) + 1    (at least 2)

Only from enough samples (:data:`MIN_CHECKOUTS` over :data:`MIN_OBSERVED` seconds: no
"2 would do" after two checkouts), and never below the peak seen (a pool that was all
in use, with checkouts queued behind it, is not too big), nor below the pool's capacity
once a checkout timed out.

It also reports the peak concurrency seen and the checkout waits, and checks the fleet
against the server: ``replicas x (pool_size + max_overflow)`` must fit in
``max_connections - superuser_reserved_connections - reserved_connections`` (read from
``pg_settings`` over a side connection, never in a probe). Leaks come first in the
advice: when connections are held past ``leak_threshold``, a bigger pool only delays the
next exhaustion.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..errors import Degraded
from .holders import HolderRegistry

RATE_WINDOW = 60.0
"""Seconds over which the checkout rate is measured; the busiest such window counts."""

MIN_CHECKOUTS = 200
"""Checkouts seen before any capacity is suggested: two checkouts say nothing."""

MIN_OBSERVED = RATE_WINDOW
"""Seconds of observation before any capacity is suggested (one full rate window)."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0 to 1) of ``values`` by nearest rank, or ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


class SizingAdvisor:
    """Keeps checkout-rate samples and words the advice for one pool."""

    def __init__(
        self,
        registry: HolderRegistry,
        *,
        replicas: int | None = None,
        leaks: Any = None,
    ) -> None:
        self.registry = registry
        self.replicas = replicas
        self.leaks = leaks
        self.samples: deque[tuple[float, int]] = deque(maxlen=4096)
        self.busiest_rate = 0.0
        self.limits: dict[str, int] | None = None
        self.limits_note: str | None = None
        self.limits_at: float | None = None
        self.started: float | None = None

    def sample(self, now: float | None = None) -> None:
        """Record the checkout count now (each forensics tick)."""
        now = time.monotonic() if now is None else now
        if self.started is None:
            self.started = now
        count = self.registry.checkouts
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        first_t, first_n = self.samples[0]
        if now - first_t >= min(RATE_WINDOW, 5.0):
            rate = (count - first_n) / (now - first_t)
            self.busiest_rate = max(self.busiest_rate, rate)

    def set_limits(self, limits: dict[str, int] | None, note: str | None = None) -> None:
        """Record the server's connection limits (or why they are unknown)."""
        self.limits, self.limits_note, self.limits_at = limits, note, time.monotonic()

    def advice(self) -> dict[str, Any]:
        """The figures and the advice, JSON-ready."""
        registry = self.registry
        holds = list(registry.recent_holds)
        waits = [w for _, w in list(registry.recent_waits)]
        hold_p95 = percentile(holds, 0.95)
        hold_mean = sum(holds) / len(holds) if holds else None
        wait_p95 = percentile(waits, 0.95)
        capacity = registry.capacity
        rate = self.busiest_rate
        notes: list[str] = []
        observed = 0.0 if self.started is None else max(0.0, time.monotonic() - self.started)
        enough = registry.checkouts >= MIN_CHECKOUTS and observed >= MIN_OBSERVED
        suggested = None
        if enough and hold_p95 is not None and rate > 0:
            suggested = max(2, math.ceil(rate * hold_p95) + 1)
            # Never below what was in use at once (at the peak every connection may have
            # been taken, with checkouts queued behind), nor below the pool once a
            # checkout timed out: the busiest minute's average does not see those.
            floor = max(registry.peak, capacity or 0) if registry.timeouts else registry.peak
            suggested = max(suggested, floor)
        elif not enough:
            notes.append(
                f"no sizing advice yet: {registry.checkouts} checkouts over {observed:.0f} s "
                f"seen; it needs {MIN_CHECKOUTS} over {MIN_OBSERVED:.0f} s"
            )
        leaks = getattr(self.leaks, "reported", 0)
        if leaks:
            notes.append(
                f"{leaks} connections leaked (held past their owner or leak_threshold): "
                "fix those first; "
                "a bigger pool only delays the next exhaustion"
            )
        if registry.timeouts and suggested is not None and capacity and suggested > capacity:
            notes.append(
                f"{registry.timeouts} checkouts timed out and the measured load needs about "
                f"{suggested} connections; the pool allows {capacity}"
            )
        elif registry.timeouts:
            notes.append(
                f"{registry.timeouts} checkouts timed out although the measured load fits: "
                "look for long holders in the exhaustion snapshots"
            )
        if (
            suggested is not None
            and capacity
            and not registry.timeouts
            and max(suggested, registry.peak) * 2 <= capacity
        ):
            notes.append(
                f"the pool allows {capacity} connections but at most {registry.peak} were "
                f"in use at once; {max(suggested, registry.peak)} would do"
            )
        fleet = self._fleet(capacity, notes)
        return {
            "peak_checked_out": registry.peak,
            "capacity": capacity,
            "checkouts": registry.checkouts,
            "busiest_rate_per_s": round(rate, 3),
            "hold_mean_s": None if hold_mean is None else round(hold_mean, 4),
            "hold_p95_s": None if hold_p95 is None else round(hold_p95, 4),
            "wait_p95_s": None if wait_p95 is None else round(wait_p95, 4),
            "checkout_timeouts": registry.timeouts,
            "suggested_capacity": suggested,
            "observed_s": round(observed, 1),
            "rule": "ceil(busiest checkouts/s x p95 hold s) + 1 (Little's law)",
            "server": fleet,
            "notes": notes,
        }

    def _fleet(self, capacity: int | None, notes: list[str]) -> dict[str, Any]:
        limits = self.limits
        if not limits or "max_connections" not in limits:
            return {"known": False, "note": self.limits_note}
        usable = (
            limits["max_connections"]
            - limits.get("superuser_reserved_connections", 0)
            - limits.get("reserved_connections", 0)
        )
        fleet: dict[str, Any] = {"known": True, **limits, "usable": usable}
        if capacity:
            fleet["replicas_that_fit"] = usable // capacity
            if self.replicas is not None:
                demand = self.replicas * capacity
                fleet["replicas"] = self.replicas
                fleet["fleet_capacity"] = demand
                fleet["fits"] = demand <= usable
                if demand > usable:
                    notes.append(
                        f"{self.replicas} replicas x {capacity} connections = {demand}, more "
                        f"than the {usable} the server allows (max_connections "
                        f"{limits['max_connections']} minus reserved slots)"
                    )
        return fleet

    async def check(self) -> dict[str, Any]:
        """The non-critical ``<engine>-pool-sizing`` check: warns when the fleet does not
        fit in the server's ``max_connections``."""
        advice = self.advice()
        if advice["server"].get("fits") is False:
            raise Degraded(advice["notes"][-1])
        return advice
