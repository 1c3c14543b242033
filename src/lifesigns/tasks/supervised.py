"""A long-running task under an OTP-style restart policy.

``permanent`` tasks are restarted whenever they end (returning counts: they are meant to
run for ever), ``transient`` ones only after an exception, ``temporary`` ones never.
Restarts wait an exponential back-off, reset once a run has lived longer than the
intensity window; more than ``max_restarts`` restarts within ``within`` seconds and the
task is given up and marked failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .metrics import TaskMetrics
from .runs import Outcome, ReadyGate, give_up, log_overrun, run_once
from .state import Restart, RestartIntensity, TaskPhase, TaskSpec, TaskState

logger = logging.getLogger("lifesigns.tasks")


class SupervisedRunner:
    """Drives one long-running task for the life of the service."""

    def __init__(
        self,
        spec: TaskSpec,
        state: TaskState,
        metrics: TaskMetrics,
        gate: ReadyGate,
        redact: Callable[[str], str],
    ) -> None:
        self.spec, self.state, self.metrics = spec, state, metrics
        self.gate, self.redact = gate, redact
        self.intensity = RestartIntensity(spec.max_restarts, spec.within)

    async def run(self) -> None:
        """Run, restart as the policy says, until cancelled, done or given up."""
        spec, state = self.spec, self.state
        if not await self.gate.wait_ready():
            state.phase = TaskPhase.STOPPED
            return
        loop = asyncio.get_running_loop()
        if spec.initial_delay:
            await asyncio.sleep(spec.initial_delay)
        while not self.gate.closed:
            result = await run_once(spec, state, self.metrics, self.redact)
            if result.outcome is Outcome.SUCCESS and spec.restart is not Restart.PERMANENT:
                state.phase = TaskPhase.DONE
                logger.info("task %s finished", spec.name)
                return
            if result.outcome is Outcome.SUCCESS:
                # A permanent task that returns has stopped doing its job: a crash.
                state.failures += 1
                state.failures_in_a_row += 1
                state.last_error = "returned, but a permanent task must run for ever"
                self.metrics.runs.labels(spec.name, Outcome.FAILURE.value).inc()
            if result.duration > spec.within:
                state.failures_in_a_row = 1  # it lived a full window: start back-off afresh
            if result.outcome is Outcome.OVERRUN:
                log_overrun(logger, spec, result)
                if result.straggler is not None:
                    await asyncio.wait({result.straggler})  # never two copies at once
            if spec.restart is Restart.TEMPORARY:
                logger.error(
                    "temporary task %s ended (%s) and is not restarted",
                    spec.name,
                    state.last_error,
                    exc_info=result.error,
                )
                state.phase = TaskPhase.FAILED
                state.failed_reason = f"temporary task ended: {state.last_error}"
                self.metrics.failed.labels(spec.name).set(1)
                return
            state.restarts += 1
            self.metrics.restarts.labels(spec.name).inc()
            if not self.intensity.allow(loop.time()):
                logger.error("task %s crashed", spec.name, exc_info=result.error)
                give_up(logger, spec, state, self.metrics, "kept crashing")
                return
            delay = spec.backoff_delay(max(state.failures_in_a_row, 1))
            logger.error(
                "task %s crashed (%s); restarting in %.2f s",
                spec.name,
                state.last_error,
                delay,
                exc_info=result.error,
            )
            state.phase = TaskPhase.BACKING_OFF
            await asyncio.sleep(delay)
        state.phase = TaskPhase.STOPPED
