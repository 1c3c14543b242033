"""Ordinary load is not an outage (issue 10), on a service shaped like the FastAPI template.

Real uvicorn serving tests/apps/template.py: sync endpoints in anyio's 40 worker
threads, psycopg 3, a 5 + 10 pool, lifesigns added as the README says. A PostgreSQL of
this module's own, so that stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import Postgres, PostgresServer, StartUvicorn, UvicornProcess
from tests.support.load import request
from tests.support.postgres import find_bindir
from tests.support.servers import REPO_ROOT

pytestmark = pytest.mark.slow

TOKEN = "template-pool-test-token-0042"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLIENTS = 50
FAIL_TTL, CHECK_TIMEOUT = 1.0, 0.5
TEMPLATE = REPO_ROOT / "tests" / "apps" / "template.py"


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server these tests may stop and start without disturbing others."""
    if find_bindir() is None:
        pytest.skip("these tests stop and start their own server: no PostgreSQL binaries")
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def running_postgres(own_postgres: PostgresServer) -> Iterator[PostgresServer]:
    if not own_postgres.running:
        own_postgres.start_again()
    yield own_postgres
    if not own_postgres.running:
        own_postgres.start_again()


def start_template(
    uvicorn_process: StartUvicorn, postgres: Postgres, *, wait_ready: bool = True, **env: str
) -> UvicornProcess:
    server = uvicorn_process(
        "tests.apps.template:app",
        env={
            "DATABASE_URL": postgres.url("postgresql+psycopg"),
            "LIFESIGNS_TOKEN": TOKEN,
            "LIFESIGNS_FAIL_TTL": str(FAIL_TTL),
            "LIFESIGNS_CHECK_TIMEOUT": str(CHECK_TIMEOUT),
            "LIFESIGNS_EXPOSE": "all",  # /debug/pool on the application port, for the test
            **env,
        },
    )
    if wait_ready:
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, server.log_text()[-4000:]
            time.sleep(0.1)
    return server


async def clients(server: UvicornProcess, until: float) -> list[tuple[int, float]]:
    """``CLIENTS`` clients calling ``GET /items/`` back to back until ``until``."""
    answers: list[tuple[int, float]] = []

    async def client() -> None:
        while time.monotonic() < until:
            answer = await request(server.host, server.port, "/items/", timeout=40)
            answers.append((answer.status, answer.seconds))

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return answers


async def poll_readiness(
    server: UvicornProcess, until: float, every: float = 0.25
) -> list[tuple[float, int]]:
    """``GET /readyz`` every ``every`` seconds until ``until``: (when, status)."""
    polls: list[tuple[float, int]] = []
    while time.monotonic() < until:
        answer = await request(server.host, server.port, "/readyz", timeout=5)
        polls.append((time.monotonic(), answer.status))
        await asyncio.sleep(every)
    return polls


async def test_fifty_clients_on_a_5_plus_10_pool_keep_readiness_and_warn_of_pressure(
    running_postgres: PostgresServer, uvicorn_process: StartUvicorn
):
    server = start_template(uvicorn_process, running_postgres)
    load_for = 30.0
    until = time.monotonic() + load_for
    health: list[dict[str, Any]] = []

    async def look_at_health() -> None:
        await asyncio.sleep(load_for * 2 / 3)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            health.append((await client.get("/health", headers=AUTH)).json())

    answers, polls, _ = await asyncio.gather(
        clients(server, until), poll_readiness(server, until), look_at_health()
    )

    codes = [code for code, _ in answers]
    assert len(codes) > 500, f"only {len(codes)} requests in {load_for:g} s"
    assert set(codes) == {200}, {c: codes.count(c) for c in set(codes)}
    assert len(polls) > 30
    assert [s for _, s in polls if s != 200] == [], f"{len(polls)} polls"

    (document,) = health
    (pressure,) = document["checks"]["database-pool:responseTime"]
    assert pressure["status"] == "warn", pressure
    assert pressure["critical"] is False
    output = pressure["output"]
    assert output.startswith("pool under pressure: ")
    assert re.search(r"wait p95 \d+\.\d+ s, max \d+\.\d+ s of pool_timeout 30 s", output), output
    assert re.search(r"\d+ of 15 connections checked out", output), output
    (database,) = document["checks"]["database:responseTime"]
    assert database["status"] in {"pass", "warn"}  # reachable, whatever the pool does

    dump = httpx.get(f"{server.url}/debug/pool", headers=AUTH, timeout=10).json()
    pool = dump["engines"]["database"]["pool"]
    assert pool["checkout_timeouts"] == 0
    assert 0 <= pool["checked_out"] <= pool["capacity"] == 15
    sizing = dump["engines"]["database"]["sizing"]
    suggested = sizing["suggested_capacity"]
    assert suggested is None or suggested >= 15  # checkouts queued for all fifteen
    assert "Traceback" not in server.log_text()


