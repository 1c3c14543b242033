"""A real Prometheus server scraping two real services: rules evaluate, every dashboard query
returns series, every metric a rule names is exported, and a frozen loop raises its alert.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Postgres, UvicornProcess, free_port
from tests.support.prometheus import PROMETHEUS, PrometheusServer

ROOT = Path(__file__).resolve().parents[1]
MIXIN = ROOT / "src" / "lifesigns" / "metrics" / "mixin"
RULES_FILE = MIXIN / "lifesigns.rules.yml"
DASHBOARD_FILE = MIXIN / "lifesigns.dashboard.json"
APP = "tests.apps.observed:app"
JOB = "lifesigns"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason=f"needs {PROMETHEUS}"),
]


@dataclass
class Service:
    """A real uvicorn service and the port of its out-of-band metrics thread."""

    server: UvicornProcess
    metrics_port: int

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    def metrics_text(self) -> str:
        return httpx.get(f"http://{self.instance}/metrics", timeout=5).text


@pytest.fixture(scope="module")
def services(
    postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Service]]:
    logs = tmp_path_factory.mktemp("services")
    started: list[Service] = []
    try:
        for name in ("orders", "billing"):
            port = free_port()
            server = UvicornProcess(
                APP,
                env={
                    "DATABASE_URL": postgres.url(),
                    "OBSERVED_METRICS_PORT": str(port),
                    "OBSERVED_SERVICE": name,
                    "OBSERVED_CENSUS_INTERVAL": "1",
                    "LIFESIGNS_DEADLINE": "1",
                    "LIFESIGNS_DRAIN_DELAY": "0",
                },
                log_path=logs / f"{name}.log",
            )
            server.start()
            started.append(Service(server, port))
        for service in started:
            service.server.wait_ready("/livez", timeout=30)
        yield started
    finally:
        for service in started:
            service.server.terminate(timeout=5)


@pytest.fixture(scope="module")
def prometheus(services: list[Service]) -> Iterator[PrometheusServer]:
    with PrometheusServer({JOB: [s.instance for s in services]}, rule_files=[RULES_FILE]) as prom:
        prom.wait_for(
            lambda: len(prom.query(f'up{{job="{JOB}"}} == 1')) == len(services) or None,
            30,
            "both services to be scraped",
        )
        yield prom


def _traffic(service: Service) -> None:
    """A little of everything the dashboard shows: 2xx, 4xx, 5xx, 504, the pool, threads."""
    url = service.server.url
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(5):
            assert client.get(f"/api/v1/items/{i}").status_code == 200
            assert client.get(f"/sub/things/{i}").status_code == 200
            assert client.get("/api/v1/db").status_code == 200
        assert client.get("/api/v1/items/-1").status_code == 404
        assert client.post("/api/v1/items").status_code == 201
        assert client.get("/api/v1/work/0.01").status_code == 200
        assert client.get("/no/such/page").status_code == 404
        assert client.get("/api/v1/slow/3").status_code == 504
        client.get("/readyz")
        client.get("/livez")
        assert client.get("/freeze/0.5").status_code == 200  # one short stall: its series
    assert httpx.get(f"{url}/api/v1/items/1/fail", timeout=10).status_code == 500


@pytest.fixture(scope="module")
def traffic(services: list[Service], prometheus: PrometheusServer) -> PrometheusServer:
    workers = [threading.Thread(target=_traffic, args=(s,)) for s in services]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    # Scraped after the traffic: the stall counter exists on both instances.
    prometheus.wait_for(
        lambda: len(prometheus.query(f'lifesigns_loop_stalls_total{{job="{JOB}"}}')) >= 2 or None,
        30,
        "the stalls of both services to be scraped",
    )
    return prometheus


def _substitute(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "15s")
        .replace('job=~"$job"', f'job=~"{JOB}"')
        .replace('instance=~"$instance"', 'instance=~".+"')
        .replace('worker=~"$worker"', 'worker=~".*"')
    )


def _dashboard_targets() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD_FILE.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_both_services_are_scraped(prometheus: PrometheusServer, services: list[Service]) -> None:
    targets = {t["labels"]["instance"]: t["health"] for t in prometheus.targets()}
    assert targets == {s.instance: "up" for s in services}
    names = prometheus.query(f'lifesigns_service_info{{job="{JOB}"}}')
    assert sorted(r["metric"]["service"] for r in names) == ["billing", "orders"]


def test_the_shipped_rules_load_and_evaluate(prometheus: PrometheusServer) -> None:
    shipped = yaml.safe_load(RULES_FILE.read_text())["groups"]
    expected = sum(len(g["rules"]) for g in shipped)

    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in prometheus.rule_groups() for r in g["rules"]]
        done = len(rules) == expected and all(r["health"] != "unknown" for r in rules)
        return rules if done else None

    rules = prometheus.wait_for(evaluated, 20, "every rule to be evaluated")
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert broken == {}


def test_every_dashboard_query_is_valid_and_returns_series(traffic: PrometheusServer) -> None:
    deadline = time.monotonic() + 30
    empty: dict[str, str] = {}
    for title, expr in _dashboard_targets():
        query = _substitute(expr)
        # An invalid expression raises PrometheusError here at once, naming the error.
        while not traffic.query(query):
            if time.monotonic() > deadline:
                empty[title] = query
                break
            time.sleep(0.3)
    assert empty == {}, "panels without data"
    # The variables' label_values() queries, as Grafana sends them.
    assert traffic.api("label/job/values", **{"match[]": "lifesigns_service_info"}) == [JOB]
    instances = traffic.api(
        "label/instance/values", **{"match[]": f'lifesigns_service_info{{job=~"{JOB}"}}'}
    )
    assert len(instances) == 2
    assert traffic.api("label/worker/values", **{"match[]": "lifesigns_service_info"}) == []


def test_the_request_panels_count_by_full_route(traffic: PrometheusServer) -> None:
    rows = traffic.wait_for_series(
        f'sum by (route, status_class) (lifesigns_http_requests_total{{job="{JOB}"}})'
    )
    counts = {
        (r["metric"]["route"], r["metric"]["status_class"]): float(r["value"][1]) for r in rows
    }
    assert counts[("/api/v1/items/{item_id}", "2xx")] == 10
    assert counts[("/api/v1/items/{item_id}/fail", "5xx")] == 2
    assert counts[("/api/v1/slow/{seconds}", "5xx")] == 2
    assert counts[("/sub/things/{thing}", "2xx")] == 10
    assert counts[("<unmatched>", "4xx")] == 2


def _metric_names(text: str) -> set[str]:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    return names


def test_every_metric_the_rules_use_is_exported(
    traffic: PrometheusServer, services: list[Service]
) -> None:
    exported = _metric_names(services[0].metrics_text())
    used = set(re.findall(r"\blifesigns_[a-z0-9_]+", RULES_FILE.read_text()))
    assert used, "no metric names found in the rules"
    assert used - exported == set()
    dashboard = set(re.findall(r"\blifesigns_[a-z0-9_]+", DASHBOARD_FILE.read_text()))
    assert dashboard - exported == set()


def test_a_frozen_loop_fires_the_loop_stalled_alert(
    traffic: PrometheusServer, services: list[Service]
) -> None:
    healthy, frozen = services
    freezer = threading.Thread(
        target=lambda: httpx.get(f"{frozen.server.url}/freeze/9", timeout=30), daemon=True
    )
    started = time.monotonic()
    freezer.start()

    def alert(name: str, state: str) -> dict[str, Any] | None:
        for a in traffic.alerts():
            if a["labels"]["alertname"] == name and a["state"] == state:
                assert a["labels"]["instance"] == frozen.instance, a
                return a
        return None

    pending = traffic.wait_for(
        lambda: (
            alert("LifesignsEventLoopStalled", "pending")
            or alert("LifesignsEventLoopStalled", "firing")
        ),
        8,
        "LifesignsEventLoopStalled to be pending",
    )
    firing = traffic.wait_for(
        lambda: alert("LifesignsEventLoopStalled", "firing"),
        10,
        "LifesignsEventLoopStalled to fire",
    )
    assert firing["annotations"]["runbook_url"].endswith("#lifesignseventloopstalled")
    assert pending["labels"]["severity"] == "critical"
    assert time.monotonic() - started < 9 + 5
    about_to_fail = traffic.wait_for(
        lambda: alert("LifesignsLivenessAboutToFail", "firing"),
        8,
        "LifesignsLivenessAboutToFail to fire",
    )
    assert about_to_fail["labels"]["job"] == JOB
    stalled = {
        a["labels"]["instance"] for a in traffic.alerts() if "Stalled" in a["labels"]["alertname"]
    }
    assert healthy.instance not in stalled
    freezer.join(30)
