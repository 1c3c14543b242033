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
from .sampler import BLOCK_BYTES, Sampler
from .tracing import Tracing
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


class MemoryMonitor:
    """RSS and Python-heap trend with a leak verdict, and tracemalloc on demand.

    * ``interval``: seconds between samples (10).
    * ``window``: seconds of samples the slope is fitted over (600).
    * ``threshold``: MB per minute of steady RSS growth that makes a leak suspected (1).
    * ``trace_seconds``: length of the on-demand tracemalloc box (30).
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
    ) -> None:
        self.host = host
        self.interval = interval
        self.window = window
        self.threshold = threshold
        self.sampler = Sampler()
        self.trend = Trend(window, interval, threshold)
        self.tracing = Tracing(trace_seconds)
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

    def _tick(self) -> None:
        report = self.tracing.finish()
        if report is not None:
            top = report.lines[0] if report.lines else None
            logger.warning(
                "tracemalloc over %.1f s: +%.0f KiB still alive; grew most at %s",
                report.seconds,
                report.total_growth / 1024,
                f"{top.where} (+{top.size_diff / 1024:.0f} KiB): {top.source}"
                if top
                else "(nothing grew)",
            )
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
            logger.warning(
                "%s. The lines responsible: GET /debug/memory-trace with the token", verdict.text
            )
        elif was and not verdict.suspected:
            logger.info("memory growth no longer looks like a leak: %s", verdict.text)

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
        }

    async def check(self) -> dict[str, Any]:
        """The ``memory`` check: warns while a leak is suspected; never fails readiness."""
        verdict = self._verdict
        if verdict.suspected:
            raise Degraded(verdict.text)
        return verdict.as_dict()
