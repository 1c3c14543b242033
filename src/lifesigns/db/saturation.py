"""Pool pressure, judged by what users feel: checkout waits and checkout timeouts.

A full pool is not an outage. Fifty clients on a 5 + 10 pool keep every connection
checked out and a queue of checkouts waiting, and every request still succeeds in a few
hundred milliseconds (issue 10). What users feel is the *wait* for a connection, and a
checkout that waits ``pool_timeout`` in vain and fails. So the ``<engine>-pool`` check
reads, over the last :data:`WINDOW` seconds, the waits of the checkouts that got a
connection, the age of the oldest checkout waiting now, and the checkouts that timed
out, each set against the pool's ``pool_timeout``:

* **pass** while checkouts get a connection at once (p95 wait below ``wait_warn``,
  0.1 s by default: a tenth of a second in a queue is felt) and none timed out;
* **warn** (``Degraded``) when they queue or time out, with the figures: the default
  (``on_saturation="warn"``), visible in ``/health`` and never in readiness;
* **fail** only with ``on_saturation="fail"``: once the pool has been saturated (every
  connection checked out, or a checkout waiting) for ``saturated_after`` seconds *and*
  users are hurt in that stretch (a checkout timed out, or the oldest waiting one is
  past half its ``pool_timeout``). Readiness then turns false, so that a load balancer
  sends new requests to other replicas.

**The risk of ``"fail"``**: when every replica is under the same pressure (the database
itself is slow, or the fleet is simply busy), failing readiness everywhere sends the
traffic nowhere: a slow service becomes an unavailable one. Choose it only where other
replicas have room the saturated one lacks.

Default ``saturated_after`` **10 s**: a third of SQLAlchemy's default 30 s
``pool_timeout``, long enough that a burst does not flap readiness. The check reads
state that pool events keep current; it never touches the database.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from .._config import seconds
from ..errors import ConfigError, Degraded, LifesignsError
from .holders import HolderRegistry

SaturationAction = Literal["warn", "degrade", "fail"]
"""``"degrade"`` is the older name of ``"warn"`` and means the same."""

DEFAULT_SATURATED_AFTER = 10.0
DEFAULT_WAIT_WARN = 0.1
WINDOW = 30.0
"""Seconds of checkouts the check judges by."""
MIN_SAMPLES = 20
"""Checkouts in the window before their p95 wait is judged."""


class PoolSaturated(LifesignsError):
    """Checkouts have been failing or near their ``pool_timeout`` for ``saturated_after``."""


def saturation_action(value: object) -> SaturationAction:
    """Validate ``on_saturation`` (``"degrade"`` is an older name of ``"warn"``)."""
    if value == "warn":
        return "warn"
    if value == "degrade":
        return "degrade"
    if value == "fail":
        return "fail"
    raise ConfigError(
        f"on_saturation={value!r} is not allowed; allowed: 'warn' (the default) or 'fail'"
    )


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(0.95 * len(ordered)) - 1))]


class SaturationCheck:
    """The ``<engine>-pool`` check: pressure as users feel it (see the module)."""

    def __init__(
        self,
        registry: HolderRegistry,
        *,
        saturated_after: float = DEFAULT_SATURATED_AFTER,
        on_saturation: SaturationAction = "warn",
        wait_warn: float = DEFAULT_WAIT_WARN,
    ) -> None:
        self.registry = registry
        self.saturated_after = seconds("saturated_after", saturated_after, maximum=3600)
        self.on_saturation = saturation_action(on_saturation)
        self.wait_warn = seconds("wait_warn", wait_warn, maximum=3600)

    def __repr__(self) -> str:
        return (
            f"SaturationCheck(saturated_after={self.saturated_after:g}, "
            f"on_saturation={self.on_saturation!r}, wait_warn={self.wait_warn:g})"
        )

    @property
    def critical(self) -> bool:
        """Whether readiness runs it: only when it may fail."""
        return self.on_saturation == "fail"

    def saturated_for(self, now: float | None = None) -> float:
        """Seconds the pool has been saturated without a break (0 when it is not)."""
        since = self.registry.saturated_since
        if since is None:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - since)

    def figures(self, now: float | None = None) -> dict[str, Any]:
        """The pressure figures over the window, JSON-ready."""
        registry = self.registry
        now = time.monotonic() if now is None else now
        since = now - WINDOW
        samples = [(t, w) for t, w in list(registry.recent_waits) if t >= since]
        waits = [w for _, w in samples]
        # The ring keeps the latest checkouts only: under heavy traffic it spans less
        # than the window, and the figures say over how long they were measured.
        full = len(registry.recent_waits) == registry.recent_waits.maxlen
        span = now - samples[0][0] if samples and full else WINDOW
        timeouts = sum(1 for t in list(registry.timeout_times) if t >= since)
        waiting, oldest = registry.waiting()
        p95 = _p95(waits)
        return {
            "checked_out": registry.checked_out(),
            "capacity": registry.capacity,
            "waiting": waiting,
            "oldest_wait_s": round(oldest, 3),
            "pool_timeout_s": registry.pool_timeout,
            "window_s": round(min(WINDOW, span), 1),
            "checkouts_in_window": len(waits),
            "wait_p95_s": None if p95 is None else round(p95, 3),
            "wait_max_s": round(max(waits), 3) if waits else None,
            "timeouts_in_window": timeouts,
            "saturated_for_s": round(self.saturated_for(now), 3),
            "wait_warn_s": self.wait_warn,
        }

    def _hurting(self, figures: dict[str, Any], now: float) -> bool:
        """Users are failing, or about to, in this stretch of saturation."""
        since = self.registry.saturated_since
        if since is None:
            return False
        if any(t >= since - 0.001 for t in list(self.registry.timeout_times)):
            return True
        limit = figures["pool_timeout_s"]
        return bool(limit) and figures["oldest_wait_s"] >= limit / 2

    async def __call__(self) -> dict[str, Any]:
        """Pass with the figures; warn under pressure; fail (opt-in) when users are hurt."""
        now = time.monotonic()
        f = self.figures(now)
        lasted = f["saturated_for_s"]
        if (
            self.on_saturation == "fail"
            and lasted >= self.saturated_after
            and self._hurting(f, now)
        ):
            raise PoolSaturated(
                f"pool saturated for {lasted:.1f} s (limit {self.saturated_after:g} s) and "
                f"checkouts fail: {_describe(f)}"
            )
        # A handful of checkouts says nothing (the first ones open their connections).
        judged = f["wait_p95_s"] if f["checkouts_in_window"] >= MIN_SAMPLES else None
        if (
            f["timeouts_in_window"]
            or f["oldest_wait_s"] >= self.wait_warn
            or (judged is not None and judged >= self.wait_warn)
        ):
            raise Degraded(f"pool under pressure: {_describe(f)}")
        return f


def _describe(f: dict[str, Any]) -> str:
    limit = f["pool_timeout_s"]
    of_limit = f" of pool_timeout {limit:g} s" if limit else ""
    parts = [f"{f['checked_out']} of {f['capacity']} connections checked out"]
    if f["waiting"]:
        parts.append(f"{f['waiting']} checkouts waiting, the oldest for {f['oldest_wait_s']:.2f} s")
    if f["checkouts_in_window"]:
        parts.append(
            f"last {f['window_s']:g} s: {f['checkouts_in_window']} checkouts, wait p95 "
            f"{f['wait_p95_s']:.3f} s, max {f['wait_max_s']:.3f} s{of_limit}"
        )
    parts.append(f"{f['timeouts_in_window']} timed out")
    return "; ".join(parts)
