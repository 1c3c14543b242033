"""The Grafana dashboard for lifesigns' metrics, built from one table of rows and panels.

The JSON that ships (``mixin/lifesigns.dashboard.json``, printed by
``lifesigns rules --dashboard``) is this module's output, committed; a test checks the two
agree. Regenerate after editing the table::

    python -m lifesigns.metrics.dashboard > src/lifesigns/metrics/mixin/lifesigns.dashboard.json

It is written as the Grafana mixins write theirs: ``__inputs`` and ``__requires`` for
import, a ``$datasource`` variable, ``$job`` and ``$instance``, and ``$worker`` for when the
agent labels each worker's series (without an agent the label is absent and ``.*`` matches).
One row per incident kind: the event loop, the thread pool, the connection pool, tasks,
memory, requests, probes. Standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SELECTOR = 'job=~"$job", instance=~"$instance", worker=~"$worker"'
"""The label matchers every query carries (``{S}`` in the table below)."""
RATE = "$__rate_interval"
_5XX = 'status_class="5xx"'
UID = "lifesigns-overview"
GRAFANA_VERSION = "10.4.0"


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a panel, with its legend."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """A time series (or stat) panel: title, what it shows, its queries and unit."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8


@dataclass(frozen=True)
class Row:
    """A row of panels about one kind of incident."""

    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def _q(expr: str, legend: str = "") -> Query:
    return Query(
        expr.replace("{S}", "{" + SELECTOR + "}").replace("{S,", "{" + SELECTOR + ","), legend
    )


def _rate(metric: str, matchers: str = "") -> str:
    """``rate(metric{S, matchers}[$__rate_interval])``."""
    return f"rate({metric}{{S{', ' + matchers if matchers else ''}}}[{RATE}])"


def _increase(metric: str) -> str:
    return f"increase({metric}{{S}}[{RATE}])"


