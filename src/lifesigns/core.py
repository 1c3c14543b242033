"""``Lifesigns``: the one object that wires the layers and owns their lifetimes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, overload

from sqlalchemy import Engine
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from . import _config
from ._config import UNSET, Settings
from .db.engine import WatchedEngine
from .errors import ConfigError, StartupError
from .health import Check, CheckFunction, Phase
from .health.check import CheckResult
from .health.lifecycle import StepState
from .health.status import Status
from .host import Component, Dump, Host
from .http.metrics import register_request_metrics
from .http.requests import RequestTracker
from .startup import Dependency, wait_for

if TYPE_CHECKING:
    from .db.bulkhead import Bulkhead
    from .tasks import Supervisor

logger = logging.getLogger("lifesigns")

F = TypeVar("F", bound=Callable[..., Any])
Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def _advisory_sessions(engine: AsyncEngine) -> Callable[[str], Any]:
    """Dedicated autocommit connections for once='cluster' locks, never from the app's pool."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    # lifesigns: ignore[LS108] it runs only pg_try_advisory_lock, which never waits
    own = create_async_engine(engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")

    class Session:
        def __init__(self, connection: Any) -> None:
            self.connection = connection

        async def scalar(self, sql: str, params: Mapping[str, Any]) -> Any:
            return (await self.connection.execute(text(sql), dict(params))).scalar()

        async def rows(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
            result = await self.connection.execute(text(sql), dict(params))
            return [dict(row._mapping) for row in result]

        async def close(self) -> None:
            await self.connection.close()

    async def connect(label: str) -> Session:
        connection = await own.connect()
        session = Session(connection)
        try:
            await session.scalar(
                "SELECT set_config('application_name', :name, false)", {"name": label[:63]}
            )
        except BaseException:
            await session.close()
            raise
        return session

    return connect


class _StartupStepFn(Protocol):
    async def __call__(self) -> object: ...


class Lifesigns:
    """Health probes, start-up waits and the layers that say why a service hangs.

    Creating one starts nothing: no thread, task, socket or connection exists until its
    lifespan runs. Every option may also come from ``LIFESIGNS_<NAME>`` in the
    environment; an explicit argument wins. A bad value raises
    :class:`~lifesigns.errors.ConfigError` naming it.

    **Usage**::

        signs = Lifesigns(service="orders", version="1.4.2")
        signs.watch_engine(engine)

        @signs.check("payments-api", critical=False, timeout=1.0)
        async def payments() -> None:
            ...

        app = FastAPI()
        signs.install(app)  # probes on the app, lifesigns around its lifespan

    Options:

    * ``service``, ``version``: who answers, in ``/health`` and metrics.
    * ``token``: bearer token that unlocks details and dumps (at least 16 characters).
      Without one, probe bodies carry the status only.
    * ``prefix``, ``paths``: where probes are served (``paths={"livez": "/healthz"}``;
      ``None`` switches one off).
    * ``probe_budget``: seconds a probe may spend on checks (default 0.8, below the
      kubelet's 1 s probe timeout).
    * ``check_timeout``, ``pass_ttl``, ``fail_ttl``: defaults for checks (0.5 s; results
      cached 2 s after a pass, 1 s after a failure).
    * ``startup_deadline``: default seconds start-up waits for a dependency (60).
    * ``grace``: seconds each part gets to stop at shutdown (10).
    * ``side_host``, ``side_port``: where the out-of-band server answers liveness and
      dumps from its own thread (off unless a port is given; 0 picks a free one).
    * ``stall_threshold``: seconds without a heartbeat before the loop counts as stalled.
    * ``live_fail_after``: seconds of stall after which liveness fails.
    * ``drain_delay``: seconds between SIGTERM (readiness fails) and the server closing
      its listener, for load balancers to notice (unset: 5 under an orchestrator, else 0,
      and 0 under tests and reloaders; see :mod:`lifesigns.drain`).
    * ``termination_grace``: seconds the platform allows from SIGTERM to SIGKILL (30, as
      Kubernetes); start-up warns when ``drain_delay + grace`` does not fit.
    * ``deadline``: default seconds a request may take before it gets 504 (``None``: no
      deadline; see :mod:`lifesigns.http.deadline`).
    * ``watchdog``: watch the event loop for stalls (on; see :mod:`lifesigns.loop`).
    * ``memory``: sample RSS and the Python heap for growth (on; see
      :mod:`lifesigns.memory`).
    * ``expose``: what the application port serves: ``"probes"`` (the
      default), ``"probes,metrics"``, ``"all"``, ``"none"``; the side port serves
      everything (see :mod:`lifesigns._surfaces`).
    * ``log_format``: ``"text"`` or ``"json"`` for the stderr handler lifesigns adds
      when nothing else shows its logs (see :mod:`lifesigns._logging`).
    * ``app_packages``: the packages that are the application's code, for every stack
      lifesigns prints (default: inferred; see :mod:`lifesigns._frames`).

    The layers' other options (``census_interval``, ``memory_interval``,
    ``leak_threshold``...) come from their ``LIFESIGNS_<NAME>`` variables or from the
    layer's own ``attach``; every option, its limits and its doc line are in one table,
    :data:`lifesigns._config.OPTIONS` (the README's option reference).

    It is the assembler: it builds a :class:`~lifesigns.host.Host` (``signs.host``) and
    attaches each layer to it, handing over what one layer needs of another; no layer
    imports this module.
    """

    def __init__(
        self,
        service: str | object = UNSET,
        version: str | object | None = UNSET,
        *,
        token: str | object | None = UNSET,
        prefix: str | object = UNSET,
        paths: Mapping[str, str | None] | object = UNSET,
        probe_budget: float | object = UNSET,
        check_timeout: float | object = UNSET,
        pass_ttl: float | object = UNSET,
        fail_ttl: float | object = UNSET,
        startup_deadline: float | object = UNSET,
        grace: float | object = UNSET,
        side_host: str | object = UNSET,
        side_port: int | object | None = UNSET,
        stall_threshold: float | object = UNSET,
        live_fail_after: float | object = UNSET,
        drain_delay: float | object = UNSET,
        termination_grace: float | object = UNSET,
        deadline: float | object | None = UNSET,
        watchdog: bool | object = UNSET,
        memory: bool | object = UNSET,
        expose: str | Collection[str] | object = UNSET,
        log_format: str | object = UNSET,
        app_packages: str | Collection[str] | object = UNSET,
    ) -> None:
        self.settings = Settings.from_arguments(
            {
                "service": service,
                "version": version,
                "token": token,
                "prefix": prefix,
                "paths": paths,
                "probe_budget": probe_budget,
                "check_timeout": check_timeout,
                "pass_ttl": pass_ttl,
                "fail_ttl": fail_ttl,
                "startup_deadline": startup_deadline,
                "grace": grace,
                "side_host": side_host,
                "side_port": side_port,
                "stall_threshold": stall_threshold,
                "live_fail_after": live_fail_after,
                "drain_delay": drain_delay,
                "termination_grace": termination_grace,
                "deadline": deadline,
                "watchdog": watchdog,
                "memory": memory,
                "expose": expose,
                "log_format": log_format,
                "app_packages": app_packages,
            }
        )
        self.host = Host(self.settings, requests=RequestTracker())
        host = self.host
        # The host's registries, under the names users and the edge already know.
        self.redactor = host.redactor
        self.registry = host.registry
        self.metrics = host.metrics
        self.checks = host.checks
        self.lifecycle = host.lifecycle
        self.runner = host.runner
        self.probes = host.probes
        self.requests: RequestTracker = host.requests  # type: ignore[assignment]
        register_request_metrics(self.registry, self.requests)
        self._engines: dict[str, WatchedEngine] = {}
        self._container_leader: Any = None  # once="container": one per process (tasks.once)
        self._dependencies: list[tuple[Dependency, Check | None]] = []
        self._startup_steps: list[tuple[str, _StartupStepFn, float]] = []
        self._running: list[Component] = []
        self._startup_task: asyncio.Task[None] | None = None
        self._attach_layers()
        # One probe router for every port. The side port serves all of it from a thread,
        # with or without the watchdog; a side_port given here (not by the environment)
        # binds under tests and reloaders too (see lifesigns.sideport).
        from .router import ProbeRouter
        from .sideport import SidePort

        self.router = ProbeRouter(host)
        self.side_port: SidePort | None = None
        if self.settings.side_port is not None:
            self.side_port = SidePort(
                self.router,
                self.settings.side_host,
                self.settings.side_port,
                explicit=side_port is not UNSET,
                components=lambda: host.components,
            )
            host.add_component(self.side_port)

    def _attach_layers(self) -> None:
        # The assembler: each layer registers on the host and knows no other layer; what
        # one needs of another is handed over here. The loop layer first: it starts first
        # and stops last, so it sees the whole lifespan, shutdown stalls included.
        # Nothing here starts anything yet.
        from . import drain, memory
        from .http import inflight

        host = self.host
        watch = None
        if self.settings.watchdog:
            from . import loop

            watch = loop.attach(host)
        inflight.attach(host)
        drain.attach(
            host,
            supervisor=lambda: cast("Supervisor | None", host.find_layer("tasks")),
            engines=lambda: self._engines,
        )
        if self.settings.memory:
            memory.attach(host)
        # Under `lifesigns run` (issue 9): a heartbeat slot for the agent, which owns the side port.
        from .agent import worker as agent_worker

        agent_worker.attach(host, watch)

    def _tasks(self) -> Supervisor:
        from . import tasks

        supervisor = tasks.attach(self.host)
        if supervisor.elect is None:
            supervisor.elect = self._elect
        return supervisor

    def _elect(self, spec: Any) -> Any:
        """The :class:`~lifesigns.tasks.once.Leader` of periodic task ``spec`` (at start)."""
        from .agent.worker import agent_dir
        from .tasks import once

        if spec.once == "worker":
            return once.Everyone()
        folder = agent_dir()
        if folder is not None and self._container_leader is None:
            self._container_leader = once.FileLeader(folder / "periodic.lock")
        container = self._container_leader if folder is not None else None
        if spec.once == "container":
            return container or once.Everyone("no `lifesigns run` agent: every process runs it")
        name, engine = self._cluster_engine(spec.name, spec.engine)
        cluster = once.AdvisoryLeader(
            _advisory_sessions(engine),
            once.advisory_key(self.settings.service, spec.name),
            engine=name,
        )
        return once.Both(container, cluster) if container is not None else cluster

    def _cluster_engine(self, task: str, name: str | None) -> tuple[str, AsyncEngine]:
        engines = self._engines
        postgres = [n for n, w in engines.items() if w.sync_engine.dialect.name == "postgresql"]
        if name is None and len(postgres) == 1:
            name = postgres[0]
        watched = engines.get(name) if name is not None else None
        if watched is None or name not in postgres or not isinstance(watched.engine, AsyncEngine):
            raise ConfigError(
                f"task {task!r}: once='cluster' needs a watched async PostgreSQL engine"
                f"{'' if name is None else f' (engine={name!r})'}; watched PostgreSQL "
                f"engines: {', '.join(postgres) or 'none'} (signs.watch_engine(...), and "
                "engine=<name> when there are several)"
            )
        return name, watched.engine

    def __repr__(self) -> str:
        s = self.settings
        phase = self.lifecycle.phase.value
        return f"Lifesigns(service={s.service!r}, version={s.version!r}, phase={phase!r})"

    # -- checks ----------------------------------------------------------------------

    @overload
    def check(
        self,
        name: str,
        func: None = None,
        *,
        timeout: float | None = None,
        critical: bool = True,
        pass_ttl: float | None = None,
        fail_ttl: float | None = None,
        component_type: str = "component",
    ) -> Callable[[F], F]: ...

    @overload
    def check(
        self,
        name: str,
        func: CheckFunction,
        *,
        timeout: float | None = None,
        critical: bool = True,
        pass_ttl: float | None = None,
        fail_ttl: float | None = None,
        component_type: str = "component",
    ) -> Check: ...

    def check(
        self,
        name: str,
        func: CheckFunction | None = None,
        *,
        timeout: float | None = None,
        critical: bool = True,
        pass_ttl: float | None = None,
        fail_ttl: float | None = None,
        component_type: str = "component",
    ) -> Callable[[F], F] | Check:
        """Register a check, as a decorator or a call.

        The function passes by returning (``None`` or a mapping of observed details),
        warns by raising :class:`~lifesigns.errors.Degraded`, fails by raising anything
        else or by not returning within ``timeout`` seconds (default ``check_timeout``).
        ``critical=False`` checks never fail readiness; they turn ``/health`` to ``warn``.
        A second check with a taken name raises :class:`~lifesigns.errors.ConfigError`.
        """

        def register(fn: CheckFunction) -> Check:
            return self.host.add_check(
                name,
                fn,
                timeout=timeout,
                critical=critical,
                pass_ttl=pass_ttl,
                fail_ttl=fail_ttl,
                component_type=component_type,
            )

        if func is not None:
            return register(func)

        def decorator(fn: F) -> F:
            register(fn)
            return fn

        return decorator

    def watch_engine(
        self,
        engine: Engine | AsyncEngine,
        *,
        name: str = "database",
        timeout: float | None = None,
        critical: bool = True,
        startup_deadline: float | None = None,
        wait_at_startup: bool = True,
        forensics: bool = True,
        **forensics_options: Any,
    ) -> WatchedEngine:
        """Watch a SQLAlchemy ``Engine`` or ``AsyncEngine``.

        Registers a readiness check named ``name`` that runs ``SELECT 1`` within
        ``timeout`` (default ``check_timeout``) on a connection of its own, so that it
        never queues behind the application's checkouts, and, unless
        ``wait_at_startup=False``, makes start-up wait for the database with back-off
        until ``startup_deadline`` (default the instance's). The URL is shown with its
        password masked, everywhere.

        With ``forensics`` (the default) the pool is watched too: who holds each
        connection, leaks (a connection its finished request left behind, within a
        second; one held past ``leak_threshold``), exhaustion snapshots, pool pressure
        in ``/health``, sizing advice and ``/debug/pool``; ``forensics_options`` go to
        :func:`lifesigns.db.forensics.attach` (``leak_threshold=30``,
        ``on_saturation="fail"`` to let pressure fail readiness, ``full_stacks=0``...).
        """
        from .db import attach_engine

        attached = attach_engine(
            self.host,
            engine,
            name=name,
            timeout=timeout,
            critical=critical,
            startup_deadline=startup_deadline,
            wait_at_startup=wait_at_startup,
            forensics=forensics,
            # Asking the tracker for it turns the request context on (off while unread).
            current_request=self.requests.current,
            **forensics_options,
        )
        self._engines[name] = attached.watched
        wait = attached.wait
        if wait is not None:
            dependency = Dependency(
                name=wait.name,
                description=wait.description,
                attempt=wait.attempt,
                deadline=wait.deadline,
                attempt_timeout=wait.attempt_timeout,
            )
            self._dependencies.append((dependency, attached.check))
        return attached.watched

    def bulkhead(self, name: str, max_connections: int, *, timeout: float = 30.0) -> Bulkhead:
        """A named cap on how many connections one class of work may hold at once.

        Use it as ``async with``, ``with`` (in threads) or a decorator; waiting longer
        than ``timeout`` seconds for a slot raises
        :class:`~lifesigns.db.bulkhead.BulkheadFull`. Asking again for ``name`` with the
        same settings returns the same bulkhead. See :mod:`lifesigns.db.bulkhead`.
        """
        from .db.bulkhead import bulkhead

        return bulkhead(self.host, name, max_connections, timeout=timeout)

    def startup_step(self, name: str, *, timeout: float = 60.0) -> Callable[[F], F]:
        """Register work that must finish before the service is ready (a migration, a warm-up).

        Steps run in order once every dependency answers, each within ``timeout``
        seconds; ``/startupz`` shows them. A step that raises or overruns fails start-up.
        """
        chosen = _config.option("startup_deadline").parse(timeout, given_as="timeout")
        if any(n == name for n, _, _ in self._startup_steps) or any(
            d.name == name for d, _ in self._dependencies
        ):
            raise ConfigError(f"a start-up step named {name!r} already exists")

        def decorator(fn: F) -> F:
            self._startup_steps.append((name, fn, chosen))
            return fn

        return decorator

    def add_dump(self, name: str, producer: Dump) -> None:
        """Serve ``producer()`` at ``/debug/<name>`` (and on the side port), by token only."""
        self.host.add_dump(name, producer)

    @property
    def dumps(self) -> Mapping[str, Dump]:
        """The debug dumps by name."""
        return self.host.dumps

    def periodic(
        self, every: float, *, timeout: float | None = None, jitter: float = 0.0, **options: Any
    ) -> Callable[[F], F]:
        """Supervise the decorated ``async def``, run every ``every`` seconds.

        See :meth:`lifesigns.tasks.Supervisor.periodic` for ``options``.
        """
        return self._tasks().periodic(every, timeout=timeout, jitter=jitter, **options)

    def supervised(self, *, restart: str = "permanent", **options: Any) -> Callable[[F], F]:
        """Supervise the decorated long-running ``async def`` with an OTP restart policy.

        See :meth:`lifesigns.tasks.Supervisor.supervised` for ``options``.
        """
        return self._tasks().supervised(restart=restart, **options)

    def add_component(self, component: Component) -> None:
        """Give lifesigns a part to start with the lifespan and stop at its end."""
        self.host.add_component(component)

    @property
    def engines(self) -> Mapping[str, WatchedEngine]:
        """The watched engines by name."""
        return dict(self._engines)

    # -- lifespan --------------------------------------------------------------------

    def lifespan(self, app: object = None) -> AbstractAsyncContextManager[None]:
        """The lifespan to pass as ``FastAPI(lifespan=signs.lifespan)`` or to Starlette.

        Starts every part lifesigns owns, then waits for the dependencies in the
        background so that probes answer (503, with progress) while it waits.
        """
        return self._lifespan()

    def wrap_lifespan(self, inner: Lifespan | None) -> Lifespan:
        """A lifespan that runs lifesigns' around the application's own ``inner`` one."""

        @asynccontextmanager
        async def combined(app: Any) -> AsyncIterator[Any]:
            async with self._lifespan():
                if inner is None:
                    yield None
                else:
                    async with inner(app) as state:
                        yield state

        return combined

    def install(self, app: Any) -> None:
        """Serve the probes on a Starlette or FastAPI ``app`` and wrap its lifespan.

        A pool checkout that times out in an endpoint is answered 503 with ``Retry-After``
        (see :mod:`lifesigns.pool_timeout`) unless the application handles
        ``sqlalchemy.exc.TimeoutError`` itself. For another ASGI framework, wrap it with
        :class:`~lifesigns.http.LifesignsMiddleware` and run :meth:`lifespan` yourself.
        """
        from .http.middleware import LifesignsMiddleware
        from .pool_timeout import PoolTimeoutHandler, handles_it_already

        router = getattr(app, "router", None)
        if (
            router is None
            or not hasattr(router, "lifespan_context")
            or not hasattr(app, "add_middleware")
        ):
            raise TypeError(
                f"install() needs a Starlette or FastAPI application; got {type(app).__name__}. "
                "Wrap other ASGI apps with lifesigns.http.LifesignsMiddleware(app, signs=signs)."
            )
        router.lifespan_context = self.wrap_lifespan(router.lifespan_context)
        app.add_middleware(LifesignsMiddleware, signs=self)
        if not handles_it_already(getattr(app, "exception_handlers", {})):
            app.add_exception_handler(
                sqlalchemy_exc.TimeoutError, PoolTimeoutHandler(self.host, lambda: self._engines)
            )
        if self.settings.memory:
            from . import memory

            # What the application keeps on app.state is a root of the container census.
            memory.attach(self).add_root("app.state", lambda: app.state)

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        """Start every part, then wait for dependencies in the background."""
        if self._running or (self._startup_task and not self._startup_task.done()):
            raise RuntimeError("this Lifesigns is already running; one lifespan at a time")
        from ._logging import ensure_handler

        ensure_handler(self.settings.log_format)  # logs out of the box, not at import
        self.lifecycle.begin()
        self.metrics.phase.state(Phase.STARTING.value)
        self.host.mark_started()
        for component in self.host.components:
            await component.start()
            self._running.append(component)
        self._startup_task = asyncio.get_running_loop().create_task(
            self._start_up(), name="lifesigns start-up"
        )

    async def _start_up(self) -> None:
        began = time.monotonic()
        waits = [self._wait_for(dependency, check) for dependency, check in self._dependencies]
        outcomes = await asyncio.gather(*waits, return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        try:
            for failure in failures:
                raise failure
            for name, step, timeout in self._startup_steps:
                await self._run_step(name, step, timeout)
        except StartupError:
            reason = "; ".join(str(f) for f in failures) or str(sys.exc_info()[1])
            logger.error("start-up failed: %s", reason)
            if self.lifecycle.move_to(Phase.FAILED, reason):
                self.metrics.phase.state(Phase.FAILED.value)
            return
        took = time.monotonic() - began
        self.metrics.startup_seconds.set(took)
        if not self.lifecycle.move_to(Phase.READY):
            logger.info(
                "%s finished starting (%.1f s) while %s: it stays out of rotation",
                self.settings.service,
                took,
                self.lifecycle.phase.value,
            )
            return
        self.metrics.phase.state(Phase.READY.value)
        logger.info("%s is ready (start-up took %.1f s)", self.settings.service, took)

    async def _wait_for(self, dependency: Dependency, check: Check | None) -> None:
        def count(outcome: str) -> None:
            self.metrics.startup_attempts.labels(dependency.name, outcome).inc()

        started, at = time.monotonic(), time.time()
        answer = await wait_for(dependency, self.lifecycle, self.redactor, on_attempt=count)
        if check is not None:
            # The wait just proved the check passes: readiness need not run it again.
            self.runner.record(
                check,
                CheckResult(
                    name=check.name,
                    status=Status.PASS,
                    duration=time.monotonic() - started,
                    checked_at=at,
                    critical=check.critical,
                    component_type=check.component_type,
                    details=dict(answer) if isinstance(answer, Mapping) else None,
                ),
            )

    async def _run_step(self, name: str, step: _StartupStepFn, timeout: float) -> None:
        self.lifecycle.add_step(name, f"start-up step {name}", deadline=timeout)
        self.lifecycle.update_step(name, attempts=1)
        try:
            async with asyncio.timeout(timeout):
                await step()
        except Exception as exc:
            error = self.redactor.redact(
                f"timed out after {timeout:g} s"
                if isinstance(exc, TimeoutError)
                else f"{type(exc).__name__}: {exc}"
            )
            self.lifecycle.update_step(name, state=StepState.FAILED, last_error=error)
            logger.exception("start-up step %s failed: %s", name, error)
            raise StartupError(f"start-up step {name} failed: {error}") from None
        self.lifecycle.update_step(name, state=StepState.DONE)

    async def stop(self) -> None:
        """Stop everything started, each part within the grace period; never raises."""
        grace = self.settings.grace
        task, self._startup_task = self._startup_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=grace)
        self.lifecycle.move_to(Phase.STOPPED)
        self.metrics.phase.state(Phase.STOPPED.value)
        while self._running:
            component = self._running.pop()
            try:
                await asyncio.wait_for(component.stop(), timeout=grace)
            except TimeoutError:
                logger.error(
                    "%s did not stop within the grace period of %g s", component.name, grace
                )
            except Exception:
                logger.exception("%s failed to stop cleanly", component.name)
        self.runner.close()
        self.host.mark_started(False)

    # -- helpers for the edge ---------------------------------------------------------

    def is_authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries the configured bearer token."""
        return self.host.is_authorized(authorization)
