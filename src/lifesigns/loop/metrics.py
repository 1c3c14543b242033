"""Prometheus metrics of the loop layer, on the instance's own registry.

The loop thread only observes the lag histogram (one ``observe`` per beat); everything
else is set by the reporter thread or computed when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .census import Snapshot
from .limiter import LimiterStats
from .report import StallEnded, short_site

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_SITES = 50
"""Distinct ``site`` label values before further sites count as ``other``."""
MAX_TASK_NAMES = 20
"""Coroutine names with their own ``pending tasks`` series; the rest add up in ``other``."""


class LoopMetrics:
    """Loop lag, stalls by site and class, longest stall, limiter saturation, pending tasks."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Histogram(
            "lifesigns_loop_lag_seconds",
            "How late the loop ran its heartbeat, sampled every beat.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.stalls = Counter(
            "lifesigns_loop_stalls",
            "Stalls of the event loop by site (innermost application frame) and class.",
            ["site", "stall_class"],
            registry=registry,
        )
        self.longest = Gauge(
            "lifesigns_loop_longest_stall_seconds",
            "The longest stall of the event loop since start.",
            registry=registry,
        )
        self.heartbeat_age = Gauge(
            "lifesigns_loop_heartbeat_age_seconds",
            "Seconds since the event loop last ran its heartbeat (grows while it is stalled).",
            registry=registry,
        )
        self.tokens_borrowed = Gauge(
            "lifesigns_threadpool_tokens_borrowed",
            "Tokens of anyio's default thread limiter in use.",
            registry=registry,
        )
        self.tokens_total = Gauge(
            "lifesigns_threadpool_tokens_capacity",
            "Tokens of anyio's default thread limiter.",
            registry=registry,
        )
        self.tokens_waiting = Gauge(
            "lifesigns_threadpool_waiting",
            "Callers waiting for a token of anyio's default thread limiter.",
            registry=registry,
        )
        self.saturations = Counter(
            "lifesigns_threadpool_saturations",
            "Times the default thread limiter stayed full past the threshold.",
            registry=registry,
        )
        self.pending = Gauge(
            "lifesigns_tasks_pending",
            "Pending asyncio tasks by coroutine name, at the latest census.",
            ["coroutine"],
            registry=registry,
        )
        self._sites: set[str] = set()
        self._task_names: set[str] = set()
        self._longest = 0.0

    def bind(
        self, heartbeat_age: Callable[[], float], limiter: Callable[[], LimiterStats | None]
    ) -> None:
        """Compute the gauges that are read at scrape time."""
        self.heartbeat_age.set_function(heartbeat_age)

        def stat(pick: Callable[[LimiterStats], float]) -> Callable[[], float]:
            def read() -> float:
                s = limiter()
                return float("nan") if s is None else pick(s)

            return read

        self.tokens_borrowed.set_function(stat(lambda s: s.borrowed))
        self.tokens_total.set_function(stat(lambda s: s.total))
        self.tokens_waiting.set_function(stat(lambda s: s.waiting))

    def on_event(self, event: object) -> None:
        """Count an ended stall (a reporter listener)."""
        if not isinstance(event, StallEnded):
            return
        report = event.report
        site = short_site(report)
        if site not in self._sites:
            site = site if len(self._sites) < MAX_SITES else "other"
            self._sites.add(site)
        self.stalls.labels(site, report.stall_class.value).inc()
        duration = report.duration or 0.0
        if duration > self._longest:
            self._longest = duration
            self.longest.set(duration)

    def on_census(self, snapshot: Snapshot) -> None:
        """Publish pending tasks by coroutine name."""
        totals: dict[str, float] = {}
        for group in snapshot.groups:
            totals[group.coroutine] = totals.get(group.coroutine, 0) + group.count
        ranked = sorted(totals.items(), key=lambda kv: -kv[1])
        shown = dict(ranked[:MAX_TASK_NAMES])
        other = sum(n for _, n in ranked[MAX_TASK_NAMES:]) + max(
            0, snapshot.total - sum(totals.values())
        )
        for name in self._task_names - set(shown):
            self.pending.remove(name)
        for name, n in shown.items():
            self.pending.labels(name).set(n)
        self.pending.labels("other").set(other)
        self._task_names = set(shown)
