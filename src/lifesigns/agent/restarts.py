"""How often the agent may replace a frozen worker before it gives up.

**Usage**::

    budget = RestartBudget(max_restarts=3, window=300, cooldown=5)
    if budget.allows(now):
        budget.record(now)      # then kill the worker
    elif budget.exhausted(now):
        ...                     # give up: liveness fails, the orchestrator takes over

At most ``max_restarts`` in any ``window`` seconds; after each one the next waits a
cool-down that doubles with every restart still inside the window (``cooldown``,
2 x ``cooldown``, 4 x ...), so a worker that freezes again at once is not killed in a
tight loop while the evidence piles up.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RestartBudget:
    """A sliding-window restart budget with exponential back-off."""

    max_restarts: int = 3
    window: float = 300.0
    cooldown: float = 5.0
    _times: deque[float] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts={self.max_restarts!r} must be >= 0")
        if self.window <= 0 or self.cooldown < 0:
            raise ValueError(
                f"window={self.window!r} must be > 0 and cooldown={self.cooldown!r} >= 0"
            )

    def _forget(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.window:
            self._times.popleft()

    def recent(self, now: float) -> int:
        """Restarts inside the window ending at ``now``."""
        self._forget(now)
        return len(self._times)

    def exhausted(self, now: float) -> bool:
        """Whether the window holds ``max_restarts`` restarts already."""
        return self.recent(now) >= self.max_restarts

    def next_allowed(self, now: float) -> float:
        """The earliest time the next restart may happen (``now`` or later)."""
        count = self.recent(now)
        if not count:
            return now
        return max(now, self._times[-1] + self.cooldown * 2.0 ** (count - 1))

    def allows(self, now: float) -> bool:
        """Whether a restart at ``now`` fits the budget and the back-off."""
        return not self.exhausted(now) and self.next_allowed(now) <= now

    def record(self, now: float) -> None:
        """Count a restart at ``now``."""
        self._forget(now)
        self._times.append(now)