async def test_database_stopped_under_load_fails_readiness_within_fail_ttl_and_timeout(
    running_postgres: PostgresServer, uvicorn_process: StartUvicorn
):
    server = start_template(uvicorn_process, running_postgres)
    until = time.monotonic() + 12.0
    stopped: list[float] = []

    async def stop_database() -> None:
        await asyncio.sleep(5.0)
        await asyncio.to_thread(running_postgres.stop)
        stopped.append(time.monotonic())

    _, polls, _ = await asyncio.gather(
        clients(server, until), poll_readiness(server, until, every=0.05), stop_database()
    )
    (stopped_at,) = stopped
    before = [s for t, s in polls if t < stopped_at - 2.0]
    assert before and set(before) == {200}
    failing = [t for t, s in polls if s == 503 and t >= stopped_at - 2.0]
    assert failing, "readiness never failed with the database stopped"
    noticed = max(0.0, failing[0] - stopped_at)
    # Polled every 0.05 s; the rest is the machine's (shared, loaded) scheduling.
    assert noticed <= FAIL_TTL + CHECK_TIMEOUT + 0.5, f"503 only {noticed:.2f} s after the stop"
    after = [s for t, s in polls if t > failing[0] + FAIL_TTL + CHECK_TIMEOUT]
    assert after and set(after) == {503}
    assert running_postgres.password not in server.log_text()


def test_a_session_left_open_on_an_error_path_is_a_leak_within_a_second(
    postgres: Postgres, uvicorn_process: StartUvicorn
):
    server = start_template(uvicorn_process, postgres)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/orders/7").status_code == 200  # the happy path returns it
        assert client.get("/orders/1000").status_code == 404
        ended = time.monotonic()
        server.wait_for_log(r"connection leak suspected.*GET /orders/\{order_id\}", timeout=5)
        seen_after = time.monotonic() - ended
        assert client.get("/orders/2000/crash").status_code == 500
        server.wait_for_log(r"connection leak suspected.*/crash", timeout=5)
        dump = client.get("/debug/pool", headers=AUTH).json()["engines"]["database"]
    log = server.log_text()
    report = next(line for line in log.splitlines() if "/orders/{order_id} (request" in line)
    since = re.search(r"still checked out (\d+\.\d) s after its owner ended", report)
    assert since is not None and float(since.group(1)) < 1.0, report
    assert seen_after < 1.0 + 0.5, f"in the log {seen_after:.2f} s after the response"
    assert "ended with status 404" in report
    site = f"tests/apps/template.py:{line_of('# checkout: order')} in read_order"
    assert f"checked out at {site}" in report
    crash = next(line for line in log.splitlines() if "/crash (request" in line)
    assert "raised RuntimeError (a 500)" in crash
    assert f"tests/apps/template.py:{line_of('# checkout: crash')} in crash_on_order" in crash
    assert dump["leaks"]["reported"] == 2
    kinds = {entry["leak_kind"] for entry in dump["leaks"]["recent"]}
    assert kinds == {"owner ended"}
    assert dump["leaks"]["leak_threshold_s"] == 30  # no age threshold was needed


def line_of(marker: str) -> int:
    for number, line in enumerate(TEMPLATE.read_text().splitlines(), 1):
        if line.rstrip().endswith(marker):
            return number
    raise AssertionError(marker)


def test_max_connections_is_known_soon_after_a_start_with_the_database_down(
    running_postgres: PostgresServer, uvicorn_process: StartUvicorn
):
    running_postgres.stop()
    server = start_template(
        uvicorn_process, running_postgres, wait_ready=False, LIFESIGNS_STARTUP_DEADLINE="120"
    )
    with httpx.Client(base_url=server.url, timeout=10) as client:

        def sizing_server() -> dict[str, Any]:
            dump = client.get("/debug/pool", headers=AUTH).json()
            found: dict[str, Any] = dump["engines"]["database"]["sizing"]["server"]
            return found

        deadline = time.monotonic() + 10
        while "max_connections unknown" not in str(sizing_server().get("note")):
            assert time.monotonic() < deadline, sizing_server()
            time.sleep(0.2)
        running_postgres.start_again()
        up_at = time.monotonic()
        while not sizing_server().get("known"):
            assert time.monotonic() - up_at < 10, sizing_server()  # not 600 s
            time.sleep(0.2)
        assert sizing_server()["max_connections"] > 0
