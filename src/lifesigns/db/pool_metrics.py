"""Prometheus metrics of watched pools: gauges, waits, holds, leaks and timeouts.

The checkout path is hot, so it records into :class:`LightHistogram` (one uncontended
lock, a bisect, two additions) instead of ``prometheus_client.Histogram`` (a lock per
bucket and per sum); gauges are read from the pool when Prometheus scrapes, never pushed
on events. One :class:`PoolCollector` per host registry serves every pool it
watches, labelled ``pool``.

Series (all prefixed ``lifesigns_pool_``):

* ``size``, ``capacity``, ``checked_out``, ``checked_in``, ``overflow``, ``waiting``,
  ``utilization``, ``saturated``, ``longest_hold_seconds``, ``peak_checked_out`` (gauges)
* ``checkouts_total``, ``checkout_timeouts_total``, ``leaks_total{site}``,
  ``exhaustion_episodes_total`` (counters)
* ``checkout_wait_seconds``, ``hold_seconds`` (histograms)
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector


class _Counts(Protocol):
    @property
    def checkouts(self) -> int: ...

    @property
    def timeouts(self) -> int: ...

    @property
    def wait_histogram(self) -> LightHistogram: ...

    @property
    def hold_histogram(self) -> LightHistogram: ...


class _Leaks(Protocol):
    def by_site(self) -> dict[str, int]: ...


class PoolSource(Protocol):
    """What the collector reads of one watched pool (a ``PoolForensics`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def holders(self) -> _Counts: ...

    @property
    def leaks(self) -> _Leaks: ...

    @property
    def episodes_total(self) -> int: ...

    def gauges(self) -> dict[str, float | None]: ...


WAIT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Checkout wait buckets, seconds: sub-millisecond (a free connection) to the 30 s
default ``pool_timeout``."""

HOLD_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
"""Hold-time buckets, seconds: one query to a batch job or a leak."""

MAX_SITE_LABELS = 100
"""Distinct ``site`` label values for leaks; later sites count as ``other``."""


class LightHistogram:
    """A fixed-bucket histogram cheap enough for every checkout."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(buckets)
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Count one observation (seconds)."""
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[int], float]:
        """Cumulative counts per bucket (``+Inf`` last) and the sum."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for c in counts:
            running += c
            cumulative.append(running)
        return cumulative, total

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self._counts)

    def family(self, name: str, doc: str, pool: str) -> HistogramMetricFamily:
        """The histogram as a Prometheus metric family labelled ``pool``."""
        cumulative, total = self.snapshot()
        family = HistogramMetricFamily(name, doc, labels=["pool"])
        bounds = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        family.add_metric([pool], list(zip(bounds, cumulative, strict=True)), total)
        return family


class PoolCollector(Collector):
    """Reads every watched pool of one registry when Prometheus scrapes."""

    def __init__(self, pools: Callable[[], Sequence[PoolSource]]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        """The metric families, one sample per pool."""
        pools = list(self._pools())
        gauges = {
            "size": "Connections the pool keeps open (pool_size).",
            "capacity": "Most connections the pool may hand out (pool_size + max_overflow).",
            "checked_out": "Connections checked out right now.",
            "checked_in": "Idle connections in the pool right now.",
            "overflow": "Overflow connections open beyond pool_size.",
            "waiting": "Checkouts waiting for a connection right now.",
            "utilization": "Checked-out connections as a fraction of capacity.",
            "saturated": "1 while every connection is checked out or a checkout waits.",
            "longest_hold_seconds": "Age of the oldest checked-out connection.",
            "peak_checked_out": "Most connections checked out at once since start.",
        }
        families = {
            key: GaugeMetricFamily(f"lifesigns_pool_{key}", doc, labels=["pool"])
            for key, doc in gauges.items()
        }
        checkouts = CounterMetricFamily(
            "lifesigns_pool_checkouts", "Connections checked out.", labels=["pool"]
        )
        timeouts = CounterMetricFamily(
            "lifesigns_pool_checkout_timeouts",
            "Checkouts that gave up after pool_timeout (sqlalchemy.exc.TimeoutError).",
            labels=["pool"],
        )
        episodes = CounterMetricFamily(
            "lifesigns_pool_exhaustion_episodes",
            "Times the pool crossed its high-water mark or a checkout timed out.",
            labels=["pool"],
        )
        leaks = CounterMetricFamily(
            "lifesigns_pool_leaks",
            "Connections held past leak_threshold, by checkout site.",
            labels=["pool", "site"],
        )
        waits: list[Metric] = []
        holds: list[Metric] = []
        for forensics in pools:
            name = forensics.name
            gauge = forensics.gauges()
            for key, family in families.items():
                value = gauge.get(key)
                if value is not None:
                    family.add_metric([name], float(value))
            registry = forensics.holders
            checkouts.add_metric([name], registry.checkouts)
            timeouts.add_metric([name], registry.timeouts)
            episodes.add_metric([name], forensics.episodes_total)
            for site, count in forensics.leaks.by_site().items():
                leaks.add_metric([name, site], count)
            waits.append(
                registry.wait_histogram.family(
                    "lifesigns_pool_checkout_wait_seconds",
                    "Time to get a connection: queueing for it, plus opening it when the "
                    "pool grows.",
                    name,
                )
            )
            holds.append(
                registry.hold_histogram.family(
                    "lifesigns_pool_hold_seconds",
                    "Time from checkout to checkin of a connection.",
                    name,
                )
            )
        yield from families.values()
        yield checkouts
        yield timeouts
        yield episodes
        yield leaks
        yield from _merge(waits)
        yield from _merge(holds)

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the series depend on which pools are attached."""
        return iter(())


def _merge(families: list[Metric]) -> Iterator[Metric]:
    if not families:
        return
    merged = families[0]
    for other in families[1:]:
        merged.samples.extend(other.samples)
    yield merged
