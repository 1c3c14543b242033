"""Request metrics (rate, errors, duration) by route template, built when Prometheus scrapes.

:class:`~lifesigns.http.requests.RequestTracker` keeps a tally of integer counts per
route template, method and status; this collector turns it into Prometheus families
(cumulative buckets, status classes) at scrape time, so the request path never takes a
lock or looks up a label.

* ``lifesigns_http_requests_total{route,method,status_class}``: requests served.
* ``lifesigns_http_request_duration_seconds{route,method}``: a histogram of their durations.
* ``lifesigns_http_requests_in_flight``: requests being served right now.
* ``lifesigns_http_oldest_request_age_seconds``: how long the oldest of them has run.
* ``lifesigns_http_deadline_exceeded_total{route,method}``: answered 504 at their deadline.
* ``lifesigns_http_client_disconnects_total{route,method}``: the client left before the
  response was complete (a request that got no response at all counts as status 499).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .requests import DURATION_BUCKETS, RequestTracker

_BOUNDS = [repr(float(b)) for b in DURATION_BUCKETS] + ["+Inf"]


def status_class(status: int) -> str:
    """``200`` -> ``"2xx"``; anything outside 100-599 is ``"other"``."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


class RequestCollector(Collector):
    """The ``lifesigns_http_*`` families of one tracker, computed when scraped."""

    def __init__(self, tracker: RequestTracker) -> None:
        self._tracker = tracker

    def describe(self) -> Iterator[Metric]:
        """The families' names, without reading the tally (for duplicate-name checks)."""
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        """The families, with one sample per route, method and status class seen."""
        tracker = self._tracker
        requests, durations, in_flight, oldest, deadlines, disconnects = self._families()
        by_class: dict[tuple[str, str, str], int] = {}
        by_route: dict[tuple[str, str], list[float]] = {}
        for route, method, status, row in tracker.served():
            key = (route, method, status_class(status))
            by_class[key] = by_class.get(key, 0) + int(sum(row[:-1]))
            merged = by_route.get((route, method))
            if merged is None:
                by_route[(route, method)] = row
            else:
                for i, value in enumerate(row):
                    merged[i] += value
        for labels, count in sorted(by_class.items()):
            requests.add_metric(list(labels), count)
        for (route, method), row in sorted(by_route.items()):
            cumulative: list[float] = []
            running = 0.0
            for in_bucket in row[:-1]:
                running += in_bucket
                cumulative.append(running)
            durations.add_metric(
                [route, method], list(zip(_BOUNDS, cumulative, strict=True)), row[-1]
            )
        active = tracker.in_flight()
        in_flight.add_metric([], len(active))
        oldest.add_metric([], active[0].age(time.monotonic()) if active else 0.0)
        for (route, method), count in sorted(tracker.deadlines_exceeded().items()):
            deadlines.add_metric([route, method], count)
        for (route, method), count in sorted(tracker.disconnects().items()):
            disconnects.add_metric([route, method], count)
        yield from (requests, durations, in_flight, oldest, deadlines, disconnects)

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily,
        HistogramMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
    ]:
        pair = ["route", "method"]
        return (
            CounterMetricFamily(
                "lifesigns_http_requests",
                "Requests served, by route template, method and status class.",
                labels=["route", "method", "status_class"],
            ),
            HistogramMetricFamily(
                "lifesigns_http_request_duration_seconds",
                "How long requests took, from arrival to the end of their response.",
                labels=pair,
            ),
            GaugeMetricFamily(
                "lifesigns_http_requests_in_flight", "Requests being served right now."
            ),
            GaugeMetricFamily(
                "lifesigns_http_oldest_request_age_seconds",
                "Seconds the oldest request in flight has been running (0 when none).",
            ),
            CounterMetricFamily(
                "lifesigns_http_deadline_exceeded",
                "Requests cancelled at their deadline and answered 504.",
                labels=pair,
            ),
            CounterMetricFamily(
                "lifesigns_http_client_disconnects",
                "Requests whose client went away before the response was complete.",
                labels=pair,
            ),
        )


def register_request_metrics(registry: CollectorRegistry, tracker: RequestTracker) -> None:
    """Export ``tracker``'s tally on ``registry`` as the ``lifesigns_http_*`` metrics."""
    registry.register(RequestCollector(tracker))
