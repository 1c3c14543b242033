"""Waiting for dependencies at start-up, with back-off and a deadline.

Start-up never crashes because a database is slow to come up (seed 004): each dependency
is retried with exponential back-off and full jitter (tenacity's
``wait_random_exponential``) until its deadline, every attempt is logged on one line with
the next delay, and ``/startupz`` shows the progress while it lasts. The driver's
message is logged in full (WARNING) on the first failure and whenever it changes; the
attempts in between say "the same error" (INFO), so a database that is down for minutes
does not fill the log with one identical warning a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_before_delay,
    wait_random_exponential,
)

from ._secrets import SecretRedactor
from .errors import StartupError
from .health.lifecycle import Lifecycle, StepState

logger = logging.getLogger("lifesigns.startup")

FIRST_DELAY = 0.1
"""Seconds: the scale of the first back-off delay (full jitter draws from 0 up to it)."""

MAX_DELAY = 1.0
"""Seconds: the longest pause between two attempts, so a dependency that comes up is seen
within about a second, while a fleet of replicas still spreads its attempts out."""


@dataclass(frozen=True)
class Dependency:
    """Something start-up waits for: ``attempt`` raises until the dependency answers."""

    name: str
    description: str
    attempt: Callable[[], Awaitable[object]]
    deadline: float
    attempt_timeout: float


def _one_line(exc: BaseException, redactor: SecretRedactor) -> str:
    if isinstance(exc, TimeoutError):
        return "TimeoutError: no answer within the attempt timeout"
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return redactor.redact(text[:300])


async def wait_for(
    dependency: Dependency,
    lifecycle: Lifecycle,
    redactor: SecretRedactor,
    on_attempt: Callable[[str], None] | None = None,
) -> object:
    """Retry ``dependency`` until it answers or its deadline passes; return its answer.

    Records every attempt on ``lifecycle`` (for ``/startupz``) and calls ``on_attempt``
    with ``"ok"`` or ``"error"`` (for metrics). Raises :class:`StartupError` naming the
    dependency and the last error once the deadline has passed.
    """
    name, started = dependency.name, time.monotonic()
    lifecycle.add_step(name, dependency.description, deadline=dependency.deadline)
    reported: list[str] = []  # the last error logged in full

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        failure = outcome.exception() if outcome is not None else None
        error = _one_line(failure, redactor) if failure is not None else "unknown error"
        delay = state.upcoming_sleep
        elapsed = time.monotonic() - started
        lifecycle.update_step(
            name, attempts=state.attempt_number, last_error=error, next_attempt_in=delay
        )
        # One line per attempt; the driver's message once, then only when it changes.
        changed = reported != [error]
        fields: dict[str, object] = {
            "event": "startup_attempt",
            "dependency": name,
            "attempt": state.attempt_number,
            "next_attempt_in": round(delay, 3),
            "elapsed": round(elapsed, 3),
            "deadline": dependency.deadline,
            **({"error": error} if changed else {"same_error": True}),
        }
        logger.log(
            logging.WARNING if changed else logging.INFO,
            "waiting for %s: attempt %d failed (%s); next attempt in %.2f s (%.1f of %g s elapsed)",
            dependency.description,
            state.attempt_number,
            error if changed else "the same error",
            delay,
            elapsed,
            dependency.deadline,
            extra={"lifesigns": fields},
        )
        reported[:] = [error]

    retrying = AsyncRetrying(
        stop=stop_before_delay(dependency.deadline),
        wait=wait_random_exponential(multiplier=FIRST_DELAY, max=MAX_DELAY),
        retry=retry_if_exception_type(Exception),
        before_sleep=before_sleep,
        reraise=True,
    )
    attempts = 0
    answer: object = None
    try:
        async for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                lifecycle.update_step(name, attempts=attempts, next_attempt_in=None)
                remaining = dependency.deadline - (time.monotonic() - started)
                try:
                    answer = await asyncio.wait_for(
                        dependency.attempt(),
                        timeout=max(0.05, min(dependency.attempt_timeout, remaining)),
                    )
                except Exception:
                    if on_attempt:
                        on_attempt("error")
                    raise
    except Exception as exc:
        error = _one_line(exc, redactor)
        lifecycle.update_step(name, state=StepState.FAILED, last_error=error)
        raise StartupError(
            f"{dependency.description} did not answer within its start-up deadline of "
            f"{dependency.deadline:g} s ({attempts} attempts); last error: {error}"
        ) from None
    if on_attempt:
        on_attempt("ok")
    lifecycle.update_step(name, state=StepState.DONE, last_error=None)
    elapsed = time.monotonic() - started
    if attempts > 1:
        logger.info(
            "%s answered after %d attempts in %.1f s",
            dependency.description,
            attempts,
            elapsed,
            extra={
                "lifesigns": {
                    "event": "startup_ready",
                    "dependency": name,
                    "attempts": attempts,
                    "elapsed": round(elapsed, 3),
                }
            },
        )
    return answer
