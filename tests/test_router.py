"""The probe router in-process: with a light host, over ASGI, and what the app port exposes."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lifesigns import Lifesigns
from lifesigns._config import Settings
from lifesigns._secrets import SecretRedactor
from lifesigns.errors import ConfigError
from lifesigns.health import Lifecycle, Phase, ProbeResult, Status
from lifesigns.host import Host
from lifesigns.metrics import CoreMetrics
from lifesigns.router import LoopBridge, ProbeRouter

TOKEN = "router-test-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def light_host(**settings: Any) -> Host:
    host = Host(Settings(token=TOKEN, **settings))

    async def payments() -> None:
        return None

    host.add_check("payments", payments)
    return host


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own, as the application's would."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_liveness_and_startup_answer_from_a_thread_without_any_loop() -> None:
    router = ProbeRouter(light_host())
    live = router.handle("GET", "/livez", "verbose", {})
    assert (live.status, live.text) == (200, "[+]livez ok\nlivez check passed\n")
    assert live.content_type == "text/plain; charset=utf-8"
    assert router.handle("GET", "/startupz", "", {}).status == 503  # the lifespan never ran
    ready = router.handle("GET", "/readyz", "", {})
    assert ready.status == 503 and "no event loop runs the checks" in ready.text
    assert ready.header("x-lifesigns-stale") == "true"
    missing = router.handle("GET", "/nosuch", "", {})
    assert missing.status == 404 and "/livez" in missing.text


def test_readiness_from_a_thread_runs_on_the_loop_and_serves_stale_while_it_is_frozen(
    loop_thread: asyncio.AbstractEventLoop,
) -> None:
    host = light_host()
    host.lifecycle.begin()
    host.lifecycle.move_to(Phase.READY)
    router = ProbeRouter(host)
    router.bridge.bind(loop_thread, None)
    ok = router.handle("GET", "/readyz", "verbose", AUTH)
    assert (ok.status, ok.text) == (200, "[+]payments ok\nreadyz check passed\n")
    release = threading.Event()
    loop_thread.call_soon_threadsafe(release.wait, 30)  # the loop is frozen now
    try:
        t0 = time.monotonic()
        first = router.handle("GET", "/readyz", "", AUTH)
        waited = time.monotonic() - t0
        assert first.status == 503 and first.header("x-lifesigns-stale") == "true"
        assert 1.2 <= waited < 5.0, waited  # the budget (0.8 s) plus half a second
        t0 = time.monotonic()
        second = router.handle("GET", "/readyz", "", AUTH)
        assert time.monotonic() - t0 < 0.2  # known frozen: no second wait
        assert second.text.startswith("[-]event loop stalled ")
        assert "last result (stale, " in second.text and "[+]payments ok" in second.text
        health = router.handle("GET", "/health", "", {})
        assert health.status == 503 and health.content_type == "application/health+json"
        assert router.handle("GET", "/livez", "", {}).status == 200  # never needs the loop
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while router.handle("GET", "/readyz", "", {}).status != 200:
        assert time.monotonic() < deadline, "readiness did not come back with the loop"
        time.sleep(0.05)


def test_a_frozen_loop_reported_by_the_loop_layer_is_not_waited_on(
    loop_thread: asyncio.AbstractEventLoop,
) -> None:
    bridge = LoopBridge()
    bridge.bind(loop_thread, lambda: 3.25)
    router = ProbeRouter(light_host(), bridge=bridge)
    t0 = time.monotonic()
    answer = router.handle("GET", "/readyz", "", {})
    assert time.monotonic() - t0 < 0.2
    assert answer.text.startswith("[-]event loop stalled 3.2 s")


def test_dumps_are_bounded_in_number_and_failures_are_masked() -> None:
    host = light_host()
    host.add_secrets(["hunter2-hunter2"])
    release = threading.Event()
    host.add_dump("stuck", lambda: {"ok": release.wait(30)})

    def broken() -> dict[str, Any]:
        raise RuntimeError("cannot reach postgresql://app:hunter2-hunter2@db/x")

    host.add_dump("broken", broken)
    router = ProbeRouter(host, dump_timeout=0.3, max_dumps=1)
    try:
        assert router.handle("GET", "/debug/stuck", "", AUTH).status == 504
        busy = router.handle("GET", "/debug/stuck", "", AUTH)  # the first one still runs
        assert busy.status == 503 and "1 dumps still run" in busy.text
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while (failed := router.handle("GET", "/debug/broken", "", AUTH)).status == 503:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert failed.status == 500 and failed.content_type == "application/json"
    assert "hunter2" not in failed.text and "RuntimeError" in failed.text
    labels = {"probe": "debug", "code": "504"}
    assert host.registry.get_sample_value("lifesigns_probe_answers_total", labels) == 1.0


def test_expose_refuses_an_unknown_surface_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"expose='probes,secrets'.*'secrets'.*probes, metrics"):
        Lifesigns(expose="probes,secrets")
    assert Lifesigns(expose="all").settings.expose == {"probes", "metrics", "debug", "live"}
    assert Lifesigns(expose=["metrics"]).settings.expose == {"metrics"}
    assert Lifesigns(expose="none").settings.expose == frozenset()
    from_env = Settings.from_arguments({}, env={"LIFESIGNS_EXPOSE": "probes, metrics"})
    assert from_env.expose == {"probes", "metrics"}
    with pytest.raises(ConfigError, match="LIFESIGNS_EXPOSE='everything'"):
        Settings.from_arguments({}, env={"LIFESIGNS_EXPOSE": "everything"})
    assert Settings().expose == {"probes"}


def app_with(signs: Lifesigns, *routes: Route) -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/hello", hello), *routes])
    signs.install(app)
    return app


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(app: Starlette) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def test_the_application_port_serves_the_probes_only_by_default(client_for: Any) -> None:
    async def own_metrics(request: Request) -> PlainTextResponse:
        return PlainTextResponse("the application's own metrics")

    signs = Lifesigns(token=TOKEN, watchdog=False, memory=False)
    app = app_with(signs, Route("/metrics", own_metrics))
    client = client_for(app)
    assert (await client.get("/livez")).status_code == 200
    assert (await client.get("/metrics")).text == "the application's own metrics"
    assert (await client.get("/debug/", headers=AUTH)).status_code == 404
    assert (await client.get("/debug/requests", headers=AUTH)).status_code == 404
    # The side port's router serves every surface.
    assert signs.router.handle("GET", "/metrics").status == 200
    assert signs.router.handle("GET", "/debug/", "", AUTH).status == 200


async def test_an_application_route_on_a_probe_path_wins_and_is_named_in_a_warning(
    client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def own_health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("the application's health")

    caplog.set_level(logging.WARNING, logger="lifesigns.http")
    signs = Lifesigns(watchdog=False, memory=False)
    client = client_for(app_with(signs, Route("/health", own_health)))
    assert (await client.get("/health")).text == "the application's health"
    assert (await client.get("/livez")).status_code == 200
    await client.get("/health")  # a second request: still one warning
    warnings = [r.getMessage() for r in caplog.records if "own route" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "GET /health" in warnings[0] and "paths={'health': '/lifesigns/health'}" in warnings[0]
    assert signs.router.handle("GET", "/health").status == 503  # the side port still has it

    renamed = Lifesigns(watchdog=False, memory=False, paths={"health": "/lifesigns/health"})
    caplog.clear()
    client = client_for(app_with(renamed, Route("/health", own_health)))
    assert (await client.get("/health")).text == "the application's health"
    probe = await client.get("/lifesigns/health")
    assert probe.headers["content-type"] == "application/health+json"
    assert not [r for r in caplog.records if "own route" in r.getMessage()]


class WorkersSource:
    """A probe source without in-process ``Probes``, as the agent process will have."""

    budget = 0.5
    last_readiness = None

    def liveness(self) -> ProbeResult:
        return ProbeResult("livez", Status.PASS, "2 of 2 workers beat")

    def startup(self) -> ProbeResult:
        return ProbeResult("startupz", Status.PASS, "workers started")

    async def readiness(
        self, exclude: Collection[str] = (), only: str | None = None
    ) -> ProbeResult:
        return ProbeResult("readyz", Status.FAIL, "1 of 2 workers ready", public_reason="1/2")

    async def health(self, exclude: Collection[str] = ()) -> ProbeResult:
        return ProbeResult("health", Status.PASS, "ok")


@dataclass
class AgentHost:
    """Everything :class:`RouterHost` asks for, built without a ``Lifesigns`` or a ``Host``."""

    settings: Settings
    probes: WorkersSource
    lifecycle: Lifecycle
    redactor: SecretRedactor
    metrics: CoreMetrics
    registry: CollectorRegistry
    dumps: dict[str, Any]

    def is_authorized(self, authorization: str | None) -> bool:
        return authorization == f"Bearer {TOKEN}"


async def test_the_router_serves_a_source_other_than_the_in_process_probes() -> None:
    registry = CollectorRegistry()
    host = AgentHost(
        settings=Settings(token=TOKEN, prefix="/agent"),
        probes=WorkersSource(),
        lifecycle=Lifecycle(),
        redactor=SecretRedactor([TOKEN]),
        metrics=CoreMetrics(registry, "agent", None),
        registry=registry,
        dumps={"workers": lambda: {"workers": [1, 2], "token": TOKEN}},
    )
    router = ProbeRouter(host)
    assert router.handle("GET", "/agent/livez", "verbose").text == (
        "[+]livez ok\nlivez check passed\n"
    )
    ready = await router.handle_async("GET", "/agent/readyz", "", {})
    assert ready.status == 503 and "1/2, reason withheld" in ready.text
    dump = await router.handle_async("GET", "/agent/debug/workers", "", AUTH)
    assert dump.status == 200 and TOKEN not in dump.text and '"workers"' in dump.text