ROWS: tuple[Row, ...] = (
    Row(
        "Event loop and stalls",
        (
            Panel(
                "Heartbeat age",
                "Seconds since the event loop last ran its heartbeat: it grows while the loop "
                "is frozen (seen live when /metrics is scraped out of band).",
                (
                    _q(
                        "max by (instance, worker) (lifesigns_loop_heartbeat_age_seconds{S})",
                        "{{instance}} {{worker}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Loop lag",
                "How late the loop ran its heartbeat: p50 and p99.",
                (
                    _q(
                        "histogram_quantile(0.99, sum by (instance, worker, le) "
                        f"({_rate('lifesigns_loop_lag_seconds_bucket')}))",
                        "p99 {{instance}} {{worker}}",
                    ),
                    _q(
                        "histogram_quantile(0.5, sum by (instance, worker, le) "
                        f"({_rate('lifesigns_loop_lag_seconds_bucket')}))",
                        "p50 {{instance}} {{worker}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Stalls by site",
                "Stalls of the event loop by the innermost application frame and class.",
                (
                    _q(
                        f"sum by (site, stall_class) ({_increase('lifesigns_loop_stalls_total')})",
                        "{{site}} ({{stall_class}})",
                    ),
                ),
            ),
            Panel(
                "Longest stall",
                "The longest stall since each process started.",
                (
                    _q(
                        "max by (instance, worker) (lifesigns_loop_longest_stall_seconds{S})",
                        "{{instance}} {{worker}}",
                    ),
                ),
                unit="s",
                kind="stat",
                width=6,
            ),
            Panel(
                "Pending asyncio tasks by coroutine",
                "Tasks that pile up are a leak of work: the census counts them by coroutine.",
                (_q("sum by (coroutine) (lifesigns_tasks_pending{S})", "{{coroutine}}"),),
                width=18,
            ),
        ),
    ),
    Row(
        "Thread pool",
        (
            Panel(
                "Thread tokens in use",
                "Tokens of anyio's default thread limiter borrowed, against its capacity.",
                (
                    _q(
                        "sum by (instance, worker) (lifesigns_threadpool_tokens_borrowed{S})",
                        "in use {{instance}} {{worker}}",
                    ),
                    _q(
                        "sum by (instance, worker) (lifesigns_threadpool_tokens_capacity{S})",
                        "capacity {{instance}} {{worker}}",
                    ),
                ),
            ),
            Panel(
                "Callers waiting for a thread",
                "Sync endpoints and run_in_threadpool calls queued for a token.",
                (
                    _q(
                        "sum by (instance, worker) (lifesigns_threadpool_waiting{S})",
                        "{{instance}} {{worker}}",
                    ),
                ),
            ),
            Panel(
                "Saturation episodes",
                "Times the limiter stayed full past its threshold.",
                (
                    _q(
                        "sum by (instance, worker) "
                        f"({_increase('lifesigns_threadpool_saturations_total')})",
                        "{{instance}} {{worker}}",
                    ),
                ),
            ),
        ),
    ),
    Row(
        "Connection pool",
        (
            Panel(
                "Connections checked out",
                "Connections checked out of each pool, against its capacity "
                "(pool_size + max_overflow).",
                (
                    _q("sum by (pool) (lifesigns_pool_checked_out{S})", "checked out {{pool}}"),
                    _q("sum by (pool) (lifesigns_pool_capacity{S})", "capacity {{pool}}"),
                ),
            ),
            Panel(
                "Checkout wait",
                "Time to get a connection (p99), and checkouts waiting right now.",
                (
                    _q(
                        "histogram_quantile(0.99, sum by (pool, le) "
                        f"({_rate('lifesigns_pool_checkout_wait_seconds_bucket')}))",
                        "p99 wait {{pool}}",
                    ),
                    _q("sum by (pool) (lifesigns_pool_waiting{S})", "waiting {{pool}}"),
                ),
                unit="s",
            ),
            Panel(
                "Timeouts and leaks",
                "Checkouts that gave up after pool_timeout, and connections leaked.",
                (
                    _q(
                        f"sum by (pool) ({_increase('lifesigns_pool_checkout_timeouts_total')})",
                        "timeouts {{pool}}",
                    ),
                    _q(
                        f"sum by (pool) ({_increase('lifesigns_pool_leaks_total')}) "
                        "or sum by (pool) (lifesigns_pool_size{S}) * 0",
                        "leaks {{pool}}",
                    ),
                ),
            ),
            Panel(
                "Longest hold",
                "Age of the oldest checked-out connection of each pool.",
                (_q("max by (pool) (lifesigns_pool_longest_hold_seconds{S})", "{{pool}}"),),
                unit="s",
            ),
            Panel(
                "Bulkheads",
                "Units of work inside each bulkhead, against its limit, and callers waiting.",
                (
                    _q("sum by (bulkhead) (lifesigns_bulkhead_in_use{S})", "in use {{bulkhead}}"),
                    _q("sum by (bulkhead) (lifesigns_bulkhead_limit{S})", "limit {{bulkhead}}"),
                    _q("sum by (bulkhead) (lifesigns_bulkhead_waiting{S})", "waiting {{bulkhead}}"),
                ),
                width=16,
            ),
        ),
    ),
    Row(
        "Supervised tasks",
        (
            Panel(
                "Task runs by outcome",
                "Runs per second: success, failure, overrun (cancelled at its timeout), skipped.",
                (
                    _q(
                        f"sum by (task, outcome) ({_rate('lifesigns_task_runs_total')})",
                        "{{task}} {{outcome}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Since last success",
                "Seconds since each supervised task last succeeded.",
                (
                    _q(
                        "time() - max by (task) (lifesigns_task_last_success_timestamp_seconds{S})",
                        "{{task}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Tasks given up",
                "1 when a task exceeded its restart intensity and no longer runs.",
                (_q("max by (task) (lifesigns_task_failed{S})", "{{task}}"),),
                kind="stat",
            ),
        ),
    ),
    Row(
        "Memory",
        (
            Panel(
                "Resident memory",
                "RSS of each process.",
                (
                    _q(
                        "sum by (instance, worker) (lifesigns_memory_rss_bytes{S})",
                        "{{instance}} {{worker}}",
                    ),
                ),
                unit="bytes",
            ),
            Panel(
                "Growth",
                "Slope of memory over lifesigns' window, for RSS and the Python heap.",
                (
                    _q(
                        "sum by (instance, worker, kind) "
                        "(lifesigns_memory_growth_bytes_per_second{S})",
                        "{{kind}} {{instance}} {{worker}}",
                    ),
                ),
                unit="Bps",
            ),
            Panel(
                "Leak suspected",
                "1 while memory grows steadily faster than the threshold.",
                (
                    _q(
                        "max by (instance, worker) (lifesigns_memory_leak_suspected{S})",
                        "{{instance}} {{worker}}",
                    ),
                ),
                kind="stat",
            ),
        ),
    ),
    Row(
        "Requests",
        (
            Panel(
                "Requests by route",
                "Requests per second by route template and method.",
                (
                    _q(
                        f"sum by (route, method) ({_rate('lifesigns_http_requests_total')})",
                        "{{method}} {{route}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Error ratio by route",
                "The share of requests answered 5xx.",
                (
                    _q(
                        f"(sum by (route) ({_rate('lifesigns_http_requests_total', _5XX)}) "
                        f"or sum by (route) ({_rate('lifesigns_http_requests_total')}) * 0) "
                        f"/ sum by (route) ({_rate('lifesigns_http_requests_total')})",
                        "{{route}}",
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "Latency by route",
                "p50 and p99 of request durations.",
                (
                    _q(
                        "histogram_quantile(0.99, sum by (route, le) "
                        f"({_rate('lifesigns_http_request_duration_seconds_bucket')}))",
                        "p99 {{route}}",
                    ),
                    _q(
                        "histogram_quantile(0.5, sum by (route, le) "
                        f"({_rate('lifesigns_http_request_duration_seconds_bucket')}))",
                        "p50 {{route}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "In flight",
                "Requests being served, and the age of the oldest.",
                (
                    _q(
                        "sum by (instance, worker) (lifesigns_http_requests_in_flight{S})",
                        "in flight {{instance}} {{worker}}",
                    ),
                    _q(
                        "max by (instance, worker) (lifesigns_http_oldest_request_age_seconds{S})",
                        "oldest (s) {{instance}} {{worker}}",
                    ),
                ),
            ),
            Panel(
                "Deadline 504s and client disconnects",
                "Requests cancelled at their deadline, and clients that left before the answer.",
                (
                    _q(
                        f"sum by (route) ({_increase('lifesigns_http_deadline_exceeded_total')}) "
                        "or sum(lifesigns_http_requests_in_flight{S}) * 0",
                        "504 {{route}}",
                    ),
                    _q(
                        f"sum by (route) ({_increase('lifesigns_http_client_disconnects_total')}) "
                        "or sum(lifesigns_http_requests_in_flight{S}) * 0",
                        "gone {{route}}",
                    ),
                ),
            ),
            Panel(
                "SLO burn rate (1 h)",
                "How fast the error and latency budgets burn: 1 is the pace that spends them "
                "exactly; 14.4 pages (needs the recording rules of `lifesigns rules`).",
                (
                    _q(
                        'lifesigns:http_request_errors:ratio_rate1h{job=~"$job"} / 0.001',
                        "errors {{job}}",
                    ),
                    _q(
                        'lifesigns:http_request_slow:ratio_rate1h{job=~"$job"} / 0.01',
                        "latency {{job}}",
                    ),
                ),
            ),
        ),
    ),
    Row(
        "Probes and checks",
        (
            Panel(
                "Checks up",
                "1 when a check's last result was pass or warn, 0 when it failed.",
                (_q("min by (check) (lifesigns_check_up{S})", "{{check}}"),),
            ),
            Panel(
                "Probe answers",
                "Probe requests answered per second, by probe and status code.",
                (
                    _q(
                        f"sum by (probe, code) ({_rate('lifesigns_probe_answers_total')})",
                        "{{probe}} {{code}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Check duration p99",
                "How long check runs take (cached answers are not runs).",
                (
                    _q(
                        "histogram_quantile(0.99, sum by (check, le) "
                        f"({_rate('lifesigns_check_duration_seconds_bucket')}))",
                        "{{check}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Phase",
                "Where each process is in its life: starting, ready, draining...",
                (
                    _q(
                        "max by (instance, worker, lifesigns_phase) (lifesigns_phase{S}) == 1",
                        "{{lifesigns_phase}} {{instance}} {{worker}}",
                    ),
                ),
                width=24,
            ),
        ),
    ),
)


def _variable(name: str, label: str, query: str, all_value: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": all_value,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "regex": "",
        "sort": 1,
        "options": [],
    }


def _panel(panel: Panel, ident: int, x: int, y: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ident,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [
            {
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": q.expr,
                "legendFormat": q.legend,
                "refId": chr(ord("A") + i),
            }
            for i, q in enumerate(panel.queries)
        ],
    }
    if panel.kind == "timeseries":
        body["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        body["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "values": False}}
    return body


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, ready for Dashboards > Import."""
    panels: list[dict[str, Any]] = []
    ident, y = 1, 0
    for row in ROWS:
        panels.append(
            {
                "id": ident,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        ident, y, x = ident + 1, y + 1, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel(panel, ident, x, y))
            ident, x = ident + 1, x + panel.width
        y += 8
    kinds = sorted({p.kind for row in ROWS for p in row.panels})
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes lifesigns' /metrics.",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": GRAFANA_VERSION},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *({"type": "panel", "id": k, "name": k, "version": ""} for k in kinds),
        ],
        "annotations": {"list": []},
        "description": "Why a lifesigns-watched service hangs: event loop, threads, "
        "connection pool, tasks, memory, requests and probes.",
        "editable": True,
        "graphTooltip": 1,
        "links": [],
        "panels": panels,
        "refresh": "10s",
        "schemaVersion": 39,
        "tags": ["lifesigns"],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"selected": False, "text": "default", "value": "${DS_PROMETHEUS}"},
                    "hide": 0,
                    "regex": "",
                    "options": [],
                },
                _variable("job", "Job", "label_values(lifesigns_service_info, job)", ".+"),
                _variable(
                    "instance",
                    "Instance",
                    'label_values(lifesigns_service_info{job=~"$job"}, instance)',
                    ".+",
                ),
                _variable(
                    "worker",
                    "Worker",
                    'label_values(lifesigns_service_info{job=~"$job", instance=~"$instance"}, '
                    "worker)",
                    ".*",
                ),
            ]
        },
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "lifesigns",
        "uid": UID,
        "version": 1,
    }


def render() -> str:
    """The dashboard JSON text exactly as it ships (sorted keys, two-space indent)."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")  # noqa: T201
