"""Graceful drain on SIGTERM: fail readiness first, then stop serving, then clean up.

The Kubernetes termination sequence removes a pod from its endpoints *while* it sends
SIGTERM, so load balancers keep sending requests for a few seconds after it. The order
here closes that gap (the "fail readiness, then drain" pattern):

1. SIGTERM: the phase becomes ``draining`` at once, so ``/readyz`` answers 503;
   requests are still served.
2. After ``drain_delay`` seconds the server's own SIGTERM handler runs: the server stops
   accepting and waits for requests in flight. Any still running ``grace`` seconds
   later are cancelled (uvicorn by default waits for ever).
3. The lifespan ends: supervised tasks are cancelled within ``grace``, then every watched
   engine is disposed.

uvicorn installs its handlers (``Server.capture_signals``) before the lifespan starts,
with ``signal.signal``; so does gunicorn's ``UvicornWorker``, whose worker runs
uvicorn's ``Server.serve`` (the arbiter passes SIGTERM on to each worker). So the drain
wraps whatever SIGTERM handler is installed when the lifespan starts, calls it after the
delay, and puts it back when the lifespan ends. A second SIGTERM skips the rest of the
delay. SIGINT (Ctrl+C) is left alone: a developer wants the server to stop now.

The delay helps only where a load balancer learns of the stop while SIGTERM is sent. So
``drain_delay`` left unset (``None``) is chosen at start by :func:`choose_delay`: 5 s
under an orchestrator (:func:`lifesigns._runmode.orchestrator`: Kubernetes, Amazon ECS,
Nomad), 0 under a test client or a reloader's worker and when no orchestrator is
detected; a value given in code or in ``LIFESIGNS_DRAIN_DELAY`` always wins. Start-up
logs one INFO line saying which it chose and why.

Budget: ``drain_delay + grace`` should fit the platform's termination grace period
(``termination_grace``, Kubernetes' ``terminationGracePeriodSeconds``, 30 s by default;
``docker stop`` allows 10 s; gunicorn's ``--graceful-timeout`` 30 s); start-up warns
when it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from ._runmode import LIFESPAN_SCOPE, orchestrator, orchestrator_variables, quiet_reason
from .health.lifecycle import Phase
from .host import HasHost, Host, as_host

logger = logging.getLogger("lifesigns.drain")

_Handler = Any  # what signal.getsignal returns: a callable, SIG_DFL, SIG_IGN or None

ORCHESTRATED_DELAY = 5.0
"""The drain delay chosen under an orchestrator: a few endpoint-propagation rounds."""


def choose_delay(
    configured: float | None,
    scope: Mapping[str, Any] | None = None,
    *,
    argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[float, str]:
    """The drain delay to wait and why, for the ``drain_delay`` setting ``configured``.

    An explicit value wins; else 0 under a test client or a reloader, else
    :data:`ORCHESTRATED_DELAY` under a detected orchestrator, else 0.
    """
    if configured is not None:
        return configured, "set explicitly (drain_delay= or LIFESIGNS_DRAIN_DELAY)"
    quiet = quiet_reason(scope, argv, environ)
    if quiet is not None:
        return 0.0, f"{quiet}; set LIFESIGNS_DRAIN_DELAY to wait anyway"
    platform = orchestrator(environ)
    if platform is not None:
        return ORCHESTRATED_DELAY, (
            f"{platform}: its load balancers keep sending for a moment after SIGTERM"
        )
    return 0.0, (
        f"no orchestrator detected (none of {orchestrator_variables()} is set); "
        "set LIFESIGNS_DRAIN_DELAY if a load balancer needs time to stop sending"
    )


class Stoppable(Protocol):
    """What the drain stops before disposing engines: the task supervisor is one."""

    async def stop(self) -> None: ...


class Disposable(Protocol):
    """A watched engine, as the drain sees it (``lifesigns.db.engine.WatchedEngine``)."""

    @property
    def engine(self) -> Engine | AsyncEngine: ...

    def pool_state(self) -> Mapping[str, Any]: ...


def _nothing() -> None:
    return None


def _no_engines() -> Mapping[str, Disposable]:
    return {}


class Drain:
    """The drain sequence of one host; a component.

    Use :func:`attach`. :meth:`begin` starts the same sequence without a signal (for a
    preStop hook, or a server lifesigns cannot hook). ``supervisor`` and ``engines`` are
    read when the lifespan ends, so tasks and engines registered after :func:`attach`
    are stopped and disposed too.
    """

    name = "graceful drain"

    def __init__(
        self,
        host: Host,
        sig: signal.Signals = signal.SIGTERM,
        *,
        supervisor: Callable[[], Stoppable | None] = _nothing,
        engines: Callable[[], Mapping[str, Disposable]] = _no_engines,
    ) -> None:
        self.host = host
        self.supervisor = supervisor
        self.engines = engines
        self.signal = sig
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: _Handler = None
        self._installed = False
        self._began_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()
        self._forwarded = False
        self.delay: float | None = None
        """The drain delay chosen at the last start (``None`` before it)."""
        self.delay_reason = ""
        """Why that delay was chosen, as start-up logged it."""

    def __repr__(self) -> str:
        s = self.host.settings
        delay = self.delay if self.delay is not None else s.drain_delay
        shown = "auto" if delay is None else f"{delay:g}"
        return (
            f"Drain(drain_delay={shown}, grace={s.grace:g}, "
            f"termination_grace={s.termination_grace:g}, draining={self.draining})"
        )

    @property
    def draining(self) -> bool:
        """Whether the drain has begun."""
        return self._began_at is not None

    async def start(self) -> None:
        """Check the time budget and wrap the server's SIGTERM handler."""
        self._loop = asyncio.get_running_loop()
        self._hurry = asyncio.Event()
        self._began_at, self._forwarded = None, False
        s = self.host.settings
        delay = self._choose(LIFESPAN_SCOPE.get())
        logger.info(
            "drain_delay %g s chosen: %s",
            delay,
            self.delay_reason,
            extra={
                "lifesigns": {
                    "event": "drain_delay",
                    "drain_delay": delay,
                    "reason": self.delay_reason,
                }
            },
        )
        if delay + s.grace > s.termination_grace:
            logger.warning(
                "drain_delay %g s + grace %g s = %g s does not fit termination_grace %g s: "
                "the platform will kill the process before requests in flight finish; "
                "lower LIFESIGNS_DRAIN_DELAY or LIFESIGNS_GRACE, or raise the grace period "
                "(terminationGracePeriodSeconds, docker stop -t, gunicorn --graceful-timeout)",
                delay,
                s.grace,
                delay + s.grace,
                s.termination_grace,
            )
        if threading.current_thread() is not threading.main_thread():
            # Info, not warning: test clients (Starlette's TestClient) run lifespans in a
            # worker thread on purpose, and would log this for every test.
            logger.info(
                "the lifespan does not run in the main thread, so lifesigns cannot hook "
                "%s; call Drain.begin() from your own shutdown hook to drain",
                self.signal.name,
            )
            return
        self._previous = signal.getsignal(self.signal)
        signal.signal(self.signal, self._on_signal)
        self._installed = True

    def _choose(self, scope: Mapping[str, Any] | None) -> float:
        self.delay, self.delay_reason = choose_delay(self.host.settings.drain_delay, scope)
        return self.delay

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler runs in the main thread between two bytecodes, possibly in the
        # middle of the loop's own code: hand over to the loop, do nothing else here.
        loop = self._loop
        if loop is None or loop.is_closed():
            self._forward(sig, frame)
            return
        loop.call_soon_threadsafe(self._signalled, sig)

    def _signalled(self, sig: int) -> None:
        if self.draining:
            logger.warning("%s again: skipping the rest of the drain delay", self.signal.name)
            self._hurry.set()
            if self._forwarded:
                self._forward(sig, None)
            return
        self.begin(f"{signal.Signals(sig).name} received")

    def begin(self, reason: str = "shutting down") -> None:
        """Start draining now: readiness fails, the server is told to stop after the delay.

        Call it on the event loop. Idempotent.
        """
        if self.draining:
            return
        self._began_at = time.monotonic()
        host = self.host
        host.lifecycle.move_to(Phase.DRAINING, reason)
        host.metrics.phase.state(Phase.DRAINING.value)
        s = host.settings
        delay = self._choose(None) if self.delay is None else self.delay
        # With no delay nobody is waited for: an ordinary stop (a reload, a local kill).
        logger.log(
            logging.WARNING if delay > 0 else logging.INFO,
            "%s: draining. Readiness fails now; the server stops accepting in %g s, then "
            "waits up to %g s for %d request(s) in flight",
            reason,
            delay,
            s.grace,
            len(host.requests),
        )
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="lifesigns drain")

    async def _drain(self) -> None:
        s = self.host.settings
        delay = self.delay or 0.0
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), timeout=delay)
        logger.info(
            "drain delay over: the server stops accepting; %d request(s) in flight",
            len(self.host.requests),
        )
        self._forwarded = True
        self._forward(int(self.signal), None)
        await asyncio.sleep(s.grace)
        self._cancel_stragglers()

    def _forward(self, sig: int, frame: FrameType | None) -> None:
        previous = self._previous if self._installed else signal.getsignal(sig)
        if callable(previous):
            previous(sig, frame)
        elif previous == signal.SIG_DFL:
            # No server handles the signal: its default action ends the process now.
            self._restore()
            signal.raise_signal(sig)

    def _cancel_stragglers(self) -> None:
        requests = self.host.requests
        serving = [(t, requests.for_task(t)) for t in asyncio.all_tasks()]
        late = [(t, info) for t, info in serving if info is not None]
        for task, info in late:
            logger.error(
                "cancelling %s: still in flight %.1f s after the drain began (grace %g s)",
                info.describe(),
                time.monotonic() - (self._began_at or time.monotonic()),
                self.host.settings.grace,
            )
            task.cancel("lifesigns: grace period over")

    async def stop(self) -> None:
        """Stop supervised tasks, dispose watched engines, restore the signal handler."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        supervisor = self.supervisor()
        if supervisor is not None:
            await supervisor.stop()
        await self.dispose_engines()
        self._restore()
        if self._began_at is not None:
            logger.info("drained in %.1f s", time.monotonic() - self._began_at)

    async def dispose_engines(self) -> None:
        """Dispose every watched engine's pool, each within the grace period; never raises."""
        grace = self.host.settings.grace
        for name, watched in self.engines().items():
            state = watched.pool_state()
            engine = watched.engine
            try:
                if isinstance(engine, AsyncEngine):
                    await asyncio.wait_for(engine.dispose(), timeout=grace)
                else:
                    await asyncio.wait_for(asyncio.to_thread(engine.dispose), timeout=grace)
            except Exception:
                logger.exception("engine %s could not be disposed", name)
                continue
            held = state.get("checked_out", 0)
            logger.info(
                "engine %s disposed (%s)",
                name,
                f"{held} connection(s) were still checked out" if held else "no connection held",
            )

    def _restore(self) -> None:
        if not self._installed:
            return
        self._installed = False
        if signal.getsignal(self.signal) == self._on_signal:
            # None means a handler installed from C: the default is the closest we can give.
            signal.signal(self.signal, signal.SIG_DFL if self._previous is None else self._previous)


def attach(
    owner: Host | HasHost,
    *,
    supervisor: Callable[[], Stoppable | None] = _nothing,
    engines: Callable[[], Mapping[str, Disposable]] = _no_engines,
) -> Drain:
    """Give ``owner`` (a ``Host`` or a ``Lifesigns``) a graceful drain on SIGTERM.

    ``supervisor`` and ``engines`` say what to stop and dispose when the lifespan ends
    (the assembler passes its own; a drain alone stops and disposes nothing). Settings
    used: ``drain_delay`` (unset: chosen at start, see :func:`choose_delay`), ``grace``
    (10 s), ``termination_grace`` (30 s).
    Attaching again returns the same drain (``Lifesigns()`` attaches it already); must
    precede the lifespan.
    """
    host = as_host(owner)
    settings = host.settings.pick("drain_delay", "grace", "termination_grace")

    def build() -> Drain:
        drain = Drain(host, supervisor=supervisor, engines=engines)
        host.add_component(drain)
        return drain

    return host.layer("drain", settings, build)
