"""The agent's side port: one per container, for every worker, served by the agent.

It is the shared probe router (:class:`lifesigns.router.ProbeRouter`) served by the shared
side-port server (:class:`lifesigns.sideport.SidePort`), answering from the agent's
:class:`~lifesigns.agent.monitor.Monitor` instead of an in-process ``Probes``: the same
paths (``prefix`` and ``paths`` from the ``LIFESIGNS_*`` environment, as in the workers),
the same ``?verbose``, token, redaction, dump timeout and counting as an in-process side
port. What the agent brings (:class:`AgentHost`):

* ``/livez``: fails only when the service cannot serve (see
  :meth:`~lifesigns.agent.monitor.Monitor.liveness`); one line per worker
  (``worker-<slot>``), its reason with the token.
* ``/readyz``: ready when at least ``min_ready`` workers (default all) are ready;
  ``/readyz/worker-<slot>`` asks about one worker.
* ``/startupz``: passes once a worker has been ready.
* ``/metrics``: every worker's metrics labelled ``worker="<slot>"``, and the agent's own
  (:mod:`~lifesigns.agent.metrics`), with no metrics library imported.
* ``/debug/workers``, ``/debug/stalls?worker=N``, ``/debug/published?worker=N`` (what the
  worker last published), ``/debug/threads?worker=N`` (sampled live with py-spy, one at a
  time), ``/debug/incidents``: with the bearer token (``LIFESIGNS_TOKEN``) only.

The router reaches checks through an event loop (:class:`~lifesigns.router.LoopBridge`);
the agent has no application loop, so :class:`AgentSidePort` runs a small one of its own
in a daemon thread, where readiness costs a few microseconds and never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Collection, Mapping
from typing import Any

from .._config import Settings
from .._secrets import SecretRedactor, tokens_match
from ..errors import UnknownCheckError
from ..health.check import CheckResult
from ..health.probes import ProbeResult
from ..health.status import Status
from ..router import DumpRefused, ProbeRouter, QueryDump
from ..sideport import SidePort
from . import metrics
from .incidents import IncidentWriter
from .monitor import Monitor

__all__ = ["AgentHost", "AgentProbes", "AgentSidePort"]


class AgentProbes:
    """The probe decisions from the monitor: a :class:`lifesigns.router.ProbeSource`."""

    def __init__(self, monitor: Monitor, budget: float = 0.8) -> None:
        self.monitor = monitor
        self._budget = budget
        self._last: ProbeResult | None = None
        self._started = False

    @property
    def budget(self) -> float:
        """Seconds a probe may spend (the agent's answers take microseconds)."""
        return self._budget

    @property
    def last_readiness(self) -> ProbeResult | None:
        """The most recent readiness answer."""
        return self._last

    def liveness(self) -> ProbeResult:
        """Alive unless a frozen worker cannot be replaced, every worker is frozen, or the
        restart budget ran out; one check per worker."""
        m = self.monitor
        alive, reasons = m.liveness()
        now = time.time()
        checks: list[CheckResult] = []
        if m.gave_up:
            checks.append(CheckResult("restarts", Status.FAIL, 0.0, now, error=m.gave_up))
        workers = m.workers()
        failing = {w["slot"]: r for w in workers for r in reasons if f"worker {w['slot']} " in r}
        for w in workers:
            state = f"pid {w['pid']} {w['phase']}, heartbeat {w['heartbeat_age_s']:.3f} s ago"
            if w["stall"] is not None:
                state += f", stalled: {w['stall']['headline']}"
            status = Status.PASS
            if w["slot"] in failing:
                status, state = Status.FAIL, f"{failing[w['slot']]}; {state}"
            elif w["stall"] is not None:
                status = Status.WARN
            checks.append(CheckResult(f"worker-{w['slot']}", status, 0.0, now, error=state))
        everyone = f"all {len(workers)} workers frozen"
        if everyone in reasons:
            checks.append(CheckResult("workers", Status.FAIL, 0.0, now, error=everyone))
        reason = "; ".join(reasons) if reasons else f"{len(workers)} workers, none lost"
        return ProbeResult(
            "livez",
            Status.PASS if alive else Status.FAIL,
            reason,
            tuple(checks),
            public_reason=None if alive else "a worker cannot serve",
        )

    def startup(self) -> ProbeResult:
        """Passes once a worker has been ready (and from then on)."""
        if not self._started:
            self._started = any(w["ready"] for w in self.monitor.workers())
        if self._started:
            return ProbeResult("startupz", Status.PASS, "a worker has been ready")
        return ProbeResult("startupz", Status.FAIL, "no worker ready yet", public_reason="starting")

    def _readiness_checks(self) -> tuple[Status, str, list[CheckResult]]:
        ready, reason = self.monitor.readiness()
        now = time.time()
        overall = Status.PASS if ready else Status.FAIL
        checks = [CheckResult("workers", overall, 0.0, now, error=reason)]
        threshold = self.monitor.settings.stall_threshold
        for w in self.monitor.workers():
            serving = w["ready"] and w["heartbeat_age_s"] < threshold
            state = f"pid {w['pid']} {w['phase']}, heartbeat {w['heartbeat_age_s']:.3f} s ago"
            checks.append(
                CheckResult(
                    f"worker-{w['slot']}",
                    Status.PASS if serving else Status.WARN,
                    0.0,
                    now,
                    critical=False,
                    error=state,
                )
            )
        return (Status.PASS if ready else Status.FAIL), reason, checks

    async def readiness(
        self, exclude: Collection[str] = (), only: str | None = None
    ) -> ProbeResult:
        """Ready when at least ``min_ready`` workers are; ``only``: one worker's check."""
        status, reason, checks = self._readiness_checks()
        names = [c.name for c in checks]
        if only is not None:
            if only not in names:
                raise UnknownCheckError([only], names)
            chosen = [c for c in checks if c.name == only]
            status = Status.FAIL if chosen[0].status is Status.WARN else chosen[0].status
            return ProbeResult("readyz", status, chosen[0].error or "ok", tuple(chosen))
        unknown = [n for n in exclude if n not in names and not n.startswith("worker-")]
        if unknown:
            raise UnknownCheckError(unknown, names)
        kept = [c for c in checks if c.name not in exclude]
        if "workers" in exclude:
            status = Status.PASS
        result = ProbeResult(
            "readyz",
            status,
            reason,
            tuple(kept),
            excluded=tuple(n for n in names if n in exclude),
        )
        self._last = result
        return result

    async def health(self, exclude: Collection[str] = ()) -> ProbeResult:
        """Readiness's checks, for ``/health``."""
        result = await self.readiness(exclude)
        return ProbeResult("health", result.status, result.reason, result.checks, result.excluded)


class _Steps:
    steps: tuple[Any, ...] = ()


class _Answers:
    """``lifesigns_probe_answers_total`` by probe and code, without a metrics library."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str], int] = {}

    def labels(self, *values: str) -> _Answers._One:
        return _Answers._One(self, (values[0], values[1]))

    class _One:
        def __init__(self, owner: _Answers, key: tuple[str, str]) -> None:
            self.owner, self.key = owner, key

        def inc(self) -> None:
            with self.owner._lock:
                self.owner.counts[self.key] = self.owner.counts.get(self.key, 0) + 1


class _Counters:
    def __init__(self) -> None:
        self.probe_answers = _Answers()


class _MergedMetrics:
    """Every worker's published exposition labelled by slot, plus the agent's own."""

    content_type = metrics.CONTENT_TYPE

    def __init__(self, host: AgentHost) -> None:
        self.host = host

    def exposition(self) -> str:
        m = self.host.monitor
        workers = m.workers()
        answers = self.host.metrics.probe_answers
        with answers._lock:
            counted = sorted(answers.counts.items())
        own = "".join(
            [
                metrics.family(
                    "lifesigns_agent_workers",
                    "gauge",
                    "Workers holding a heartbeat slot.",
                    [("", len(workers))],
                ),
                metrics.family(
                    "lifesigns_agent_heartbeat_age_seconds",
                    "gauge",
                    "Seconds since each worker's event loop last beat, read by the agent.",
                    [(f'worker="{w["slot"]}"', w["heartbeat_age_s"]) for w in workers],
                ),
                metrics.family(
                    "lifesigns_agent_stalls_total",
                    "counter",
                    "Stalls the agent saw, by worker slot.",
                    [(f'worker="{slot}"', n) for slot, n in sorted(m.stall_counts.items())],
                ),
                metrics.family(
                    "lifesigns_agent_incidents_total",
                    "counter",
                    "Incident files written.",
                    [("", m.incident_count)],
                ),
                metrics.family(
                    "lifesigns_agent_restarts_total",
                    "counter",
                    "Frozen workers replaced.",
                    [("", m.restarts)],
                ),
                metrics.family(
                    "lifesigns_agent_probe_answers_total",
                    "counter",
                    "Probe requests the agent's side port answered, by probe and HTTP code.",
                    [(f'probe="{p}",code="{c}"', n) for (p, c), n in counted],
                ),
            ]
        )
        published = metrics.read_published(m.runtime_dir, [w["slot"] for w in workers])
        return self.host.redactor.redact(metrics.merge(published, own))


def _slot(params: Mapping[str, list[str]], dump: str, *, required: bool) -> int | None:
    if "worker" not in params:
        if required:
            raise DumpRefused(400, f"{dump} needs ?worker=N (a slot number; see /debug/workers)")
        return None
    raw = params["worker"][0]
    if not raw.isdigit():
        raise DumpRefused(400, f"worker={raw!r} is not a slot number; see /debug/workers")
    return int(raw)


class AgentHost:
    """What the shared router answers from in the agent: a :class:`lifesigns.router.RouterHost`."""

    def __init__(
        self,
        monitor: Monitor,
        settings: Settings,
        *,
        incidents: IncidentWriter | None = None,
        redactor: SecretRedactor | None = None,
    ) -> None:
        self.monitor = monitor
        self.settings = settings
        self.incidents = incidents
        token = settings.token
        self.redactor = redactor or SecretRedactor([token] if token else [])
        self.probes = AgentProbes(monitor, settings.probe_budget)
        self.lifecycle = _Steps()
        self.metrics = _Counters()
        self.registry = _MergedMetrics(self)
        self.dumps: dict[str, Any] = {
            "incidents": self._incidents,
            "published": QueryDump(self._published),
            "stalls": QueryDump(self._stalls),
            "threads": QueryDump(self._threads),
            "workers": self._workers,
        }

    def is_authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries ``LIFESIGNS_TOKEN``."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return False
        return tokens_match(authorization[7:].strip(), self.settings.token)

    def live_data(self) -> dict[str, Any]:
        """The live page's data: the workers' published dumps, the stall seen from outside."""
        from .live import agent_live_data

        return agent_live_data(self.monitor, self.settings.service, self.settings.version)

    def _workers(self) -> dict[str, Any]:
        return {"workers": self.monitor.workers(), "restarts": self.monitor.restarts}

    def _incidents(self) -> dict[str, Any]:
        return {"incidents": self.incidents.recent() if self.incidents else []}

    def _stalls(self, params: Mapping[str, list[str]]) -> dict[str, Any]:
        return self.monitor.stalls(_slot(params, "stalls", required=False))

    def _published(self, params: Mapping[str, list[str]]) -> dict[str, Any]:
        slot = _slot(params, "published", required=True)
        assert slot is not None
        data = self.monitor.published(slot)
        if data is None:
            raise DumpRefused(404, f"worker {slot} has published nothing")
        return data

    def _threads(self, params: Mapping[str, list[str]]) -> dict[str, Any]:
        slot = _slot(params, "threads", required=True)
        assert slot is not None
        data = self.monitor.sample_live(slot)
        if data is None:
            raise DumpRefused(404, f"no worker in slot {slot}")
        return data


class AgentSidePort:
    """The shared :class:`~lifesigns.sideport.SidePort` in the agent, with a loop of its own.

    :meth:`start` binds and serves, or raises ``OSError`` naming why it could not bind.
    """

    def __init__(self, host: AgentHost, address: str, port: int, *, max_connections: int = 16):
        self.host = host
        # A live py-spy sample may take its whole timeout: the dump waits a second more.
        timeout = max(2.0, host.monitor.settings.sample_timeout + 1.0)
        self.router = ProbeRouter(host, dump_timeout=timeout)
        self.side = SidePort(
            self.router, address, port, explicit=True, max_connections=max_connections
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"AgentSidePort({self.side!r})"

    @property
    def port(self) -> int | None:
        """The port bound (``None`` before :meth:`start`)."""
        return self.side.port

    def start(self) -> None:
        """Start the loop thread, bind and serve; ``OSError`` if the port cannot be bound."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="lifesigns-agent-loop", daemon=True
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.side.start(), loop).result(10)
        if self.side.port is None:
            reason = self.side.skipped or "not bound"
            self.stop()
            raise OSError(reason)

    def stop(self) -> None:
        """Stop serving, then the loop (a few seconds at most)."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        with contextlib.suppress(TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self.side.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(2.0)
        loop.close()
