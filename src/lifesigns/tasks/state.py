"""What a supervised task is (its spec) and how it has fared (its state).

The spec is fixed at registration. The state is written by the task's runner on the
event loop and read from any thread (health checks, dumps, the side port): each field is
replaced whole, so a reader sees old or new values, never a half-written one.
"""

from __future__ import annotations

import datetime as dt
import enum
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

TaskFunction = Callable[[], Awaitable[object]]
"""A supervised task: an ``async def`` taking no arguments."""

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,57}$")


class Restart(enum.StrEnum):
    """When a long-running task is restarted, as in OTP's child specs."""

    PERMANENT = "permanent"
    """Always: returning counts as a crash (the task is meant to run for ever)."""
    TRANSIENT = "transient"
    """Only after an exception: returning means the work is done."""
    TEMPORARY = "temporary"
    """Never: one run, whatever its outcome."""


class TaskPhase(enum.StrEnum):
    """Where a task is right now."""

    WAITING = "waiting"  # for the service to become ready
    IDLE = "idle"  # between runs
    RUNNING = "running"
    BACKING_OFF = "backing-off"  # after a failure, before the retry
    DONE = "done"  # a transient or temporary task that finished
    FAILED = "failed"  # restart intensity exceeded: given up
    STOPPED = "stopped"


@dataclass(frozen=True)
class TaskSpec:
    """A task as registered: what to run, how often, and what to do when it fails.

    ``every`` is ``None`` for a long-running task. Back-off after the n-th failure in a row
    is ``min(max_backoff, backoff * 2 ** (n - 1))``, give or take 10 %.
    """

    name: str
    func: TaskFunction
    every: float | None = None
    timeout: float | None = None
    jitter: float = 0.0
    initial_delay: float | None = None
    restart: Restart = Restart.PERMANENT
    max_restarts: int = 5
    within: float = 60.0
    backoff: float = 1.0
    max_backoff: float = 300.0
    critical: bool = False
    once: str = "container"  # periodic only: lifesigns.tasks.once
    engine: str | None = None  # the watched engine of once="cluster"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(
                f"task name {self.name!r} is not allowed; use 1-58 letters, digits, '_', '-' "
                "or '.', not starting with '-' or '.' (name=... overrides the function name)"
            )
        if not callable(self.func):
            raise ConfigError(f"task {self.name!r}: {self.func!r} is not callable")
        if isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int):
            raise ConfigError(f"task {self.name!r}: max_restarts={self.max_restarts!r} is not int")
        if self.max_restarts < 0:
            raise ConfigError(
                f"task {self.name!r}: max_restarts={self.max_restarts!r}; allowed: 0 or more"
            )

    @property
    def kind(self) -> str:
        """``periodic`` or ``supervised`` (long-running)."""
        return "periodic" if self.every is not None else "supervised"

    def backoff_delay(self, failures_in_a_row: int) -> float:
        """Seconds to wait before retrying after that many failures in a row."""
        exponent = min(max(failures_in_a_row - 1, 0), 30)
        delay = min(self.max_backoff, self.backoff * 2.0**exponent)
        return delay * random.uniform(0.9, 1.1)  # decorrelates replicas failing together


class RestartIntensity:
    """OTP's restart intensity: at most ``max_restarts`` restarts within ``within`` seconds."""

    def __init__(self, max_restarts: int, within: float) -> None:
        self.max_restarts = max_restarts
        self.within = within
        self._times: deque[float] = deque(maxlen=max_restarts + 1)

    def allow(self, now: float) -> bool:
        """Record a restart at ``now``; ``False`` when that makes too many in the window."""
        self._forget(now)
        self._times.append(now)
        return len(self._times) <= self.max_restarts

    def recent(self, now: float) -> int:
        """Restarts in the window ending ``now``."""
        self._forget(now)
        return len(self._times)

    def _forget(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.within:
            self._times.popleft()


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return (
        dt.datetime.fromtimestamp(at, tz=dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class TaskState:
    """Counters and times of one task, for health, dumps and metrics.

    Times are wall-clock (``time.time()``) so they mean something to a reader.
    """

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.phase = TaskPhase.WAITING
        self.runs = 0
        self.successes = 0
        self.failures = 0
        self.overruns = 0
        self.skipped = 0
        self.restarts = 0
        self.failures_in_a_row = 0
        self.last_start: float | None = None
        self.last_end: float | None = None
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.stuck_at: str | None = None
        self.next_run: float | None = None
        self.failed_reason: str | None = None
        self.not_leading = 0
        self.leader: Callable[[], dict[str, Any]] | None = None
        """Who runs this periodic task (``describe`` of its ``Leader``), set at start."""

    def summary(self) -> str:
        """One line for a health report or a log record."""
        spec = self.spec
        parts = [
            f"{self.phase.value}",
            f"runs {self.runs}",
            f"failures {self.failures}",
            f"overruns {self.overruns}",
        ]
        if self.skipped:
            parts.append(f"skipped {self.skipped}")
        if self.last_success is not None:
            parts.append(f"last success {time.time() - self.last_success:.1f} s ago")
        if self.next_run is not None and self.phase not in (TaskPhase.FAILED, TaskPhase.DONE):
            parts.append(f"next run in {max(0.0, self.next_run - time.time()):.1f} s")
        if self.last_error:
            parts.append(f"last error: {self.last_error}")
        return f"{spec.kind} task {spec.name}: " + "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """The state as JSON-ready data."""
        spec = self.spec
        return {
            "name": spec.name,
            "kind": spec.kind,
            "phase": self.phase.value,
            "critical": spec.critical,
            "every_s": spec.every,
            "timeout_s": spec.timeout,
            "restart": None if spec.every is not None else spec.restart.value,
            "intensity": f"{spec.max_restarts} restarts in {spec.within:g} s",
            "runs": self.runs,
            "successes": self.successes,
            "failures": self.failures,
            "overruns": self.overruns,
            "skipped": self.skipped,
            "restarts": self.restarts,
            "failures_in_a_row": self.failures_in_a_row,
            "last_start": _iso(self.last_start),
            "last_success": _iso(self.last_success),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "stuck_at": self.stuck_at,
            "next_run": _iso(self.next_run),
            "failed_reason": self.failed_reason,
            "once": None if spec.every is None else spec.once,
            "not_leading": self.not_leading,
            "leader": self.leader() if self.leader is not None else None,
        }
