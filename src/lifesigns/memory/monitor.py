"""The memory monitor: samples at a low rate from its own thread, judges the trend.

A thread rather than a task: sampling keeps going while the event loop is frozen, and
the time-boxed tracemalloc comparison ends on time whatever the loop does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import tracemalloc
from collections.abc import Mapping
from typing import Any

from prometheus_client import Gauge

from ..errors import Degraded
from ..host import Host
from .containers import ContainerCensus, default_is_app_file
from .native import malloc_stats
from .retainers import Retainer, name_retainers
from .sampler import BLOCK_BYTES, Sampler
from .tracing import TraceReport, Tracing
from .trend import Trend, Verdict

logger = logging.getLogger("lifesigns.memory")


class MemoryMetrics:
    """Gauges for RSS, the Python heap, their slopes and the leak verdict."""

    def __init__(self, host: Host) -> None:
        registry = host.registry
        self.rss = Gauge(
            "lifesigns_memory_rss_bytes", "Resident set size of the process.", registry=registry
        )
        self.heap_blocks = Gauge(
            "lifesigns_memory_python_heap_blocks",
            "Blocks allocated by Python's small-object allocator (sys.getallocatedblocks).",
            registry=registry,
        )
        self.growth = Gauge(
            "lifesigns_memory_growth_bytes_per_second",
            "Slope of memory over the window: rss, or python_heap (estimated bytes).",
            ["kind"],
            registry=registry,
        )
        self.suspected = Gauge(
            "lifesigns_memory_leak_suspected",
            "1 while memory grows steadily faster than the threshold.",
            registry=registry,
        )
        self.retainer_bytes = Gauge(
            "lifesigns_memory_retainer_bytes",
            "Estimated bytes held by the fastest-growing containers (at most 5).",
            ["retainer"],
            registry=registry,
        )
        self.retainer_entries = Gauge(
            "lifesigns_memory_retainer_entries",
            "Entries of the fastest-growing containers (at most 5).",
            ["retainer"],
            registry=registry,
        )
        self._shown: set[str] = set()

    def show_retainers(self, growing: list[Any]) -> None:
        """Publish the top five growing containers; drop the series of those that left."""
        top = {g.name: g for g in growing[:5]}
        for gone in self._shown - top.keys():
            self.retainer_bytes.remove(gone)
            self.retainer_entries.remove(gone)
        for name, growth in top.items():
            self.retainer_bytes.labels(name).set(growth.size)
            self.retainer_entries.labels(name).set(growth.length)
        self._shown = set(top)


class MemoryMonitor:
    """RSS and Python-heap trend with a leak verdict, and tracemalloc on demand.

    * ``interval``: seconds between samples (10).
    * ``window``: seconds of samples the slope is fitted over (600).
    * ``threshold``: MB per minute of steady RSS growth that makes a leak suspected (1).
    * ``trace_seconds``: length of the tracemalloc box (30).
    * ``trace_every``: seconds between two boxes lifesigns opens by itself when it
      suspects a leak (900); the token endpoint opens one on demand whatever this says.

    Every sample also takes a census of the application's containers
    (:mod:`~lifesigns.memory.containers`), so that on suspicion the log names what grows,
    who keeps it alive and the line that inserts into it, before any tracing; the box
    that follows adds where the new entries were allocated, and tells Python growth from
    native growth by what tracemalloc saw.
    """

    name = "memory monitor"

    def __init__(
        self,
        host: Host,
        *,
        interval: float = 10.0,
        window: float = 600.0,
        threshold: float = 1.0,
        trace_seconds: float = 30.0,
        trace_every: float = 900.0,
        is_app_file: Any = default_is_app_file,
    ) -> None:
        self.host = host
        self.interval = interval
        self.window = window
        self.threshold = threshold
        self.sampler = Sampler()
        self.trend = Trend(window, interval, threshold)
        self.tracing = Tracing(trace_seconds)
        self.trace_every = trace_every
        self.census = ContainerCensus(is_app_file=is_app_file)
        self._is_app_file = is_app_file
        self.retainers: list[Retainer] = []
        self._last_box: float | None = None
        self._box_unasked = False
        self._rss_at_box: int | None = None
        self.metrics = MemoryMetrics(host)
        self._verdict: Verdict = self.trend.verdict()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_warned = 0.0

    def __repr__(self) -> str:
        return (
            f"MemoryMonitor(interval={self.interval:g}, window={self.window:g}, "
            f"threshold={self.threshold:g}, trace_seconds={self.tracing.seconds:g})"
        )

    @property
    def verdict(self) -> Verdict:
        """The latest verdict (updated every sample)."""
        return self._verdict

    async def start(self) -> None:
        """Start the sampling thread."""
        self._stopping = False
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, name="lifesigns-memory", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the thread (within the grace period) and any tracemalloc box."""
        self._stopping = True
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, self.host.settings.grace)
        self.tracing.cancel()

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._tick()
            except Exception:  # a failed sample must never end monitoring
                logger.exception("memory sample failed")
            wait = self.interval
            due = self.tracing.due
            if due is not None:
                wait = max(0.0, min(wait, due - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()

    def add_root(self, name: str, get: Any) -> None:
        """Census the containers of ``get()`` too (``"app.state"``, the application's)."""
        self.census.add_root(name, get)

    def _tick(self) -> None:
        report = self.tracing.finish(while_tracing=self._name_retainers_traced)
        if report is not None:
            self._log_box(report)
        try:
            self.census.take()
        except Exception:  # the census is best effort: never the end of sampling
            logger.debug("container census failed", exc_info=True)
        self.metrics.show_retainers(self.census.growing())
        sample = self.sampler.sample()
        self.trend.add(sample)
        verdict = self.trend.verdict()
        was = self._verdict.suspected
        self._verdict = verdict
        m = self.metrics
        m.rss.set(sample.rss)
        m.heap_blocks.set(sample.heap_blocks)
        m.growth.labels("rss").set(verdict.rss_mb_per_min * 1024 * 1024 / 60)
        m.growth.labels("python_heap").set(verdict.heap_blocks_per_min * BLOCK_BYTES / 60)
        m.suspected.set(1 if verdict.suspected else 0)
        now = time.monotonic()
        if verdict.suspected and (not was or now - self._last_warned >= self.window):
            self._last_warned = now
            self.retainers = self._name_retainers()
            if self.retainers:
                logger.warning(
                    "%s; what grows and keeps it: %s",
                    verdict.text,
                    "; and ".join(r.describe() for r in self.retainers),
                    extra={"lifesigns": {"retainers": [r.as_dict() for r in self.retainers]}},
                )
            else:
                logger.warning("%s; no growing container found from the roots", verdict.text)
            self._maybe_open_box(now, sample.rss)
        elif was and not verdict.suspected:
            logger.info("memory growth no longer looks like a leak: %s", verdict.text)

    def _name_retainers(self, budget: float = 1.0) -> list[Retainer]:
        return name_retainers(
            self.census.growing(),
            self.census.find,
            is_app_file=self._is_app_file,
            top=5,
            budget=budget,
        )

    def _name_retainers_traced(self) -> None:
        if not (self._box_unasked or self.retainers):
            return
        # While tracing, only the allocation lines are new: add them to what is known,
        # never lose a retainer because the traced pass ran out of its time budget.
        traced = {r.growth.name: r for r in self._name_retainers(budget=2.0)}
        known = {r.growth.name: r for r in self.retainers}
        for name, retainer in traced.items():
            if name in known and not retainer.allocated_at:
                retainer.allocated_at = known[name].allocated_at
            known[name] = retainer
        self.retainers = sorted(known.values(), key=lambda r: r.growth.bytes_per_min, reverse=True)

    def _maybe_open_box(self, now: float, rss: int) -> None:
        if self._last_box is not None and now - self._last_box < self.trace_every:
            return
        if self.tracing.begin():
            self._last_box, self._box_unasked, self._rss_at_box = now, True, rss
            logger.info(
                "tracemalloc on for %g s to find where the growth is allocated "
                "(at most once per %g s; the process runs slower meanwhile)",
                self.tracing.seconds,
                self.trace_every,
            )

    def _log_box(self, report: TraceReport) -> None:
        top = report.lines[0] if report.lines else None
        rss_growth = (
            self.sampler.sample().rss - self._rss_at_box if self._rss_at_box is not None else None
        )
        kind = ""
        if rss_growth is not None and rss_growth > 4 * 1048576:
            share = report.total_growth / rss_growth
            if share < 0.2:
                kind = "; " + self.native_text(rss_growth, report)
            else:
                kind = f"; {share:.0%} of the RSS growth is Python objects"
        retainers = (
            "; what keeps it: " + "; and ".join(r.describe() for r in self.retainers)
            if self.retainers
            else ""
        )
        logger.warning(
            "tracemalloc over %.1f s: +%.0f KiB still alive; grew most at %s%s%s",
            report.seconds,
            report.total_growth / 1024,
            f"{top.where} (+{top.size_diff / 1024:.0f} KiB): {top.source}"
            if top
            else "(nothing grew)",
            kind,
            retainers,
            extra={
                "lifesigns": {
                    "trace": report.as_dict(),
                    "retainers": [r.as_dict() for r in self.retainers],
                }
            },
        )
        self._box_unasked, self._rss_at_box = False, None

    @staticmethod
    def native_text(rss_growth: int, report: TraceReport) -> str:
        """Why growth is native, with glibc's figures, and where to look next."""
        stats = malloc_stats()
        figures = (
            f"glibc malloc in use {stats.in_use / 1048576:.0f} MB "
            f"({stats.mapped / 1048576:.0f} MB mapped directly, "
            f"{stats.free_in_arenas / 1048576:.0f} MB free in arenas), {stats.threads} threads"
            if stats is not None
            else "no glibc malloc statistics on this platform"
        )
        return (
            f"growth is native: RSS +{rss_growth / 1048576:.0f} MB while Python allocations "
            f"grew {report.total_growth / 1048576:.1f} MB; {figures}; for C-level sites run "
            "memray (memray attach PID)"
        )

    def request_trace(self) -> Mapping[str, Any]:
        """The ``/debug/memory-trace`` dump: start, follow or collect a tracemalloc box."""
        answer = self.tracing.request()
        self._wake.set()  # so the thread times the end of the box
        return answer

    def dump(self) -> Mapping[str, Any]:
        """The ``/debug/memory`` dump: verdict, recent samples, the last trace report."""
        samples = self.trend.samples[-30:]
        report = self.tracing.report
        return {
            "verdict": self._verdict.as_dict(),
            "settings": {
                "interval_s": self.interval,
                "window_s": self.window,
                "threshold_mb_per_min": self.threshold,
                "trace_seconds": self.tracing.seconds,
            },
            "samples": [
                {
                    "age_s": round(time.monotonic() - s.at, 1),
                    "rss_mb": round(s.rss / 1024 / 1024, 1),
                    "heap_blocks": s.heap_blocks,
                    "gc_counts": list(s.gc_counts),
                    "gc_collections": s.gc_collections,
                }
                for s in samples
            ],
            "last_trace": report.as_dict() if report is not None else None,
            "tracemalloc_on": tracemalloc.is_tracing(),
            "retainers": [r.as_dict() for r in self.retainers],
            "growing_containers": [g.as_dict() for g in self.census.growing()[:10]],
            "largest_containers": [g.as_dict() for g in self.census.largest(10)],
            "census": {
                "taken": self.census.censuses,
                "last_walk_s": round(self.census.last_walk_s, 4),
                "longest_gil_hold_s": round(self.census.longest_hold_s, 4),
            },
            "malloc": stats.as_dict() if (stats := malloc_stats()) is not None else None,
        }

    async def check(self) -> dict[str, Any]:
        """The ``memory`` check: warns while a leak is suspected; never fails readiness."""
        verdict = self._verdict
        if verdict.suspected:
            raise Degraded(verdict.text)
        return verdict.as_dict()
