"""The supervisor: owns every registered task, starts them with the lifespan, stops them.

It is one :class:`~lifesigns.Component`. Registration only records a
:class:`~lifesigns.tasks.state.TaskSpec` and a health check; the lifespan start creates
one runner task per spec (each waits until the service is ready), and the lifespan stop
cancels them all within the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .. import _config
from ..errors import ConfigError, Degraded
from ..errors import TaskFailed as TaskFailed  # re-exported: its old home
from ..host import Host
from .census import StrayTask, stray_tasks
from .metrics import TaskMetrics
from .once import Leader, check_once
from .periodic import PeriodicRunner
from .runs import ReadyGate
from .state import Restart, TaskPhase, TaskSpec, TaskState
from .supervised import SupervisedRunner

logger = logging.getLogger("lifesigns.tasks")

F = TypeVar("F", bound=Callable[..., Any])

CHECK_PREFIX = "task."
"""Each task's health check is named ``task.<name>``."""


class Supervisor:
    """Supervised periodic and long-running tasks of one host.

    **Usage**::

        tasks = lifesigns.tasks.attach(signs)

        @tasks.periodic(every=300, timeout=30, jitter=10)
        async def clean_rate_limits() -> None: ...

        @tasks.supervised(restart="permanent", max_restarts=5, within=60)
        async def consume_events() -> None: ...
    """

    name = "supervised tasks"

    def __init__(self, host: Host) -> None:
        self.host = host
        self.metrics = TaskMetrics(host.registry)
        self._states: dict[str, TaskState] = {}
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._strays: list[StrayTask] = []
        self._started = False
        self._leaders: list[Leader] = []
        self.elect: Callable[[TaskSpec], Leader] | None = None
        """Builds each periodic task's :class:`~lifesigns.tasks.once.Leader` at start (the
        assembler sets it: it knows the agent's folder and the watched engines)."""

    def __repr__(self) -> str:
        return f"Supervisor(tasks={list(self._states)!r}, running={self._started})"

    # -- registration ----------------------------------------------------------------

    def periodic(
        self,
        every: float,
        *,
        timeout: float | None = None,
        jitter: float = 0.0,
        name: str | None = None,
        initial_delay: float | None = None,
        max_restarts: int = 5,
        within: float = 60.0,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        critical: bool = False,
        once: str = "container",
        engine: str | None = None,
    ) -> Callable[[F], F]:
        """Run the decorated ``async def`` every ``every`` seconds, once the service is ready.

        * ``timeout``: seconds a run may take (default ``every``); an overrun is cancelled,
          counted and logged with the line it was stuck on, and the next run keeps its slot.
        * ``jitter``: up to this many seconds added at random to each run, so replicas do
          not all run at once (default 0).
        * ``initial_delay``: seconds before the first run (default ``every``).
        * A run that raises is logged with its traceback and retried after ``backoff``
          seconds, doubling up to ``max_backoff``. More than ``max_restarts`` failures or
          overruns within ``within`` seconds and the task is given up: its check
          ``task.<name>`` fails, which fails readiness if ``critical`` and otherwise turns
          ``/health`` to ``warn``.
        * Runs never overlap: a run due while the last one is still going is skipped.
        * ``once``: who runs it (:mod:`lifesigns.tasks.once`). ``"container"`` (default):
          one worker per container under ``lifesigns run`` (every process without it);
          ``"cluster"``: one process across every service on one PostgreSQL, holding an
          advisory lock on the watched engine ``engine`` (needed when several are
          watched); ``"worker"``: every process.
        """
        period = _config.seconds("every", every, maximum=7 * 86_400.0)
        chosen_timeout = (
            period if timeout is None else _config.seconds("timeout", timeout, maximum=86_400.0)
        )
        chosen_jitter = _config.seconds("jitter", jitter, allow_zero=True, maximum=period)
        return self._register(
            name,
            every=period,
            timeout=chosen_timeout,
            jitter=chosen_jitter,
            initial_delay=_initial_delay(initial_delay),
            once=check_once(name or "periodic", once),
            engine=engine,
            **self._policy(max_restarts, within, backoff, max_backoff, critical),
        )

    def supervised(
        self,
        *,
        restart: Restart | str = Restart.PERMANENT,
        max_restarts: int = 5,
        within: float = 60.0,
        timeout: float | None = None,
        name: str | None = None,
        initial_delay: float | None = None,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        critical: bool = False,
    ) -> Callable[[F], F]:
        """Run the decorated long-running ``async def`` for the life of the service.

        ``restart`` says when it is restarted: ``"permanent"`` (whenever it ends),
        ``"transient"`` (only after an exception) or ``"temporary"`` (never). Restarts
        wait an exponential back-off from ``backoff`` to ``max_backoff`` seconds; more
        than ``max_restarts`` within ``within`` seconds and it is given up, failing its
        check ``task.<name>`` (readiness if ``critical``). ``timeout``, if given, bounds
        each run. It is cancelled at shutdown within the grace period.
        """
        try:
            policy = Restart(restart)
        except ValueError:
            allowed = ", ".join(r.value for r in Restart)
            raise ConfigError(f"restart={restart!r}; allowed: {allowed}") from None
        chosen_timeout = (
            None if timeout is None else _config.seconds("timeout", timeout, maximum=86_400.0)
        )
        return self._register(
            name,
            timeout=chosen_timeout,
            initial_delay=_initial_delay(initial_delay),
            restart=policy,
            **self._policy(max_restarts, within, backoff, max_backoff, critical),
        )

    def _register(self, name: str | None, **spec: Any) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            self.add(TaskSpec(name=name or fn.__name__, func=fn, **spec))
            return fn

        return decorator

    @staticmethod
    def _policy(
        max_restarts: int, within: float, backoff: float, max_backoff: float, critical: bool
    ) -> dict[str, Any]:
        return {
            "max_restarts": max_restarts,
            "within": _config.seconds("within", within, maximum=86_400.0),
            "backoff": _config.seconds("backoff", backoff, maximum=86_400.0),
            "max_backoff": _config.seconds("max_backoff", max_backoff, maximum=86_400.0),
            "critical": bool(critical),
        }

    def add(self, spec: TaskSpec) -> TaskState:
        """Register a task from its spec; starts nothing. Names are unique."""
        if self._started:
            raise RuntimeError(
                f"task {spec.name!r} registered after the lifespan started; register tasks "
                "at import time (registration starts nothing)"
            )
        if spec.name in self._states:
            raise ConfigError(f"a task named {spec.name!r} is already registered; pass name=...")
        state = TaskState(spec)
        self.host.add_check(
            f"{CHECK_PREFIX}{spec.name}",
            _task_check(state),
            critical=spec.critical,
            timeout=1.0,
            pass_ttl=0.5,
            fail_ttl=0.5,
        )
        self._states[spec.name] = state
        self.metrics.failed.labels(spec.name).set(0)
        return state

    # -- reading -----------------------------------------------------------------------

    @property
    def states(self) -> Mapping[str, TaskState]:
        """Every task's state, by name."""
        return dict(self._states)

    @property
    def strays(self) -> list[StrayTask]:
        """Tasks found outside supervision when the lifespan started."""
        return list(self._strays)

    def dump(self) -> Mapping[str, Any]:
        """The ``/debug/supervised`` dump: every task's state and the stray tasks found."""
        return {
            "tasks": [state.as_dict() for state in self._states.values()],
            "unsupervised_at_startup": [stray.describe() for stray in self._strays],
        }

    # -- lifetime ------------------------------------------------------------------------

    async def start(self) -> None:
        """Warn about stray tasks, then start one runner per registered task."""
        self._started = True
        self._strays = stray_tasks(classifier=self.host.frames)
        self.metrics.unsupervised.set(len(self._strays))
        for stray in self._strays:
            logger.warning(
                "%s; register it with @signs.periodic or @signs.supervised so it has a "
                "timeout, restarts and a clean stop",
                stray.describe(),
            )
        gate = ReadyGate(self.host.lifecycle)
        loop = asyncio.get_running_loop()
        redact = self.host.redactor.redact
        runners: dict[str, PeriodicRunner | SupervisedRunner] = {}
        for name, state in self._states.items():
            spec = state.spec
            if spec.every is None:
                runners[name] = SupervisedRunner(spec, state, self.metrics, gate, redact)
                continue
            if self.elect is None and spec.once == "cluster":
                raise ConfigError(
                    f"task {spec.name!r}: once='cluster' needs the watched engines of a "
                    "Lifesigns: register it with @signs.periodic or tasks.attach(signs)"
                )
            leader = self.elect(spec) if self.elect is not None else None  # may raise
            if leader is not None:
                self._leaders.append(leader)
                state.leader = leader.describe
            runners[name] = PeriodicRunner(spec, state, self.metrics, gate, redact, leader)
        for name, runner in runners.items():
            self._runners[name] = loop.create_task(
                runner.run(), name=f"lifesigns supervisor of {name}"
            )

    async def stop(self) -> None:
        """Cancel every task and wait for them within the grace period; safe to call twice."""
        runners, self._runners = self._runners, {}
        try:
            await self._stop(runners)
        finally:
            leaders, self._leaders = self._leaders, []
            for leader in dict.fromkeys(leaders):  # a shared leader is closed once
                try:
                    await asyncio.wait_for(leader.close(), 2.0)
                except Exception as exc:  # shutting down: say so, go on
                    logger.warning("could not give up the lead of %r: %r", leader, exc)

    async def _stop(self, runners: dict[str, asyncio.Task[None]]) -> None:
        if not runners:
            return
        now = time.time()
        running = {
            name: now - (self._states[name].last_start or now)
            for name in runners
            if self._states[name].phase is TaskPhase.RUNNING
        }
        for task in runners.values():
            task.cancel()
        budget = max(0.1, self.host.settings.grace - 0.5)
        _, pending = await asyncio.wait(runners.values(), timeout=budget)
        for task in runners.values():
            if task.done() and not task.cancelled() and task.exception() is not None:
                logger.error("a task supervisor crashed", exc_info=task.exception())
        for state in self._states.values():
            if state.phase not in (TaskPhase.FAILED, TaskPhase.DONE):
                state.phase = TaskPhase.STOPPED
            state.next_run = None
        described = [
            f"{name} (cancelled while running for {running[name]:.1f} s)"
            if name in running
            else name
            for name in runners
        ]
        logger.info("supervised tasks cancelled: %s", ", ".join(described))
        if pending:
            stuck = [n for n, t in runners.items() if t in pending]
            logger.error(
                "supervised tasks did not stop within %.1f s: %s", budget, ", ".join(stuck)
            )


def _task_check(state: TaskState) -> Callable[[], Any]:
    async def check() -> dict[str, Any]:
        if state.phase is TaskPhase.FAILED:
            raise TaskFailed(state.failed_reason or state.summary())
        if state.last_error_at is not None and (
            state.last_success is None or state.last_error_at > state.last_success
        ):
            raise Degraded(state.summary())
        return state.as_dict()

    check.__qualname__ = f"task {state.spec.name}"
    return check


def _initial_delay(value: float | None) -> float | None:
    return None if value is None else _config.seconds("initial_delay", value, allow_zero=True)
