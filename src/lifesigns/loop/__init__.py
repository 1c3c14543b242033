"""The loop layer: sees the event loop stall while it is frozen, and names the frame.

**Usage**::

    from lifesigns import Lifesigns
    from lifesigns.loop import attach

    signs = Lifesigns(service="orders", token=TOKEN, watchdog=False)
    watch = attach(signs)                   # builds the layer; starts nothing yet
    signs.install(app)                      # the lifespan starts and stops it

``Lifesigns()`` attaches the layer itself (unless ``watchdog=False``); ``attach(signs)``
then returns that same layer, and ``attach(signs, stall_threshold=...)`` with a value
other than the instance's raises :class:`~lifesigns.errors.ConfigError`.

What runs once the lifespan starts: a heartbeat on the loop (``call_later``, so uvloop
works too), a watchdog thread (:mod:`~lifesigns.loop.watchdog`), a reporter thread that
logs on ``lifesigns.loop`` (:mod:`~lifesigns.loop.report`), the GIL-held path through
faulthandler (:mod:`~lifesigns.loop.faulthandler_guard`), the thread-pool watch
(:mod:`~lifesigns.loop.limiter`) and the task census (:mod:`~lifesigns.loop.census`).
The side port, which serves liveness while the loop is frozen, is not part of this layer
(:mod:`lifesigns.sideport`); it reads :meth:`LoopWatch.frozen_for`.

Defaults, and why:

* ``stall_threshold`` = 0.25 s. Long enough that ordinary work never trips it: asyncio
  debug mode flags callbacks at 100 ms and its own users find that noisy; a large JSON
  response or a young-generation collection takes tens of milliseconds; a CFS quota
  period is 100 ms. Short enough that every report is worth reading: a quarter second
  with the loop frozen delays *every* request in flight by as much, a latency users see,
  and it is what aiodebug's hang inspection uses in production. Detection comes within
  the threshold plus one beat (a fifth of it), far inside a kubelet's 1 s probe timeout.
* ``live_fail_after`` = 10 s. Liveness failing restarts the process and drops every
  request in flight, so it must wait until restarting is clearly cheaper than waiting:
  ten seconds frozen outlasts the usual client timeouts (the seeds' frontends gave up
  after 10 s), so every request of that window has failed already. With Kubernetes'
  default probe (every 10 s, 3 failures) the restart lands 30-40 s into the freeze, the
  same bound gunicorn's 30 s worker timeout gives, but with the stack logged 9.75 s
  earlier. A stall shorter than that is reported, never punished.

Each option may be given to :func:`attach`; otherwise the host's settings apply (each
from ``LIFESIGNS_<NAME>`` too: the settings table in :mod:`lifesigns._config`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, fields
from typing import Any

from .. import _config
from .._config import Settings
from ..health.probes import NotAlive
from ..host import HasHost, Host, as_host
from .census import Snapshot, TaskCensus, snapshot_dict
from .classify import GcClock, StallClass
from .faulthandler_guard import GilGuard, available
from .heartbeat import Heartbeat, interval_for
from .limiter import LimiterWatch, is_worker_thread
from .metrics import LoopMetrics
from .report import Reporter, SiteLimiter, StallHistory, StallReport, headline, report_dict
from .report import short_site as _short_site
from .stacks import all_stacks
from .watchdog import Watchdog

__all__ = [
    "LoopSettings",
    "LoopWatch",
    "StallClass",
    "StallReport",
    "attach",
]

_UNSET: Any = _config.UNSET


@dataclass(frozen=True)
class LoopSettings:
    """Settings of the loop layer, validated by the settings table (``lifesigns._config``).

    * ``stall_threshold``: seconds without a heartbeat that make a stall (0.25).
    * ``live_fail_after``: seconds of stall after which liveness fails (10).
    * ``limiter_threshold``: seconds the default thread limiter may stay full before it
      is reported (5).
    * ``census_interval``: seconds between task censuses (10).
    * ``gil_guard``: use faulthandler's timer to see stalls where C code holds the GIL
      (on; turn it off if something else uses ``faulthandler.dump_traceback_later``).
    * ``report_burst``, ``report_window``: stall reports logged per site per window
      (3 per 600 s); the rest are counted.
    """

    stall_threshold: float = 0.25
    live_fail_after: float = 10.0
    limiter_threshold: float = 5.0
    census_interval: float = 10.0
    gil_guard: bool = True
    report_burst: int = 3
    report_window: float = 600.0

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"LoopSettings({shown})"

    @classmethod
    def build(cls, base: Settings | None = None, **given: Any) -> LoopSettings:
        """The loop's share of ``base`` (default: the defaults), with ``given`` overrides.

        Overrides (``UNSET`` ones are skipped) go through the settings table's validators
        and its checks between options, exactly as ``Lifesigns(...)`` arguments do.
        """
        settings = (base if base is not None else Settings()).override(**given)
        return cls(**settings.pick(*(f.name for f in fields(cls))))


class LoopWatch:
    """The loop layer of one host: a component (``loop-watch``).

    Build it with :func:`attach`. ``start`` runs on the event loop (recording the loop
    thread from inside it) and starts the threads; ``stop`` ends them within about a
    second. Reading its state (:meth:`liveness`, the dumps) is safe from any thread.
    """

    name = "loop-watch"

    def __init__(self, host: Host, settings: LoopSettings) -> None:
        self.host = host
        self.settings = settings
        threshold = settings.stall_threshold
        interval = interval_for(threshold)
        self.history = StallHistory()
        self.metrics = LoopMetrics(host.registry)
        self.reporter = Reporter(
            self.history,
            SiteLimiter(settings.report_burst, settings.report_window),
            listeners=[self.metrics.on_event],
        )
        margin = min(0.1, max(0.03, threshold * 0.4))
        # Re-arming starts a C thread (about 0.1-0.3 ms of the loop's time): every
        # ``margin`` seconds, not on every beat. The C timer then fires between
        # threshold + margin / 2 and threshold + 1.5 x margin after the loop's last beat
        # (0.30-0.40 s by default), leaving the Python watchdog half a margin to disarm
        # it whenever it can run.
        self.gil_guard = (
            GilGuard(threshold + 1.5 * margin, rearm_every=margin)
            if settings.gil_guard and available()
            else None
        )
        self.gc_clock = GcClock()
        self.heartbeat = Heartbeat(interval, late_after=threshold, on_beat=self._on_beat)
        self.limiter = LimiterWatch(settings.limiter_threshold, self.reporter.put, host.requests)
        self.census = TaskCensus(
            self.reporter.put,
            interval=settings.census_interval,
            requests=host.requests,
            classifier=host.frames,
        )
        self.census.listeners.append(self.metrics.on_census)
        self.watchdog = Watchdog(
            self.heartbeat,
            threshold=threshold,
            emit=self.reporter.put,
            gil_guard=self.gil_guard,
            gc_clock=self.gc_clock,
            requests=host.requests,
            ticks=[self.limiter.tick],
            classifier=host.frames,
        )
        self.metrics.bind(self.heartbeat.age, self.limiter.stats)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_tasks: dict[str, Any] | None = None

    def __repr__(self) -> str:
        state = "running" if self.heartbeat.running else "stopped"
        return f"<LoopWatch {state} {self.settings!r}>"

    # -- lifetime ------------------------------------------------------------------

    async def start(self) -> None:
        """Start beating, watching and reporting (on the event loop)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.gc_clock.install()
        if self.gil_guard is not None:
            self.gil_guard.open()
        self.heartbeat.start(loop)
        self.limiter.bind()
        self.census.start(loop)
        self.reporter.start()
        self.watchdog.start(loop)

    async def stop(self) -> None:
        """Stop everything this layer started; logs what is still queued."""
        await asyncio.to_thread(self.watchdog.stop)
        self.heartbeat.stop()
        self.census.stop()
        if self.gil_guard is not None:
            self.gil_guard.close()
        self.gc_clock.uninstall()
        await asyncio.to_thread(self.reporter.stop)
        self._loop = None

    def _on_beat(self, now: float, lag: float) -> None:
        if self.gil_guard is not None:
            self.gil_guard.arm(now)
        self.metrics.lag.observe(lag)

    # -- state, from any thread ----------------------------------------------------

    def frozen_for(self) -> float | None:
        """Seconds the loop has been frozen, when past the stall threshold (else ``None``)."""
        if not self.heartbeat.running:
            return None
        age = self.heartbeat.age()
        return age if age >= self.settings.stall_threshold else None

    def liveness(self) -> NotAlive | None:
        """Not alive once the loop has been frozen longer than ``live_fail_after``."""
        if not self.heartbeat.running:
            return None
        age = self.heartbeat.age()
        if age < self.settings.live_fail_after:
            return None
        summary = f"loop stalled {age:.1f} s"
        current = self.watchdog.current
        detail = headline(current) if current is not None else summary
        return NotAlive(summary=summary, detail=detail)

    # -- dumps -----------------------------------------------------------------------

    def stalls_dump(self) -> dict[str, Any]:
        """Recent stalls grouped by site with counts, and the one in progress."""
        current = self.watchdog.current
        recent, sites = self.history.snapshot()
        now = time.monotonic()
        return {
            "threshold_s": self.settings.stall_threshold,
            "heartbeat_age_s": round(self.heartbeat.age(now), 3),
            "current": None if current is None else report_dict(current, now),
            "total": self.history.total,
            "longest_s": round(self.history.longest, 3),
            "sites": [
                {
                    "site": _short(s.site, recent),
                    "count": s.count,
                    "total_s": round(s.total_seconds, 3),
                    "longest_s": round(s.longest, 3),
                    "classes": dict(s.classes),
                }
                for s in sites
            ],
            "recent": [report_dict(r, now) for r in reversed(recent[-20:])],
        }

    def threads_dump(self) -> dict[str, Any]:
        """Every thread's stack (the loop thread and anyio workers marked)."""
        stacks = all_stacks()
        threads = []
        for thread in threading.enumerate():
            stack = stacks.get(thread.ident or -1, ())
            threads.append(
                {
                    "name": thread.name,
                    "ident": thread.ident,
                    "daemon": thread.daemon,
                    "event_loop": thread.ident == self.heartbeat.thread_id,
                    "anyio_worker": is_worker_thread(thread),
                    "stack": [f.site + (" [app]" if f.app else "") for f in stack[:60]],
                }
            )
        return {"count": len(threads), "threads": threads}

    def tasks_dump(self, timeout: float = 1.0) -> dict[str, Any]:
        """asyncio tasks with their await chains, and the census.

        Taken on the loop when it is alive (waiting at most ``timeout`` seconds); while it
        is frozen, the last snapshot, marked stale.
        """
        loop = self._loop
        census = snapshot_dict(self.census.latest)
        if loop is None:
            return {"running": False, "census": census}
        if threading.get_ident() == self.heartbeat.thread_id:
            self._last_tasks = self._take_tasks()
            return {"stale": False, **self._last_tasks, "census": snapshot_dict(self.census.latest)}
        if self.frozen_for() is None:
            done = threading.Event()

            def take() -> None:
                try:
                    self._last_tasks = self._take_tasks()
                finally:
                    done.set()

            loop.call_soon_threadsafe(take)
            if done.wait(timeout):
                return {
                    "stale": False,
                    **(self._last_tasks or {}),
                    "census": snapshot_dict(self.census.latest),
                }
        last = self._last_tasks or {}
        return {"stale": True, "reason": "the event loop did not answer", **last, "census": census}

    def _take_tasks(self) -> dict[str, Any]:
        self.census.take()
        return {"taken_at": time.time(), **self.census.tasks()}

    def limiter_dump(self) -> dict[str, Any]:
        """anyio's default thread limiter and the worker threads holding its tokens."""
        return self.limiter.dump()

    @property
    def census_snapshot(self) -> Snapshot | None:
        """The latest task census."""
        return self.census.latest


