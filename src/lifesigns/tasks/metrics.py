"""Prometheus metrics of supervised tasks, on the instance's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class TaskMetrics:
    """Runs by outcome, run durations, restarts, last success and given-up tasks."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "lifesigns_task_runs",
            "Runs of supervised tasks by outcome: success, failure, overrun (cancelled at "
            "its timeout) or skipped (the previous run was still going).",
            ["task", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "lifesigns_task_run_duration_seconds",
            "How long each run of a supervised task took.",
            ["task"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.restarts = Counter(
            "lifesigns_task_restarts",
            "Retries and restarts of supervised tasks after a failure.",
            ["task"],
            registry=registry,
        )
        self.last_success = Gauge(
            "lifesigns_task_last_success_timestamp_seconds",
            "When a supervised task last succeeded (seconds since the epoch).",
            ["task"],
            registry=registry,
        )
        self.failed = Gauge(
            "lifesigns_task_failed",
            "1 when a supervised task exceeded its restart intensity and was given up.",
            ["task"],
            registry=registry,
        )
        self.unsupervised = Gauge(
            "lifesigns_unsupervised_tasks",
            "Tasks found running outside lifesigns' supervision when the lifespan started.",
            registry=registry,
        )
