"""Memory: RSS and Python-heap trend, leak suspicion, tracemalloc on demand.

:func:`attach` gives a host a :class:`MemoryMonitor`: a component sampling from its own
thread, a non-critical ``memory`` check (``warn`` while a leak is suspected), metrics,
and two token-protected dumps: ``/debug/memory`` (trend and samples) and
``/debug/memory-trace`` (a time-boxed tracemalloc comparison).
"""

from __future__ import annotations

from .._config import UNSET
from ..host import HasHost, Host, as_host
from .monitor import MemoryMonitor
from .sampler import MemorySample, Sampler
from .tracing import TraceReport, Tracing
from .trend import Trend, Verdict

__all__ = [
    "MemoryMonitor",
    "MemorySample",
    "Sampler",
    "TraceReport",
    "Tracing",
    "Trend",
    "Verdict",
    "attach",
]


def attach(
    owner: Host | HasHost,
    *,
    interval: float | object = UNSET,
    window: float | object = UNSET,
    threshold: float | object = UNSET,
    trace_seconds: float | object = UNSET,
    trace_every: float | object = UNSET,
) -> MemoryMonitor:
    """Give ``owner`` (a ``Host`` or a ``Lifesigns``) a memory monitor; before the lifespan.

    Options not given come from the host's settings, ``memory_<name>`` in the settings
    table (so ``LIFESIGNS_MEMORY_INTERVAL`` and so on): ``interval`` seconds between
    samples (10), ``window`` seconds the slope is fitted over (600), ``threshold`` MB/min
    of steady RSS growth that makes a leak suspected (1), ``trace_seconds`` of the
    tracemalloc box (30), ``trace_every`` seconds between two boxes opened unasked on
    leak suspicion (900). Attaching again with the same settings returns the
    same monitor (``Lifesigns()`` attaches one unless ``memory=False``); with others it
    raises :class:`~lifesigns.errors.ConfigError` naming both.
    """
    host = as_host(owner)
    settings = host.settings.override(
        memory_interval=interval,
        memory_window=window,
        memory_threshold=threshold,
        memory_trace_seconds=trace_seconds,
        memory_trace_every=trace_every,
    ).pick(
        "memory_interval",
        "memory_window",
        "memory_threshold",
        "memory_trace_seconds",
        "memory_trace_every",
    )

    def build() -> MemoryMonitor:
        monitor = MemoryMonitor(
            host,
            interval=settings["memory_interval"],
            window=settings["memory_window"],
            threshold=settings["memory_threshold"],
            trace_seconds=settings["memory_trace_seconds"],
            trace_every=settings["memory_trace_every"],
            is_app_file=host.frames.is_app,
        )
        host.add_component(monitor)
        host.add_check(
            "memory", monitor.check, critical=False, timeout=0.5, component_type="system"
        )
        host.add_dump("memory", monitor.dump)
        host.add_dump("memory-trace", monitor.request_trace)
        return monitor

    return host.layer("memory", settings, build)
