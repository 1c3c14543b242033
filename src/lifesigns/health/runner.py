"""Running checks: timeouts, caching and single-flight.

The runner is what keeps a probe flood away from the database: a result is reused for its
cache lifetime, and callers that arrive while a run is in flight wait for that run instead
of starting their own. A check that never returns is reported as timed out after its
timeout; while it is still running, no second copy is started beside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._secrets import SecretRedactor
from ..errors import Degraded
from .check import Check, CheckResult
from .status import Status

logger = logging.getLogger("lifesigns.health")

_MAX_ERROR = 300


@dataclass
class _CheckState:
    result: CheckResult | None = None
    expires: float = 0.0
    inflight: asyncio.Task[CheckResult] | None = None
    # The call of a run that timed out, while it has not yet finished: an asyncio task
    # that ignored its cancellation, or a worker thread that cannot be stopped.
    straggler: asyncio.Future[Any] | concurrent.futures.Future[Any] | None = None
    straggler_since: float = 0.0


ResultListener = Callable[[Check, CheckResult], None]


class CheckRunner:
    """Runs checks with their timeouts, caches results and shares runs in flight.

    ``executor`` runs plain (non-async) check functions; ``redactor`` strips secrets from
    error messages; ``listener`` sees every fresh result (metrics, logs).
    """

    def __init__(
        self,
        executor: concurrent.futures.Executor | None = None,
        redactor: SecretRedactor | None = None,
        listener: ResultListener | None = None,
    ) -> None:
        self._executor = executor
        self._redactor = redactor or SecretRedactor()
        self._listener = listener
        self._states: dict[str, _CheckState] = {}

    @property
    def executor(self) -> concurrent.futures.Executor:
        """The threads that run plain check functions (made on first use)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="lifesigns-check"
            )
        return self._executor

    def close(self) -> None:
        """Let go of the threads; a check stuck in one is abandoned, not waited for."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def cached(self, name: str) -> CheckResult | None:
        """The last result of check ``name``, fresh or not (``None`` before its first run)."""
        state = self._states.get(name)
        return state.result if state else None

    def expire(self, name: str) -> None:
        """Drop a cached pass (or warning) of check ``name`` early: the next run runs it.

        Safe from any thread (one attribute write). A cached failure is kept: expiring
        it could only bring the dependency more calls while it is down.
        """
        state = self._states.get(name)
        result = state.result if state is not None else None
        if state is not None and result is not None and result.status is not Status.FAIL:
            state.expires = 0.0

    def record(self, check: Check, result: CheckResult) -> None:
        """Store a result obtained elsewhere (a start-up wait that just succeeded)."""
        state = self._states.setdefault(check.name, _CheckState())
        self._store(check, state, result)

    async def run(self, check: Check) -> CheckResult:
        """The check's result: cached if still fresh, else from the run in flight or a new one."""
        state = self._states.setdefault(check.name, _CheckState())
        if state.result is not None and time.monotonic() < state.expires:
            return state.result
        inflight = state.inflight
        if (
            inflight is None
            or inflight.done()
            or inflight.get_loop() is not asyncio.get_running_loop()
        ):
            inflight = asyncio.get_running_loop().create_task(
                self._execute(check, state), name=f"lifesigns check {check.name}"
            )
            state.inflight = inflight
        # A caller that gives up (probe budget) must not cancel the run others share.
        return await asyncio.shield(inflight)

    async def run_many(self, checks: Iterable[Check], budget: float) -> list[CheckResult]:
        """Run ``checks`` concurrently; whatever is not done within ``budget`` s times out."""
        checks = list(checks)
        if not checks:
            return []
        loop = asyncio.get_running_loop()
        tasks = {loop.create_task(self.run(c)): c for c in checks}
        done, pending = await asyncio.wait(tasks, timeout=budget)
        for task in pending:
            task.cancel()  # only the waiter; the shielded run goes on and fills the cache
        results = []
        for task, check in tasks.items():
            if task in done and not task.cancelled() and task.exception() is None:
                results.append(task.result())
            else:
                results.append(
                    CheckResult(
                        name=check.name,
                        status=Status.FAIL,
                        duration=budget,
                        checked_at=time.time(),
                        critical=check.critical,
                        error=f"no result within the probe budget of {budget:g} s",
                        timed_out=True,
                        component_type=check.component_type,
                    )
                )
        return results

    async def _execute(self, check: Check, state: _CheckState) -> CheckResult:
        started = time.monotonic()
        at = time.time()
        straggler = state.straggler
        if straggler is not None and not straggler.done():
            result = self._result(
                check,
                Status.FAIL,
                started,
                at,
                timed_out=True,
                error=(
                    f"timed out after {check.timeout:g} s; that run is still going after "
                    f"{started - state.straggler_since:.1f} s, so no new run was started"
                ),
            )
            self._store(check, state, result)
            return result
        state.straggler = None
        call = self._start(check)
        try:
            done, _ = await asyncio.wait({call}, timeout=check.timeout)
        except asyncio.CancelledError:
            call.cancel()
            raise
        if call in done:
            result = self._outcome(check, call, started, at)
        else:
            call.cancel()
            state.straggler = self._underlying(call)
            state.straggler_since = started
            result = self._result(
                check,
                Status.FAIL,
                started,
                at,
                timed_out=True,
                error=f"timed out after {check.timeout:g} s",
            )
        self._store(check, state, result)
        return result

    def _start(self, check: Check) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if check.is_async:
            return loop.create_task(check.func(), name=f"lifesigns check {check.name} call")  # type: ignore[arg-type]
        concurrent_future = self.executor.submit(check.func)
        wrapped = asyncio.wrap_future(concurrent_future, loop=loop)
        wrapped.lifesigns_thread_future = concurrent_future  # type: ignore[attr-defined]
        return wrapped

    @staticmethod
    def _underlying(
        call: asyncio.Future[Any],
    ) -> asyncio.Future[Any] | concurrent.futures.Future[Any]:
        # A cancelled wrapper of a thread's future reports done at once though the thread
        # still runs; watch the thread's own future instead.
        thread_future: concurrent.futures.Future[Any] | None = getattr(
            call, "lifesigns_thread_future", None
        )
        return thread_future if thread_future is not None else call

    def _outcome(
        self, check: Check, call: asyncio.Future[Any], started: float, at: float
    ) -> CheckResult:
        if call.cancelled():
            return self._result(check, Status.FAIL, started, at, error="cancelled")
        exc = call.exception()
        if exc is None:
            value = call.result()
            details = dict(value) if isinstance(value, Mapping) else None
            return self._result(check, Status.PASS, started, at, details=details)
        status = Status.WARN if isinstance(exc, Degraded) else Status.FAIL
        text = str(exc) if isinstance(exc, Degraded) else f"{type(exc).__name__}: {exc}"
        return self._result(check, status, started, at, error=text)

    def _result(
        self,
        check: Check,
        status: Status,
        started: float,
        at: float,
        *,
        error: str | None = None,
        timed_out: bool = False,
        details: Mapping[str, Any] | None = None,
    ) -> CheckResult:
        if error is not None:
            error = self._redactor.redact(" ".join(error.split()))
            if len(error) > _MAX_ERROR:
                error = error[: _MAX_ERROR - 1] + "…"
        return CheckResult(
            name=check.name,
            status=status,
            duration=time.monotonic() - started,
            checked_at=at,
            critical=check.critical,
            error=error,
            timed_out=timed_out,
            details=details,
            component_type=check.component_type,
        )

    def _store(self, check: Check, state: _CheckState, result: CheckResult) -> None:
        previous = state.result
        state.result = result
        ttl = check.pass_ttl if result.status is Status.PASS else check.fail_ttl
        state.expires = time.monotonic() + ttl
        if previous is None or previous.status is not result.status:
            # One line per change of state, never one per run: no log storms.
            level = logging.INFO if result.status is Status.PASS else logging.WARNING
            was = previous.status.value if previous else "unknown"
            logger.log(
                level,
                "check %s: %s -> %s (%s)",
                check.name,
                was,
                result.status.value,
                result.summary,
            )
        if self._listener is not None:
            self._listener(check, result)
