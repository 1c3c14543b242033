"""The schedule of a periodic task: fixed rate, jitter, timeout, back-off, no overlap.

Runs are due at ``anchor + k * every`` (plus up to ``jitter`` seconds each), so the
schedule does not drift with run durations. A slot that came due while a run was still
going is skipped and counted, unless it is late by less than the misfire grace
(a tenth of the period, at most 1 s), as APScheduler does. After a failure the task is
retried with exponential back-off instead of waiting for its next slot; after an
overrun it keeps its schedule. Every failure and overrun is a restart for the purpose
of restart intensity.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable

from .metrics import TaskMetrics
from .once import Everyone, Leader
from .runs import Outcome, ReadyGate, give_up, log_overrun, run_once
from .state import RestartIntensity, TaskPhase, TaskSpec, TaskState

logger = logging.getLogger("lifesigns.tasks")


class PeriodicRunner:
    """Drives one periodic task for the life of the service."""

    def __init__(
        self,
        spec: TaskSpec,
        state: TaskState,
        metrics: TaskMetrics,
        gate: ReadyGate,
        redact: Callable[[str], str],
        leader: Leader | None = None,
    ) -> None:
        if spec.every is None:
            raise ValueError("a periodic task needs every=...")
        self.spec, self.state, self.metrics = spec, state, metrics
        self.gate, self.redact = gate, redact
        self.every: float = spec.every
        self.intensity = RestartIntensity(spec.max_restarts, spec.within)
        self.misfire_grace = min(self.every * 0.1, 1.0)
        self.leader: Leader = leader if leader is not None else Everyone()

    async def run(self) -> None:
        """Run the schedule until cancelled, given up, or the service drains."""
        if not await self.gate.wait_ready():
            self.state.phase = TaskPhase.STOPPED
            return
        loop = asyncio.get_running_loop()
        first = self.spec.initial_delay if self.spec.initial_delay is not None else self.every
        anchor = loop.time() + first
        slot = 0
        due = self._jittered(anchor)
        straggler: asyncio.Task[object] | None = None
        retrying = False
        while True:
            self.state.phase = (
                TaskPhase.BACKING_OFF if self.state.failures_in_a_row else TaskPhase.IDLE
            )
            self.state.next_run = time.time() + max(0.0, due - loop.time())
            await asyncio.sleep(max(0.0, due - loop.time()))
            if self.gate.closed:
                self.state.phase, self.state.next_run = TaskPhase.STOPPED, None
                return
            if straggler is not None and not straggler.done():
                # The last run ignored its cancellation: never start a second beside it.
                self._skip(1)
                slot += 1
                due = self._jittered(anchor + slot * self.every)
                continue
            straggler = None
            if not await self.leader.lead():
                # Another process runs this slot (once="container"/"cluster"): not a skip.
                self.state.not_leading += 1
                self.metrics.runs.labels(self.spec.name, "not_leading").inc()
                now = loop.time()
                slot = max(slot + 1, math.ceil((now - anchor - self.misfire_grace) / self.every))
                due = self._jittered(anchor + slot * self.every)
                continue
            result = await run_once(self.spec, self.state, self.metrics, self.redact)
            now = loop.time()
            if result.outcome is Outcome.SUCCESS:
                if retrying:  # back on the schedule after back-off; slots missed meanwhile
                    slot, retrying = math.ceil((now - anchor) / self.every), False
                else:
                    slot = self._next_slot(anchor, slot, now)
                due = self._jittered(anchor + slot * self.every)
                continue
            self.state.restarts += 1
            self.metrics.restarts.labels(self.spec.name).inc()
            if result.outcome is Outcome.OVERRUN:
                log_overrun(logger, self.spec, result)
                straggler = result.straggler
            allowed = self.intensity.allow(now)
            if result.outcome is Outcome.FAILURE:
                delay = self.spec.backoff_delay(self.state.failures_in_a_row)
                if allowed:
                    logger.error(
                        "task %s failed (%d in a row); retrying in %.2f s",
                        self.spec.name,
                        self.state.failures_in_a_row,
                        delay,
                        exc_info=result.error,
                    )
                else:
                    logger.error("task %s failed", self.spec.name, exc_info=result.error)
                due, retrying = now + delay, True
            elif retrying:
                slot, retrying = math.ceil((now - anchor) / self.every), False
                due = self._jittered(anchor + slot * self.every)
            else:
                slot = self._next_slot(anchor, slot, now)
                due = self._jittered(anchor + slot * self.every)
            if not allowed:
                why = "timed out" if result.outcome is Outcome.OVERRUN else "kept failing"
                give_up(logger, self.spec, self.state, self.metrics, why)
                return

    def _next_slot(self, anchor: float, slot: int, now: float) -> int:
        """The slot to run next after a run for ``slot`` ended at ``now``; counts skips."""
        nxt = slot + 1
        if now > anchor + nxt * self.every + self.misfire_grace:
            # Slots that came due while the run was going are skipped, not run late.
            first_future = math.ceil((now - anchor) / self.every)
            self._skip(first_future - nxt)
            nxt = first_future
        return max(nxt, math.ceil((now - anchor - self.misfire_grace) / self.every))

    def _skip(self, count: int) -> None:
        if count <= 0:
            return
        self.state.skipped += count
        self.metrics.runs.labels(self.spec.name, "skipped").inc(count)
        logger.warning(
            "task %s skipped %d run(s): the previous run was still going when they were due",
            self.spec.name,
            count,
        )

    def _jittered(self, at: float) -> float:
        return at + random.uniform(0.0, self.spec.jitter) if self.spec.jitter else at