def _short(site_key: str, recent: list[StallReport]) -> str:
    for report in recent:
        if report.site_key == site_key:
            return _short_site(report)
    return site_key


def attach(
    owner: Host | HasHost,
    *,
    stall_threshold: float = _UNSET,
    live_fail_after: float = _UNSET,
    limiter_threshold: float = _UNSET,
    census_interval: float = _UNSET,
    gil_guard: bool = _UNSET,
    report_burst: int = _UNSET,
    report_window: float = _UNSET,
) -> LoopWatch:
    """Build the loop layer on ``owner`` (a ``Host``, or a ``Lifesigns``) and register it.

    Nothing starts until the lifespan. Registers: the liveness condition ``event-loop``;
    the dumps ``stalls``, ``threads``, ``tasks`` and ``limiter``; the metrics on
    ``host.registry``; the component ``loop-watch``. Options not given come from
    ``host.settings`` (see :class:`LoopSettings`). Attaching again with the same settings
    returns the same layer (``Lifesigns()`` attaches it already, unless
    ``watchdog=False``); with other settings it raises
    :class:`~lifesigns.errors.ConfigError` naming both. Raises ``ConfigError`` for a bad
    value, and ``RuntimeError`` once the lifespan runs.
    """
    host = as_host(owner)
    settings = LoopSettings.build(
        host.settings,
        stall_threshold=stall_threshold,
        live_fail_after=live_fail_after,
        limiter_threshold=limiter_threshold,
        census_interval=census_interval,
        gil_guard=gil_guard,
        report_burst=report_burst,
        report_window=report_window,
    )
    return host.layer("loop", settings, lambda: _build(host, settings))


def _build(host: Host, settings: LoopSettings) -> LoopWatch:
    watch = LoopWatch(host, settings)
    host.add_component(watch)
    host.add_liveness_condition("event-loop", watch.liveness)
    host.add_dump("stalls", watch.stalls_dump)
    host.add_dump("threads", watch.threads_dump)
    host.add_dump("tasks", watch.tasks_dump)
    host.add_dump("limiter", watch.limiter_dump)
    return watch
