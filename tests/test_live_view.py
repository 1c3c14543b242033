"""The live page's data and routes, with a light host and the probe router (no server)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
from prometheus_client import Histogram
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lifesigns import Lifesigns
from lifesigns._config import Settings
from lifesigns._surfaces import surfaces
from lifesigns.host import Host
from lifesigns.live import LiveView, page_html, quantile
from lifesigns.router import ProbeRouter


def test_data_takes_each_fast_dump_and_survives_a_broken_one() -> None:
    host = Host()
    host.add_dump("stalls", lambda: {"heartbeat_age_s": 0.01, "current": None, "recent": []})

    def broken() -> dict[str, object]:
        raise RuntimeError("pool dump broke")

    host.add_dump("pool", broken)
    data = LiveView(host).data()
    assert data["stalls"]["heartbeat_age_s"] == 0.01
    assert data["pool"] == {"error": "RuntimeError: pool dump broke"}
    assert data["memory"] is None  # not attached: shown as absent, not as an error
    assert data["service"] == "service"


def test_request_figures_come_from_the_registry() -> None:
    host = Host()
    histogram = Histogram(
        "lifesigns_http_request_duration_seconds",
        "test",
        ["route", "method"],
        registry=host.registry,
        buckets=(0.1, 0.5, 1.0),
    )
    for _ in range(90):
        histogram.labels("/a", "GET").observe(0.05)
    for _ in range(10):
        histogram.labels("/b", "GET").observe(0.7)
    figures = LiveView(host).data()["metrics"]
    assert figures["request_p50_s"] is not None and figures["request_p50_s"] <= 0.1
    assert 0.5 < figures["request_p99_s"] <= 1.0


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 50.0, 0.2: 100.0, float("inf"): 100.0}
    assert quantile(buckets, 0.5) == 0.1
    three_quarters = quantile(buckets, 0.75)
    assert three_quarters is not None and abs(three_quarters - 0.15) < 1e-9
    assert quantile({}, 0.5) is None


def test_the_page_is_self_contained() -> None:
    html = page_html().decode()
    assert "<script>" in html and 'id="stall-current"' in html
    assert "http://" not in html and "https://" not in html  # no CDN: works offline


# -- the routes: /lifesigns/ and /lifesigns/data through the probe router ------------------

TOKEN = "live-view-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _host(**settings: Any) -> Host:
    return Host(Settings(token=TOKEN, **settings))


def test_the_page_needs_no_token_and_is_never_cached() -> None:
    router = ProbeRouter(_host())
    page = router.handle("GET", "/lifesigns/")
    assert page.status == 200
    assert page.content_type == "text/html; charset=utf-8"
    assert page.header("cache-control") == "no-store"
    assert "frame-ancestors 'none'" in (page.header("content-security-policy") or "")
    assert page.body == page_html()
    moved = router.handle("GET", "/lifesigns")
    assert (moved.status, moved.header("location")) == (308, "/lifesigns/")


def test_the_data_needs_the_token_401_without_403_wrong() -> None:
    router = ProbeRouter(_host())
    missing = router.handle("GET", "/lifesigns/data")
    assert missing.status == 401 and "bearer token" in missing.text
    assert missing.header("www-authenticate") == 'Bearer realm="lifesigns"'
    wrong = router.handle("GET", "/lifesigns/data", "", {"authorization": "Bearer nope-nope"})
    assert (wrong.status, wrong.text) == (403, "wrong token\n")
    unset = ProbeRouter(Host()).handle("GET", "/lifesigns/data", "", AUTH)
    assert unset.status == 403 and "no token is configured" in unset.text


def test_the_data_is_json_redacted_and_counted() -> None:
    host = _host()
    host.add_secrets(["hunter2-db-password"])
    host.add_dump("pool", lambda: {"dsn": "postgresql://app:hunter2-db-password@db/app"})
    reply = ProbeRouter(host).handle("GET", "/lifesigns/data", "", AUTH)
    assert reply.status == 200, reply.text
    assert reply.content_type == "application/json"
    assert reply.header("cache-control") == "no-store"
    assert "hunter2" not in reply.text
    data = json.loads(reply.text)
    assert data["pool"]["dsn"].startswith("postgresql://app:") and "lab" not in data
    counted = host.registry.get_sample_value(
        "lifesigns_probe_answers_total", {"probe": "live", "code": "200"}
    )
    assert counted == 1.0


def test_a_data_producer_that_hangs_answers_504_within_the_bound() -> None:
    host = _host()
    release = threading.Event()
    host.add_dump("stalls", lambda: {"waited": release.wait(10)})
    router = ProbeRouter(host, dump_timeout=0.3)
    started = time.monotonic()
    reply = router.handle("GET", "/lifesigns/data", "", AUTH)
    took = time.monotonic() - started
    release.set()
    assert reply.status == 504 and "did not answer within 0.3 s" in reply.text
    assert took < 2.0


def test_the_application_port_serves_the_page_only_when_exposed() -> None:
    router = ProbeRouter(_host())
    assert router.matches("/lifesigns/") and router.matches("/lifesigns/data")
    assert not router.matches("/lifesigns/other")  # the application's, not lifesigns'
    app_port = router.for_surfaces(Settings().expose)
    assert not app_port.matches("/lifesigns/") and not app_port.matches("/lifesigns/data")
    assert router.for_surfaces(surfaces("expose", "probes,live")).matches("/lifesigns/data")
    assert Lifesigns(expose="all").settings.expose >= {"live"}
    prefixed = ProbeRouter(_host(prefix="/ops"))
    assert prefixed.matches("/ops/lifesigns/") and not prefixed.matches("/lifesigns/")
    assert "/ops/lifesigns/data" in prefixed.paths


def test_lab_incidents_come_from_the_lab_dump() -> None:
    host = _host()
    incidents = [
        {
            "name": "sync-call-in-async",
            "seed": "003",
            "title": "A sync call in an async handler",
            "look_for": "the stall's frame: orders.py:42",
            "trigger": "http://127.0.0.1:8000/lab/incidents/sync-call-in-async",
            "secret_internal": "not shown",
        },
        {"name": "no-trigger"},
    ]
    host.add_dump("lab", lambda: {"incidents": incidents})
    lab = LiveView(host).data()["lab"]
    assert [i["name"] for i in lab] == ["sync-call-in-async"]
    assert "secret_internal" not in lab[0] and lab[0]["seed"] == "003"


async def test_the_application_port_serves_the_page_over_asgi_when_exposed() -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("the application's own /lifesigns/")

    for expose, own in (("probes", True), ("probes,live", False)):
        signs = Lifesigns(token=TOKEN, watchdog=False, memory=False, expose=expose)
        # A catch-all: the application's when not exposed (an exact route would win anyway).
        app = Starlette(routes=[Route("/lifesigns/{rest:path}", hello)])
        signs.install(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            page = await client.get("/lifesigns/")
            if own:  # not exposed: the path is the application's, untouched
                assert page.text == "the application's own /lifesigns/"
                continue
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert (await client.get("/lifesigns/data")).status_code == 401
            data = await client.get("/lifesigns/data", headers=AUTH)
            assert data.status_code == 200 and data.headers["cache-control"] == "no-store"
            assert data.json()["service"] == "service"
