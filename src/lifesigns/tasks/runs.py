"""One run of a task under its timeout, and the gate that holds runs until the service is ready."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..health.lifecycle import Lifecycle, Phase
from .metrics import TaskMetrics
from .stack import StackLine, await_chain, innermost_own_frame
from .state import TaskPhase, TaskSpec, TaskState

CANCEL_GRACE = 1.0
"""Seconds a cancelled run gets to unwind before it is reported as refusing to stop."""

_GATE_POLL = 0.05


class Outcome(enum.Enum):
    """How a run ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    OVERRUN = "overrun"


@dataclass
class RunResult:
    """What one run did: its outcome, the exception, or where it was stuck at its timeout."""

    outcome: Outcome
    duration: float
    error: BaseException | None = None
    chain: list[StackLine] = field(default_factory=list)
    straggler: asyncio.Task[Any] | None = None
    """The run's task when it would not stop after cancellation (it may still be running)."""


async def run_once(
    spec: TaskSpec,
    state: TaskState,
    metrics: TaskMetrics,
    redact: Callable[[str], str],
) -> RunResult:
    """Run ``spec.func`` once in its own task, cancelling it at ``spec.timeout``.

    Before cancelling an overrun, captures the await chain it is stuck in. If the
    supervisor itself is cancelled (shutdown), the run is cancelled too and waited for
    at most :data:`CANCEL_GRACE` seconds before the cancellation propagates.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    state.phase, state.last_start, state.runs = TaskPhase.RUNNING, time.time(), state.runs + 1
    job = loop.create_task(_call(spec), name=f"lifesigns task {spec.name}")
    try:
        done, _ = await asyncio.wait({job}, timeout=spec.timeout)
    except asyncio.CancelledError:
        job.cancel()
        await _settle(job)
        raise
    duration = loop.time() - started
    metrics.duration.labels(spec.name).observe(duration)
    state.last_end = time.time()
    if not done:
        chain = await_chain(job)
        job.cancel()
        stopped = await _settle(job)
        state.overruns += 1
        stuck = innermost_own_frame(chain)
        state.stuck_at = str(stuck) if stuck else None
        state.last_error = redact(f"timed out after {spec.timeout:g} s")
        state.last_error_at = time.time()
        metrics.runs.labels(spec.name, Outcome.OVERRUN.value).inc()
        return RunResult(Outcome.OVERRUN, duration, chain=chain, straggler=None if stopped else job)
    error = _error_of(job)
    if error is None:
        state.successes += 1
        state.failures_in_a_row = 0
        state.last_success = time.time()
        metrics.runs.labels(spec.name, Outcome.SUCCESS.value).inc()
        metrics.last_success.labels(spec.name).set(state.last_success)
        return RunResult(Outcome.SUCCESS, duration)
    state.failures += 1
    state.failures_in_a_row += 1
    state.last_error = redact(f"{type(error).__name__}: {error}")
    state.last_error_at = time.time()
    metrics.runs.labels(spec.name, Outcome.FAILURE.value).inc()
    return RunResult(Outcome.FAILURE, duration, error=error)


async def _call(spec: TaskSpec) -> object:
    return await spec.func()


def _error_of(job: asyncio.Task[Any]) -> BaseException | None:
    if job.cancelled():
        # Nobody but the task itself cancelled it: report that rather than treat it as done.
        return asyncio.CancelledError("the task was cancelled from inside")
    return job.exception()


async def _settle(job: asyncio.Task[Any]) -> bool:
    """Wait up to :data:`CANCEL_GRACE` for a cancelled job to end; whether it did."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait({job}, timeout=CANCEL_GRACE)
    if job.done() and not job.cancelled():
        job.exception()  # retrieved, so asyncio does not log "exception was never retrieved"
    return job.done()


class ReadyGate:
    """Holds a task's first run until start-up is done; says when to stop scheduling.

    Tasks start only once the service is ready, so a task that needs the database does
    not burn its restart intensity while start-up still waits for the database.
    """

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    async def wait_ready(self) -> bool:
        """Wait until ready; ``False`` when start-up failed or the service stops first."""
        while True:
            phase = self.lifecycle.phase
            if phase is Phase.READY:
                return True
            if phase in (Phase.FAILED, Phase.STOPPED, Phase.DRAINING):
                return False
            await asyncio.sleep(_GATE_POLL)

    @property
    def closed(self) -> bool:
        """Whether the service is draining or stopped: no new runs start."""
        return self.lifecycle.phase in (Phase.DRAINING, Phase.STOPPED, Phase.FAILED)


def log_overrun(logger: Any, spec: TaskSpec, result: RunResult) -> None:
    """Log an overrun with the frame it was stuck in and its whole await chain."""
    from .stack import format_chain

    stuck = innermost_own_frame(result.chain)
    refused = (
        "; it did not stop within 1 s of being cancelled and is still running"
        if result.straggler is not None
        else ""
    )
    logger.error(
        "task %s timed out after %g s and was cancelled; it was stuck at %s%s\n%s",
        spec.name,
        spec.timeout,
        stuck or "(unknown)",
        refused,
        format_chain(result.chain),
    )


def give_up(logger: Any, spec: TaskSpec, state: TaskState, metrics: TaskMetrics, why: str) -> None:
    """Mark a task failed: restart intensity exceeded (OTP would escalate to its parent)."""
    state.phase = TaskPhase.FAILED
    state.next_run = None
    state.failed_reason = (
        f"{why}: more than {spec.max_restarts} restarts within {spec.within:g} s; "
        f"last error: {state.last_error}"
    )
    metrics.failed.labels(spec.name).set(1)
    effect = "readiness fails" if spec.critical else "health warns"
    logger.error(
        "task %s failed and will not be restarted (%s): %s", spec.name, effect, state.failed_reason
    )
