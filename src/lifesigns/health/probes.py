"""The probes: liveness, readiness, start-up and the full health report.

This module decides; it knows nothing of HTTP. The ASGI routes and the side port render
the same :class:`ProbeResult` values.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from ..errors import UnknownCheckError as UnknownCheckError  # re-exported: its old home
from .check import CheckResult
from .lifecycle import Lifecycle, Phase, StepState
from .registry import CheckRegistry
from .runner import CheckRunner
from .status import Status


@dataclass(frozen=True)
class NotAlive:
    """Why a liveness condition fails: a summary anyone may see, and the detail behind it.

    ``summary`` is served without the token (``"loop stalled 12.4 s"``); ``detail`` only
    with it (``"loop stalled 12.4 s in app/reports.py:88 build_report, time.sleep"``).
    """

    summary: str
    detail: str


LivenessCondition = Callable[[], NotAlive | None]
"""Returns why the process is not alive, or ``None`` while it is.

Called from any thread, possibly while the event loop is frozen: it must not block,
await or take a lock the loop thread may hold.
"""


@dataclass(frozen=True)
class ProbeResult:
    """What a probe found: a status, a one-line reason, and the check results behind it."""

    probe: str
    status: Status
    reason: str
    checks: tuple[CheckResult, ...] = ()
    excluded: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    at: float = field(default_factory=time.time)
    public_reason: str | None = None
    """A reason safe to show without the token (``starting``, ``draining``), if any."""

    @property
    def ok(self) -> bool:
        """Whether the probe answers with success."""
        return self.status.ok


class Probes:
    """Answers the four probes from the lifecycle, the checks and liveness conditions."""

    def __init__(
        self,
        registry: CheckRegistry,
        runner: CheckRunner,
        lifecycle: Lifecycle,
        budget: float,
    ) -> None:
        self._registry = registry
        self._runner = runner
        self._lifecycle = lifecycle
        self._budget = budget
        self._conditions: list[tuple[str, LivenessCondition]] = []
        self._last_readiness: ProbeResult | None = None
        self._lock = threading.Lock()

    @property
    def budget(self) -> float:
        """Seconds a probe may spend on checks before it answers regardless."""
        return self._budget

    @property
    def last_readiness(self) -> ProbeResult | None:
        """The most recent readiness answer (served by the side port while the loop is frozen)."""
        return self._last_readiness

    def add_liveness_condition(self, name: str, condition: LivenessCondition) -> None:
        """Make liveness fail whenever ``condition`` returns a reason."""
        with self._lock:
            self._conditions = [*self._conditions, (name, condition)]

    def liveness(self) -> ProbeResult:
        """Alive unless start-up failed or a liveness condition says otherwise.

        Never runs a check, never touches the database or the network, never awaits: a
        database outage must not make an orchestrator restart every replica.
        """
        lifecycle = self._lifecycle
        if lifecycle.phase is Phase.FAILED:
            return ProbeResult(
                "livez",
                Status.FAIL,
                f"start-up failed: {lifecycle.reason}",
                public_reason="start-up failed",
            )
        for name, condition in self._conditions:
            failing = condition()
            if failing is not None:
                return ProbeResult(
                    "livez",
                    Status.FAIL,
                    failing.detail,
                    notes=(name,),
                    public_reason=failing.summary,
                )
        return ProbeResult("livez", Status.PASS, "alive")

    def startup(self) -> ProbeResult:
        """Passes once start-up is complete; until then it reports each step's progress."""
        lifecycle = self._lifecycle
        phase = lifecycle.phase
        notes = tuple(step.line() for step in lifecycle.steps)
        if phase in (Phase.READY, Phase.DRAINING) or (
            phase is Phase.STOPPED and lifecycle.ready_at is not None
        ):
            return ProbeResult("startupz", Status.PASS, "start-up complete", notes=notes)
        if phase is Phase.FAILED:
            return ProbeResult(
                "startupz", Status.FAIL, f"start-up failed: {lifecycle.reason}", notes=notes
            )
        if phase is Phase.CREATED:
            return ProbeResult("startupz", Status.FAIL, _NOT_STARTED, public_reason="not started")
        waiting = lifecycle.waiting_on()
        if waiting:
            return ProbeResult(
                "startupz", Status.FAIL, f"starting: {waiting[0].line()}", notes=notes
            )
        return ProbeResult("startupz", Status.FAIL, "starting", notes=notes)

    async def readiness(
        self, exclude: Collection[str] = (), only: str | None = None
    ) -> ProbeResult:
        """Ready when start-up is done, the service is not draining and critical checks pass.

        Answers within the probe budget whatever the checks do; a check still running at
        the budget is reported as timed out.
        """
        self._check_names(exclude, only)
        gate = self._phase_gate()
        if gate is not None:
            result = ProbeResult(
                "readyz",
                Status.FAIL,
                gate,
                excluded=tuple(sorted(exclude)),
                public_reason=self._lifecycle.phase.value,
            )
            self._last_readiness = result
            return result
        checks = [c for c in self._registry.critical() if c.name not in exclude]
        if only is not None:
            checks = [c for c in checks if c.name == only]
        results = await self._runner.run_many(checks, self._budget)
        result = self._combine("readyz", results, exclude)
        if only is None:
            self._last_readiness = result
        return result

    async def health(self, exclude: Collection[str] = ()) -> ProbeResult:
        """Every check, critical or not, with the service's phase folded in."""
        self._check_names(exclude, None)
        results = await self._runner.run_many(
            [c for c in self._registry.all() if c.name not in exclude], self._budget
        )
        result = self._combine("health", results, exclude)
        gate = self._phase_gate()
        alive = self.liveness()
        if gate is not None or not alive.ok:
            reason = gate if gate is not None else alive.reason
            return ProbeResult(
                "health",
                Status.FAIL,
                reason,
                result.checks,
                result.excluded,
                public_reason=self._lifecycle.phase.value if gate is not None else "not alive",
            )
        return result

    def known_checks(self) -> list[str]:
        """Names of every registered check."""
        return [c.name for c in self._registry.all()]

    def _check_names(self, exclude: Collection[str], only: str | None) -> None:
        known = set(self.known_checks())
        unknown = {n for n in exclude if n not in known}
        if only is not None and only not in known:
            unknown.add(only)
        if unknown:
            raise UnknownCheckError(unknown, known)

    def _phase_gate(self) -> str | None:
        lifecycle = self._lifecycle
        phase = lifecycle.phase
        if phase is Phase.READY:
            return None
        if phase is Phase.CREATED:
            return _NOT_STARTED
        if phase is Phase.STARTING:
            waiting = [s for s in lifecycle.waiting_on() if s.state is StepState.WAITING]
            return f"starting: {waiting[0].line()}" if waiting else "starting"
        if phase is Phase.DRAINING:
            return f"draining: {lifecycle.reason or 'shutting down'}"
        if phase is Phase.FAILED:
            return f"start-up failed: {lifecycle.reason}"
        return "stopped"

    @staticmethod
    def _combine(probe: str, results: list[CheckResult], exclude: Collection[str]) -> ProbeResult:
        # A failing check that is not critical only warns: the service still works.
        status = Status.worst(
            [
                Status.WARN if r.status is Status.FAIL and not r.critical else r.status
                for r in results
            ]
        )
        failing = [r for r in results if r.status is not Status.PASS]
        if not failing:
            reason = "all checks pass" if results else "no checks registered"
        else:
            reason = "; ".join(f"{r.name} {r.summary}" for r in failing)
        return ProbeResult(probe, status, reason, tuple(results), tuple(sorted(exclude)))


_NOT_STARTED = (
    "lifesigns has not started: the lifespan never ran (pass lifespan=signs.lifespan, "
    "or signs.install(app), and run the server with lifespan on)"
)
