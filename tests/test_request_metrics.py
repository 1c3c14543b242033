"""Request metrics: counts by full route template and status class, bounded series."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lifesigns import Lifesigns
from lifesigns.http.requests import UNMATCHED, route_template
from tests.support import UvicornProcess

APP = "tests.apps.observed:app"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``{sorted label pairs: value}`` of every sample called ``name`` in ``text``."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def requests_total(server: UvicornProcess) -> dict[tuple[str, str, str], float]:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return {
        (dict(k)["route"], dict(k)["method"], dict(k)["status_class"]): v
        for k, v in samples(text, "lifesigns_http_requests_total").items()
    }


def http_series(text: str) -> int:
    return sum(
        1
        for line in text.splitlines()
        if line.startswith("lifesigns_http_") and not line.startswith("#")
    )


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornProcess]:
    """One server for the module: each test asserts on what its own requests added."""
    log = tmp_path_factory.mktemp("observed") / "uvicorn.log"
    env = {"LIFESIGNS_DEADLINE": "1", "LIFESIGNS_DRAIN_DELAY": "0"}
    with UvicornProcess(APP, env=env, log_path=log) as server:
        server.wait_ready()
        yield server


def added(
    before: dict[tuple[str, str, str], float], after: dict[tuple[str, str, str], float]
) -> dict[tuple[str, str, str], float]:
    """The counts that grew between two scrapes, by how much."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


# -- route templates, on real Starlette and FastAPI routing -----------------------------


async def _template_of(app: object, path: str) -> str | None:
    seen: dict[str, str | None] = {}

    async def outer(scope, receive, send):
        await app(scope, receive, send)  # type: ignore[operator]
        seen["t"] = route_template(scope)

    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get(path)
    return seen["t"]


