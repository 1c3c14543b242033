"""The live page: what lifesigns sees, in a browser, refreshed every second.

``/lifesigns/`` serves one self-contained HTML file (no CDN, no build step: its plots are
SVG drawn by a few lines of script) and ``/lifesigns/data`` the JSON it polls. The data is
composed from the host's dumps and metrics on the thread that serves it, so the page keeps
working while the event loop is frozen when the side port (or the agent) serves it. The
data needs the token; the page itself holds nothing secret and asks for the token once
(kept in the browser's session storage).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any, Protocol

__all__ = ["LiveView", "page_html"]

FAST_DUMPS = ("stalls", "limiter", "pool", "supervised", "memory", "requests")
"""Dumps cheap enough to take every second from any thread (``tasks`` waits on the loop)."""

LAB_FIELDS = ("name", "seed", "seeds", "title", "look_for", "trigger", "available")
"""What the lab tab shows of each incident (the incident lab's ``lab`` dump)."""


class _Host(Protocol):
    @property
    def dumps(self) -> Mapping[str, Any]: ...

    @property
    def registry(self) -> Any: ...

    @property
    def settings(self) -> Any: ...


def page_html() -> bytes:
    """The page's HTML (script and style inline)."""
    return resources.files(__name__).joinpath("page.html").read_bytes()


class LiveView:
    """Composes ``/lifesigns/data`` from a host's dumps and metrics.

    Each dump is taken under a guard: one that raises is reported as an error entry and
    never breaks the page. Calls are bounded by the dumps' own cost (all of
    :data:`FAST_DUMPS` read state and return).
    """

    def __init__(self, host: _Host, *, extra: Mapping[str, Any] | None = None) -> None:
        self.host = host
        self.extra = dict(extra or {})

    def data(self) -> dict[str, Any]:
        """The JSON-ready state of the service now."""
        dumps = self.host.dumps
        answer: dict[str, Any] = {
            "at": time.time(),
            "service": getattr(self.host.settings, "service", "service"),
            "version": getattr(self.host.settings, "version", None),
            **self.extra,
        }
        for name in FAST_DUMPS:
            producer = dumps.get(name)
            if producer is None:
                answer[name] = None
                continue
            try:
                answer[name] = producer()
            except Exception as exc:  # a broken dump is shown, never fatal to the page
                answer[name] = {"error": f"{type(exc).__name__}: {exc}"}
        if "lab" in dumps:
            answer["lab"] = lab_incidents(dumps["lab"])
        answer["metrics"] = metric_figures(self.host.registry.collect())
        return answer


def lab_incidents(producer: Any) -> list[dict[str, Any]] | dict[str, str]:
    """The incident lab's dump as the lab tab's list (a list, or ``{"incidents": [...]}``)."""
    try:
        found = producer()
    except Exception as exc:  # the lab is a demo: a broken dump is shown, never fatal
        return {"error": f"{type(exc).__name__}: {exc}"}
    if isinstance(found, Mapping):
        found = found.get("incidents", [])
    incidents: list[dict[str, Any]] = []
    for item in found if isinstance(found, Iterable) else ():
        if isinstance(item, Mapping) and item.get("name") and item.get("trigger"):
            incidents.append({key: item[key] for key in LAB_FIELDS if key in item})
    return incidents


def metric_figures(families: Iterable[Any]) -> dict[str, Any]:
    """The figures the page plots, read from the registry's metric families."""
    figures: dict[str, Any] = {
        "loop_lag_p99_s": None,
        "heartbeat_age_s": None,
        "stalls_total": 0.0,
        "requests_total": 0.0,
        "requests_by_class": {},
        "requests_in_flight": None,
        "request_p50_s": None,
        "request_p99_s": None,
        "routes": {},
        "rss_bytes": None,
        "threadpool_borrowed": None,
        "threadpool_capacity": None,
    }
    request_buckets: dict[float, float] = {}
    lag_buckets: dict[float, float] = {}
    for family in families:
        name = family.name
        for sample in family.samples:
            sname, labels, value = sample.name, sample.labels, sample.value
            if sname == "lifesigns_loop_lag_seconds_bucket":
                le = float(labels["le"])
                lag_buckets[le] = lag_buckets.get(le, 0.0) + value
            elif sname == "lifesigns_loop_heartbeat_age_seconds":
                figures["heartbeat_age_s"] = value
            elif sname == "lifesigns_loop_stalls_total":
                figures["stalls_total"] += value
            elif sname == "lifesigns_http_requests_total":
                figures["requests_total"] += value
                by_class = figures["requests_by_class"]
                status = labels.get("status_class", "?")
                by_class[status] = by_class.get(status, 0.0) + value
                route = labels.get("route", "?")
                figures["routes"][route] = figures["routes"].get(route, 0.0) + value
            elif sname == "lifesigns_http_request_duration_seconds_bucket":
                le = float(labels["le"])
                request_buckets[le] = request_buckets.get(le, 0.0) + value
            elif sname in ("lifesigns_http_requests_in_flight", "lifesigns_requests_in_flight"):
                figures["requests_in_flight"] = value
            elif sname == "lifesigns_memory_rss_bytes":
                figures["rss_bytes"] = value
            elif sname == "lifesigns_threadpool_tokens_borrowed":
                figures["threadpool_borrowed"] = value
            elif sname == "lifesigns_threadpool_tokens_capacity":
                figures["threadpool_capacity"] = value
        del name
    figures["loop_lag_p99_s"] = quantile(lag_buckets, 0.99)
    figures["request_p50_s"] = quantile(request_buckets, 0.5)
    figures["request_p99_s"] = quantile(request_buckets, 0.99)
    top = sorted(figures["routes"].items(), key=lambda kv: kv[1], reverse=True)[:10]
    figures["routes"] = dict(top)
    return figures


def quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """The ``q`` quantile of cumulative histogram buckets, as Prometheus interpolates it."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (
                count - previous_count
            )
        previous_bound, previous_count = bound, count
    return previous_bound
