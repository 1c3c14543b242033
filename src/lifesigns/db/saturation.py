"""Readiness from pool saturation: move traffic away before requests time out queueing.

A pool is saturated while every connection is checked out (``pool_size +
max_overflow``) or a checkout is waiting for one. The check ``<engine>-pool`` passes with
the pool's figures until saturation has lasted ``saturated_after`` seconds, then fails
(``on_saturation="fail"``, the default: readiness turns false so the load balancer
sends new requests to other replicas) or warns (``"degrade"``: visible in ``/health``,
readiness untouched). It recovers by itself as soon as a connection is free with nobody
waiting.

Default ``saturated_after`` **10 s**: a third of SQLAlchemy's default 30 s
``pool_timeout``, so readiness turns while the oldest queued checkout still has time to
succeed, and long enough that a burst that fills the pool for a moment does not flap
readiness. When every replica saturates at once (the database itself is slow), failing
readiness everywhere sheds all traffic: choose ``"degrade"`` where that is worse.

The check reads state that pool events keep current; it never touches the database.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from .._config import seconds
from ..errors import ConfigError, Degraded, LifesignsError
from .holders import HolderRegistry

SaturationAction = Literal["fail", "degrade"]

DEFAULT_SATURATED_AFTER = 10.0


class PoolSaturated(LifesignsError):
    """The pool has been saturated for longer than ``saturated_after``."""


def saturation_action(value: object) -> SaturationAction:
    """Validate ``on_saturation``."""
    if value == "fail":
        return "fail"
    if value == "degrade":
        return "degrade"
    raise ConfigError(f"on_saturation={value!r} is not allowed; allowed: 'fail' or 'degrade'")


class SaturationCheck:
    """The ``<engine>-pool`` readiness check."""

    def __init__(
        self,
        registry: HolderRegistry,
        *,
        saturated_after: float = DEFAULT_SATURATED_AFTER,
        on_saturation: SaturationAction = "fail",
    ) -> None:
        self.registry = registry
        self.saturated_after = seconds("saturated_after", saturated_after, maximum=3600)
        self.on_saturation = saturation_action(on_saturation)

    def __repr__(self) -> str:
        return (
            f"SaturationCheck(saturated_after={self.saturated_after:g}, "
            f"on_saturation={self.on_saturation!r})"
        )

    def saturated_for(self, now: float | None = None) -> float:
        """Seconds the pool has been saturated without a break (0 when it is not)."""
        since = self.registry.saturated_since
        if since is None:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - since)

    async def __call__(self) -> dict[str, Any]:
        """Pass with the pool's figures; fail or warn once saturated long enough."""
        registry = self.registry
        out = registry.checked_out()
        capacity = registry.capacity
        waiting, oldest = registry.waiting()
        lasted = self.saturated_for()
        details: dict[str, Any] = {
            "checked_out": out,
            "capacity": capacity,
            "waiting": waiting,
            "saturated_for_s": round(lasted, 3),
        }
        if lasted >= self.saturated_after:
            message = (
                f"pool saturated for {lasted:.1f} s (limit {self.saturated_after:g} s): "
                f"{out} of {capacity} connections checked out, {waiting} checkouts waiting"
                + (f", the oldest for {oldest:.1f} s" if waiting else "")
            )
            if self.on_saturation == "fail":
                raise PoolSaturated(message)
            raise Degraded(message)
        return details