async def test_route_template_carries_every_prefix(tmp_path) -> None:
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    inner = APIRouter(prefix="/inner")

    @inner.get("/x/{y}")
    async def xy(y: str) -> dict[str, str]:
        return {}

    router.include_router(inner)
    app = FastAPI()
    app.include_router(router, prefix="/api/v1")
    sub = FastAPI()

    @sub.get("/things/{t}")
    async def things(t: str) -> dict[str, str]:
        return {}

    def order(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x")

    (tmp_path / "a.css").write_text("a{}")
    app.mount("/sub", sub)
    app.mount("/tenants/{tenant}", Starlette(routes=[Route("/orders/{order}", order)]))
    app.mount("/static", StaticFiles(directory=tmp_path))
    nested = Starlette(routes=[Mount("/v2", routes=[Route("/o/{order}", order)])])
    app.mount("/deep", nested)

    assert await _template_of(app, "/api/v1/items/3") == "/api/v1/items/{item_id}"
    assert await _template_of(app, "/api/v1/inner/x/2") == "/api/v1/inner/x/{y}"
    assert await _template_of(app, "/sub/things/1") == "/sub/things/{t}"
    assert await _template_of(app, "/tenants/acme/orders/9") == "/tenants/{tenant}/orders/{order}"
    assert await _template_of(app, "/static/a.css") == "/static/{path}"
    assert await _template_of(app, "/deep/v2/o/5") == "/deep/v2/o/{order}"
    assert await _template_of(app, "/nowhere") is None


# -- a real server ----------------------------------------------------------------------


def test_counts_equal_the_requests_sent_by_route_template_and_status_class(observed) -> None:
    sent = {
        ("/api/v1/items/{item_id}", "GET", "2xx"): 7,
        ("/api/v1/items/{item_id}", "GET", "4xx"): 3,
        ("/api/v1/items/{item_id}/fail", "GET", "5xx"): 2,
        ("/api/v1/items", "POST", "2xx"): 4,
        ("/sub/things/{thing}", "GET", "2xx"): 5,
        ("/tenants/{tenant}/orders/{order}", "GET", "2xx"): 6,
        (UNMATCHED, "GET", "4xx"): 3,
    }
    before = requests_total(observed)
    with httpx.Client(base_url=observed.url, timeout=10) as client:
        for i in range(7):
            assert client.get(f"/api/v1/items/{i}").status_code == 200
        for i in range(3):
            assert client.get(f"/api/v1/items/-{i + 1}").status_code == 404
        for i in range(2):
            # uvicorn closes the connection after an unhandled exception: a new one each.
            failed = httpx.get(f"{observed.url}/api/v1/items/{i}/fail", timeout=10)
            assert failed.status_code == 500
        for _ in range(4):
            assert client.post("/api/v1/items").status_code == 201
        for i in range(5):
            assert client.get(f"/sub/things/t{i}").status_code == 200
        for i in range(6):
            assert client.get(f"/tenants/tenant-{i}/orders/{i}").status_code == 200
        for i in range(3):
            assert client.get(f"/no/such/{i}").status_code == 404
        # The probes and /metrics are lifesigns' own answers, not the application's.
        client.get("/livez")
        client.get("/metrics")
    assert added(before, requests_total(observed)) == sent
    text = httpx.get(f"{observed.url}/metrics", timeout=5).text
    durations = samples(text, "lifesigns_http_request_duration_seconds_count")
    by_route = {dict(k)["route"]: v for k, v in durations.items() if dict(k)["method"] == "GET"}
    assert by_route["/tenants/{tenant}/orders/{order}"] == 6  # no other test sends these


def test_a_flood_of_random_paths_and_methods_adds_no_series(observed) -> None:
    with httpx.Client(base_url=observed.url, timeout=10) as client:
        client.get("/no/such/path")
        client.request("PROPFIND", "/api/v1/items/1")
        client.request("PROPFIND", "/no/such/path")
        before_text = client.get("/metrics").text
        before = http_series(before_text)
        before_counts = requests_total(observed)
        rng = random.Random(12)
        for _ in range(300):
            path = "/" + "/".join(uuid.uuid4().hex[: rng.randint(1, 12)] for _ in range(3))
            client.get(path)
        # uvicorn answers 400 itself to methods its parser does not know (FOO).
        for method in ("PROPFIND", "MKCOL", "LOCK", "FOO"):
            client.request(method, f"/{uuid.uuid4().hex}")
            client.request(method, "/api/v1/items/1")
        after_text = client.get("/metrics").text
    assert http_series(after_text) == before
    assert added(before_counts, requests_total(observed)) == {
        (UNMATCHED, "GET", "4xx"): 300,
        (UNMATCHED, "OTHER", "4xx"): 3,
        ("/api/v1/items/{item_id}", "OTHER", "4xx"): 3,  # 405
    }


def test_deadline_504s_and_client_disconnects_are_counted(observed) -> None:
    before = requests_total(observed)
    assert httpx.get(f"{observed.url}/api/v1/slow/3", timeout=10).status_code == 504
    # A client that reads the first chunk of a stream and leaves.
    with socket.create_connection((observed.host, observed.port), timeout=5) as sock:
        sock.sendall(b"GET /api/v1/stream HTTP/1.1\r\nHost: t\r\n\r\n")
        assert b"chunk 0" in sock.recv(4096) or b"chunk 0" in sock.recv(4096)
    text = wait_for_metric(observed, "lifesigns_http_client_disconnects_total", 1)
    # A client that hangs up before any answer: counted as 499.
    with socket.create_connection((observed.host, observed.port), timeout=5) as sock:
        sock.sendall(b"GET /api/v1/hang-up HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for_metric(observed, "lifesigns_http_requests_in_flight", 1)  # it is in: leave
    text = wait_for_metric(observed, "lifesigns_http_client_disconnects_total", 2)
    gone = samples(text, "lifesigns_http_client_disconnects_total")
    assert gone == {
        (("method", "GET"), ("route", "/api/v1/stream")): 1.0,
        (("method", "GET"), ("route", "/api/v1/hang-up")): 1.0,
    }
    expired = samples(text, "lifesigns_http_deadline_exceeded_total")
    assert expired == {(("method", "GET"), ("route", "/api/v1/slow/{seconds}")): 1.0}
    assert added(before, requests_total(observed)) == {
        ("/api/v1/slow/{seconds}", "GET", "5xx"): 1,
        ("/api/v1/stream", "GET", "2xx"): 1,  # its response had started: the status stands
        ("/api/v1/hang-up", "GET", "4xx"): 1,  # 499
    }


def wait_for_metric(server: UvicornProcess, name: str, total: float, timeout: float = 10.0) -> str:
    """Poll /metrics until the samples called ``name`` add up to ``total``; return that scrape."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"{server.url}/metrics", timeout=5).text
        if sum(samples(text, name).values()) >= total:
            return text
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} never reached {total}\n{text}")
        time.sleep(0.02)


def test_in_flight_and_oldest_age_while_a_request_runs(observed) -> None:
    worker = threading.Thread(
        target=httpx.get, args=(f"{observed.url}/api/v1/slow/0.9",), kwargs={"timeout": 10}
    )
    worker.start()
    text = wait_for_metric(observed, "lifesigns_http_requests_in_flight", 1)
    worker.join()
    assert samples(text, "lifesigns_http_requests_in_flight")[()] == 1
    assert 0 < samples(text, "lifesigns_http_oldest_request_age_seconds")[()] < 1.0
    after = httpx.get(f"{observed.url}/metrics", timeout=5).text
    assert samples(after, "lifesigns_http_requests_in_flight")[()] == 0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_exposition(observed) -> None:
    with httpx.Client(base_url=observed.url, timeout=10) as client:
        client.get("/api/v1/items/1")
        client.get("/nowhere")
        client.get("/api/v1/slow/3")
        text = client.get("/metrics").text
    assert "lifesigns_http_requests_total" in text
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_two_instances_keep_their_own_request_metrics() -> None:
    a, b = Lifesigns(service="a"), Lifesigns(service="b")
    assert a.registry is not b.registry
    names = {m.name for m in a.registry.collect()}
    assert "lifesigns_http_requests" in names


async def test_route_templates_past_the_cap_fold_into_one_label() -> None:
    from lifesigns.http.requests import MAX_ROUTES, OTHER_ROUTE, RequestTracker

    async def send(message):
        return None

    async def receive():
        return {"type": "http.request", "body": b""}

    tracker = RequestTracker()
    routes = [Route(f"/r{i}/{{x}}", lambda request: None) for i in range(MAX_ROUTES + 50)]
    for route in routes:
        scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": []}
        info = tracker.begin(scope, receive, send)
        scope["route"] = route
        info.status = 200
        tracker.end(info)
    labels = {route for route, _, _, _ in tracker.served()}
    assert len(labels) == MAX_ROUTES + 1
    assert OTHER_ROUTE in labels
    other = [row for route, _, _, row in tracker.served() if route == OTHER_ROUTE]
    assert sum(other[0][:-1]) == 50
