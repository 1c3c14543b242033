"""Where a service is in its life, and how far its start-up has come.

Written from the event loop, read from any thread (the side port answers liveness from
its own thread): every update replaces whole immutable values, so a reader never sees a
half-written state.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, replace


class Phase(enum.StrEnum):
    """The life of a service, in order."""

    CREATED = "created"
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


_ONE_WAY = frozenset({Phase.DRAINING, Phase.STOPPED, Phase.FAILED})
"""Phases left only for ``STOPPED``."""


class StepState(enum.StrEnum):
    """Where one start-up step is."""

    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class StartupStep:
    """One thing start-up waits for: a dependency to answer, or a step of the app's own."""

    name: str
    description: str
    state: StepState = StepState.WAITING
    attempts: int = 0
    last_error: str | None = None
    next_attempt_in: float | None = None
    started_at: float = 0.0
    finished_at: float | None = None
    deadline: float | None = None

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the step began (until it finished, if it has)."""
        end = self.finished_at if self.finished_at is not None else (now or time.monotonic())
        return max(0.0, end - self.started_at)

    def line(self) -> str:
        """A one-line account: ``waiting for database ... (attempt 3, 2.1 s; last error: ...)``."""
        if self.state is StepState.DONE:
            tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
            return f"{self.description}: done in {self.elapsed():.1f} s{tries}"
        parts = [
            f"attempt {self.attempts}" if self.attempts else "not tried yet",
            f"{self.elapsed():.1f} s",
        ]
        if self.deadline is not None:
            parts.append(f"deadline {self.deadline:g} s")
        if self.next_attempt_in is not None and self.state is StepState.WAITING:
            parts.append(f"next try in {self.next_attempt_in:.2f} s")
        if self.last_error:
            parts.append(f"last error: {self.last_error}")
        word = "failed" if self.state is StepState.FAILED else "waiting"
        return f"{self.description}: {word} ({'; '.join(parts)})"


class Lifecycle:
    """The phase of the service and the progress of its start-up steps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phase = Phase.CREATED
        self._reason: str | None = None
        self._steps: dict[str, StartupStep] = {}
        self._started_at: float | None = None
        self._ready_at: float | None = None

    @property
    def phase(self) -> Phase:
        """The current phase."""
        return self._phase

    @property
    def reason(self) -> str | None:
        """Why the phase is what it is, when that needs saying (start-up failure, drain)."""
        return self._reason

    @property
    def steps(self) -> tuple[StartupStep, ...]:
        """The start-up steps, in the order they were added."""
        return tuple(self._steps.values())

    @property
    def started_at(self) -> float | None:
        """``time.monotonic()`` when start-up began."""
        return self._started_at

    @property
    def ready_at(self) -> float | None:
        """``time.monotonic()`` when the service first became ready."""
        return self._ready_at

    def begin(self) -> None:
        """Start-up begins: forget any earlier run (a lifespan may run more than once in tests)."""
        with self._lock:
            self._steps = {}
            self._phase, self._reason = Phase.STARTING, None
            self._started_at, self._ready_at = time.monotonic(), None

    def add_step(self, name: str, description: str, deadline: float | None = None) -> None:
        """Announce a step start-up will wait for."""
        with self._lock:
            self._steps[name] = StartupStep(
                name=name, description=description, started_at=time.monotonic(), deadline=deadline
            )

    def update_step(self, name: str, **changes: object) -> None:
        """Record progress of a step (attempts, last error, next delay, state)."""
        with self._lock:
            step = self._steps[name]
            if changes.get("state") in (StepState.DONE, StepState.FAILED):
                changes.setdefault("finished_at", time.monotonic())
                changes.setdefault("next_attempt_in", None)
            self._steps[name] = replace(step, **changes)  # type: ignore[arg-type]

    def move_to(self, phase: Phase, reason: str | None = None) -> bool:
        """Enter ``phase``, unless the service is past it; returns whether it moved.

        A ``FAILED`` or ``STOPPED`` service never comes back by itself, and a ``DRAINING``
        one only stops: a start-up that finishes after SIGTERM must not put it back in
        rotation.
        """
        with self._lock:
            current = self._phase
            if phase is not Phase.STOPPED and current in _ONE_WAY:
                return False
            self._phase, self._reason = phase, reason
            if phase is Phase.READY and self._ready_at is None:
                self._ready_at = time.monotonic()
            return True

    def waiting_on(self) -> list[StartupStep]:
        """The steps not yet done."""
        return [s for s in self._steps.values() if s.state is not StepState.DONE]
