"""The probe endpoints over ASGI: bodies, status codes, tokens, ?verbose and ?exclude."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lifesigns import Degraded, Lifesigns

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def build(**options) -> tuple[Lifesigns, Starlette]:
    # Deliberate change (issue 10): the application port serves the probes only by default;
    # these tests read /metrics and /debug/* there too, so they ask for every surface.
    options.setdefault("expose", "all")
    signs = Lifesigns(service="orders", version="1.4.2", token=TOKEN, **options)

    async def hello(request):
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/hello", hello)])
    signs.install(app)
    return signs, app


async def wait_ready(client: httpx.AsyncClient, path: str = "/readyz") -> None:
    for _ in range(100):
        if (await client.get(path)).status_code == 200:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never became ready")


@pytest.fixture
async def served() -> AsyncIterator[tuple[Lifesigns, httpx.AsyncClient]]:
    signs, app = build()

    @signs.check("cache", critical=False)
    async def cache():
        raise Degraded("hit rate 12 %")

    @signs.check("payments")
    async def payments():
        return {"latency_ms": 3}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await wait_ready(client)
            yield signs, client


async def test_livez_is_ok_and_other_routes_pass_through(served):
    _, client = served
    live = await client.get("/livez")
    assert (live.status_code, live.text) == (200, "ok\n")
    assert live.headers["cache-control"] == "no-store"
    assert (await client.get("/hello")).text == "hello"


async def test_verbose_readyz_lists_each_critical_check(served):
    _, client = served
    body = (await client.get("/readyz?verbose")).text
    assert "[+]payments ok" in body
    assert "cache" not in body  # not critical: never part of readiness
    assert body.endswith("readyz check passed\n")


async def test_exclude_skips_a_check_and_an_unknown_name_is_a_400_listing_the_names(served):
    signs, client = served
    excluded = await client.get("/readyz?verbose&exclude=payments")
    assert "[+]payments excluded: ok" in excluded.text
    unknown = await client.get("/readyz?exclude=nosuch")
    assert unknown.status_code == 400
    assert "unknown check 'nosuch'" in unknown.text
    listed = unknown.text.split("checks: ", 1)[1].strip().split(", ")
    assert listed == sorted(signs.probes.known_checks())
    assert {"cache", "payments"} <= set(listed)


async def test_per_check_readiness_path(served):
    _, client = served
    one = await client.get("/readyz/payments?verbose")
    assert one.status_code == 200
    assert "[+]payments ok" in one.text
    assert (await client.get("/readyz/nosuch")).status_code == 400


async def test_health_without_token_is_status_only_and_with_token_has_details(served):
    _, client = served
    public = await client.get("/health")
    assert public.status_code == 200
    assert public.headers["content-type"] == "application/health+json"
    assert public.json() == {"status": "warn", "serviceId": "orders"}
    wrong = await client.get("/health", headers={"Authorization": "Bearer not-the-token-at-all"})
    assert wrong.json() == public.json()
    full = (await client.get("/health", headers=AUTH)).json()
    assert full["status"] == "warn"
    assert full["releaseId"] == "1.4.2"
    cache = full["checks"]["cache:responseTime"][0]
    assert (cache["status"], cache["output"]) == ("warn", "hit rate 12 %")
    payments = full["checks"]["payments:responseTime"][0]
    assert payments["details"] == {"latency_ms": 3}
    assert payments["observedUnit"] == "ms"


async def test_probes_refuse_other_methods(served):
    _, client = served
    refused = await client.post("/readyz")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD"


async def test_debug_dumps_need_the_token(served):
    signs, client = served
    signs.add_dump("example", lambda: {"answer": 42})
    assert (await client.get("/debug/example")).status_code == 401
    bad = await client.get(
        "/debug/example", headers={"Authorization": "Bearer nope-nope-nope-nope"}
    )
    assert bad.status_code == 401
    good = await client.get("/debug/example", headers=AUTH)
    assert good.json() == {"answer": 42}
    listed = (await client.get("/debug/", headers=AUTH)).json()["dumps"]
    assert "example" in listed
    assert listed == sorted(listed)


async def test_failing_critical_check_fails_readiness_with_reason_withheld():
    signs, app = build()
    broken = {"now": False}

    @signs.check("queue", fail_ttl=0, pass_ttl=0)
    async def queue():
        if broken["now"]:
            raise ConnectionError("amqp://guest:guest-pw@mq refused")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await wait_ready(client)
            broken["now"] = True
            public = await client.get("/readyz")
            assert public.status_code == 503
            assert "[-]queue failed: reason withheld" in public.text
            assert "guest-pw" not in public.text
            detailed = await client.get("/readyz", headers=AUTH)
            assert "ConnectionError" in detailed.text
            assert "guest-pw" not in detailed.text
            assert (await client.get("/livez")).status_code == 200  # liveness never runs checks


async def test_paths_and_prefix_are_configurable():
    _, app = build(prefix="/ops", paths={"livez": "/alive", "metrics": None})
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/ops/alive")).status_code == 200
            assert (await client.get("/livez")).status_code == 404
            assert (await client.get("/ops/metrics")).status_code == 404
            await wait_ready(client, "/ops/readyz")


async def test_probes_before_the_lifespan_ran_say_so():
    _, app = build()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ready = await client.get("/readyz", headers=AUTH)
        assert ready.status_code == 503
        assert "lifespan never ran" in ready.text
        assert "not started, reason withheld" in (await client.get("/startupz")).text


async def test_two_instances_keep_separate_metrics(served):
    signs, client = served
    other, _ = build()
    text = (await client.get("/metrics")).text
    assert 'lifesigns_check_runs_total{check="payments",status="pass"} 1.0' in text
    assert 'lifesigns_probe_answers_total{code="200",probe="readyz"}' in text
    labels = {"check": "payments", "status": "pass"}
    assert signs.registry.get_sample_value("lifesigns_check_runs_total", labels) == 1.0
    assert other.registry.get_sample_value("lifesigns_check_runs_total", labels) is None


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (.ci/run installs it)"
)
async def test_metrics_pass_promtool_check_metrics(served):
    _, client = served
    await client.get("/readyz?exclude=payments")
    await client.get("/health")
    text = (await client.get("/metrics")).text
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
