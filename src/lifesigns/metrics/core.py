"""The metrics of the foundation: checks, probes, start-up and phase.

Each :class:`~lifesigns.Lifesigns` owns its own ``CollectorRegistry``, so two instances
in one process never collide, and nothing is added to prometheus_client's global
registry behind the application's back. Other layers register their collectors on the
same registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ..health.check import Check, CheckResult
from ..health.lifecycle import Phase
from ..health.status import Status

CONTENT_TYPE = CONTENT_TYPE_LATEST

_CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class CoreMetrics:
    """Counters and gauges for checks, probe answers, start-up and the service's phase."""

    def __init__(self, registry: CollectorRegistry, service: str, version: str | None) -> None:
        self.registry = registry
        Info("lifesigns_service", "The service lifesigns watches.", registry=registry).info(
            {"service": service, "version": version or ""}
        )
        self.phase = Enum(
            "lifesigns_phase",
            "Where the service is in its life: starting, ready, draining...",
            states=[p.value for p in Phase],
            registry=registry,
        )
        self.check_up = Gauge(
            "lifesigns_check_up",
            "1 when the check's last result was pass or warn, 0 when it failed.",
            ["check", "critical"],
            registry=registry,
        )
        self.check_runs = Counter(
            "lifesigns_check_runs",
            "Check runs by result (cached answers are not runs).",
            ["check", "status"],
            registry=registry,
        )
        self.check_duration = Histogram(
            "lifesigns_check_duration_seconds",
            "How long each check run took.",
            ["check"],
            buckets=_CHECK_BUCKETS,
            registry=registry,
        )
        self.check_timeouts = Counter(
            "lifesigns_check_timeouts",
            "Check runs that did not finish within their timeout.",
            ["check"],
            registry=registry,
        )
        self.probe_answers = Counter(
            "lifesigns_probe_answers",
            "Probe requests answered, by probe and HTTP status code.",
            ["probe", "code"],
            registry=registry,
        )
        self.startup_attempts = Counter(
            "lifesigns_startup_attempts",
            "Attempts to reach a dependency during start-up.",
            ["dependency", "outcome"],
            registry=registry,
        )
        self.startup_seconds = Gauge(
            "lifesigns_startup_duration_seconds",
            "Seconds from the start of the lifespan until the service became ready.",
            registry=registry,
        )
        self.phase.state(Phase.CREATED.value)

    def observe_check(self, check: Check, result: CheckResult) -> None:
        """Record a fresh check result."""
        self.check_up.labels(check.name, str(check.critical).lower()).set(
            0 if result.status is Status.FAIL else 1
        )
        self.check_runs.labels(check.name, result.status.value).inc()
        self.check_duration.labels(check.name).observe(result.duration)
        if result.timed_out:
            self.check_timeouts.labels(check.name).inc()


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus text exposition format."""
    return generate_latest(registry)
