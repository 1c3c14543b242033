"""Memory: RSS and Python-heap trend, leak suspicion, tracemalloc on demand.

:func:`attach` gives a :class:`~lifesigns.Lifesigns` a :class:`MemoryMonitor`: a
component sampling from its own thread, a non-critical ``memory`` check (``warn`` while
a leak is suspected), metrics, and two token-protected dumps: ``/debug/memory`` (trend
and samples) and ``/debug/memory-trace`` (a time-boxed tracemalloc comparison).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from .. import _config
from .._config import UNSET
from .monitor import MemoryMonitor
from .sampler import MemorySample, Sampler
from .tracing import TraceReport, Tracing
from .trend import Trend, Verdict

if TYPE_CHECKING:
    from ..core import Lifesigns

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

_attached: weakref.WeakKeyDictionary[Lifesigns, MemoryMonitor] = weakref.WeakKeyDictionary()


def _positive(name: str, value: object, *, from_env: bool = False) -> float:
    return _config.seconds(name, value, from_env=from_env, maximum=1_000_000.0)


def attach(
    signs: Lifesigns,
    *,
    interval: float | object = UNSET,
    window: float | object = UNSET,
    threshold: float | object = UNSET,
    trace_seconds: float | object = UNSET,
    trace_every: float | object = UNSET,
) -> MemoryMonitor:
    """Give ``signs`` a memory monitor (idempotent; before the lifespan starts).

    Each option may come from ``LIFESIGNS_MEMORY_<NAME>``: ``interval`` seconds between
    samples (10), ``window`` seconds the slope is fitted over (600), ``threshold`` MB/min
    of steady RSS growth that makes a leak suspected (1), ``trace_seconds`` of the
    tracemalloc box (30), ``trace_every`` seconds between two boxes opened
    unasked on leak suspicion (900).
    """
    monitor = _attached.get(signs)
    if monitor is not None:
        return monitor
    monitor = MemoryMonitor(
        signs,
        interval=_config.resolve("memory_interval", interval, 10.0, _positive),
        window=_config.resolve("memory_window", window, 600.0, _positive),
        threshold=_config.resolve("memory_threshold", threshold, 1.0, _positive),
        trace_seconds=_config.resolve("memory_trace_seconds", trace_seconds, 30.0, _positive),
        trace_every=_config.resolve("memory_trace_every", trace_every, 900.0, _positive),
    )
    signs.add_component(monitor)
    signs.check("memory", monitor.check, critical=False, timeout=0.5, component_type="system")
    signs.add_dump("memory", monitor.dump)
    signs.add_dump("memory-trace", monitor.request_trace)
    _attached[signs] = monitor
    return monitor
