"""Readiness and start-up against a real PostgreSQL, served by a real uvicorn process.

These are the incidents of seed 004: the app crashed when the database was slow to come
up, and ``/health`` said "healthy" while the database was down.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import PostgresServer, require_control
from tests.support.load import flood
from tests.support.postgres import find_bindir

TOKEN = "e2e-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.slow


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
    """The private server, guaranteed running at the start and at the end of the test."""
    if not own_postgres.running:
        own_postgres.start_again()
    yield own_postgres
    if not own_postgres.running:
        own_postgres.start_again()


def service_env(url: str, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": url, "LIFESIGNS_TOKEN": TOKEN, **extra}


def poll(fn, until, timeout: float, interval: float = 0.05):
    """Call ``fn`` until ``until(result)`` holds or ``timeout`` passes; return the last result."""
    deadline = time.monotonic() + timeout
    result = fn()
    while not until(result) and time.monotonic() < deadline:
        time.sleep(interval)
        result = fn()
    return result


def test_database_down_at_start_the_service_waits_then_becomes_ready(
    running_postgres: PostgresServer, uvicorn_process
):
    running_postgres.stop()
    server = uvicorn_process(
        "tests.apps.service:app",
        env=service_env(running_postgres.url(), LIFESIGNS_STARTUP_DEADLINE="120"),
        ready_path="/livez",
    )
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/livez").status_code == 200
        startup = client.get("/startupz")
        assert startup.status_code == 503
        assert "database: waiting (attempt" in startup.text
        ready = client.get("/readyz", headers=AUTH)
        assert ready.status_code == 503
        assert "starting: database postgresql+asyncpg://lifesigns:***@" in ready.text
        server.wait_for_log(
            r"waiting for database .* attempt \d+ failed .* next attempt in", timeout=10
        )

        # The database comes up ten seconds later; liveness held all along.
        came_up_after = 10.0
        waited_until = time.monotonic() + came_up_after
        while time.monotonic() < waited_until:
            assert client.get("/livez").status_code == 200
            time.sleep(0.5)
        running_postgres.start_again()
        up_at = time.monotonic()
        answer = poll(lambda: client.get("/readyz"), lambda r: r.status_code == 200, timeout=10)
        became_ready = time.monotonic() - up_at
        assert answer.status_code == 200
        assert became_ready < 2.0, f"ready {became_ready:.2f} s after the database came up"
        assert client.get("/startupz").status_code == 200
        assert client.get("/now").status_code == 200

    log = server.log_text()
    assert "Traceback" not in log
    assert server.returncode is None  # no crash
    attempts = re.findall(r"waiting for database .* attempt (\d+) failed", log)
    assert len(attempts) >= 5
    assert running_postgres.password not in log


def test_database_stopped_mid_run_fails_readiness_but_never_liveness(
    running_postgres: PostgresServer, uvicorn_process
):
    pass_ttl, fail_ttl, timeout = 1.0, 0.5, 0.5
    server = uvicorn_process(
        "tests.apps.service:app",
        env=service_env(
            running_postgres.url(),
            LIFESIGNS_PASS_TTL=str(pass_ttl),
            LIFESIGNS_FAIL_TTL=str(fail_ttl),
            LIFESIGNS_CHECK_TIMEOUT=str(timeout),
        ),
    )
    live_codes: list[int] = []
    stop_polling = threading.Event()

    def watch_liveness() -> None:
        with httpx.Client(base_url=server.url, timeout=2) as live:
            while not stop_polling.is_set():
                live_codes.append(live.get("/livez").status_code)
                stop_polling.wait(0.1)

    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert (
            poll(lambda: client.get("/readyz"), lambda r: r.status_code == 200, 15).status_code
            == 200
        )
        watcher = threading.Thread(target=watch_liveness)
        watcher.start()
        try:
            running_postgres.stop()
            stopped_at = time.monotonic()
            failing = poll(lambda: client.get("/readyz"), lambda r: r.status_code == 503, 10)
            noticed = time.monotonic() - stopped_at
            assert failing.status_code == 503
            # The cached pass may live out its lifetime, then one check run fails.
            assert noticed < pass_ttl + timeout + 1.0, f"noticed after {noticed:.2f} s"
            detail = client.get("/readyz", headers=AUTH)
            assert "[-]database failed:" in detail.text

            running_postgres.start_again()
            back = poll(lambda: client.get("/readyz"), lambda r: r.status_code == 200, 15)
            assert back.status_code == 200
        finally:
            stop_polling.set()
            watcher.join(5)
    assert live_codes
    assert set(live_codes) == {200}


def test_probe_flood_reaches_the_database_once_per_cache_lifetime(postgres, uvicorn_process):
    pass_ttl = 2.0
    server = uvicorn_process(
        "tests.apps.service:app",
        env=service_env(postgres.url(), LIFESIGNS_PASS_TTL=str(pass_ttl)),
    )
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert (
            poll(lambda: client.get("/readyz"), lambda r: r.status_code == 200, 15).status_code
            == 200
        )
    postgres.reset_statements()

    started = time.monotonic()
    answers = asyncio.run(flood(server.host, server.port, "/readyz", 1000))
    took = time.monotonic() - started
    assert [a.status for a in answers].count(200) == 1000
    queries = postgres.statement_calls("lifesigns_ping")
    allowed = math.ceil(took / pass_ttl) + 1
    assert queries <= allowed, f"{queries} pings for 1000 probes in {took:.1f} s"


def test_a_check_that_never_returns_cannot_hold_the_probe(postgres, uvicorn_process):
    server = uvicorn_process(
        "tests.apps.service:app", env=service_env(postgres.url(), HANG_CHECK="1")
    )
    with httpx.Client(base_url=server.url, timeout=5) as client:
        poll(lambda: client.get("/startupz"), lambda r: r.status_code == 200, 15)
        for _ in range(3):
            started = time.monotonic()
            answer = client.get("/readyz?verbose", headers=AUTH)
            took = time.monotonic() - started
            assert answer.status_code == 503
            assert took < 0.8 + 0.5, f"readyz took {took:.2f} s"
            assert re.search(r"\[-\]hang failed: timed out after 0.3 s", answer.text), answer.text
            assert "[+]database ok" in answer.text


def test_health_shows_details_only_with_the_token_and_never_the_password(postgres, uvicorn_process):
    server = uvicorn_process("tests.apps.service:app", env=service_env(postgres.url()))
    with httpx.Client(base_url=server.url, timeout=5) as client:
        poll(lambda: client.get("/readyz"), lambda r: r.status_code == 200, 15)
        public = client.get("/health")
        assert public.json() == {"status": "pass", "serviceId": "orders"}
        assert "postgresql" not in public.text
        detailed = client.get("/health", headers=AUTH)
        document = detailed.json()
        assert document["checks"]["database:responseTime"][0]["status"] == "pass"
        assert any("postgresql+asyncpg://lifesigns:***@" in note for note in document["notes"])
        bodies = [detailed.text]
        for path in ("/livez?verbose", "/readyz?verbose", "/startupz?verbose", "/metrics"):
            bodies.append(client.get(path, headers=AUTH).text)
            bodies.append(client.get(path).text)
    for body in [*bodies, server.log_text()]:
        assert postgres.password not in body


def test_start_up_past_its_deadline_names_the_database_and_fails_liveness(
    running_postgres: PostgresServer, uvicorn_process
):
    require_control(running_postgres)
    running_postgres.stop()
    server = uvicorn_process(
        "tests.apps.service:app",
        env=service_env(running_postgres.url(), LIFESIGNS_STARTUP_DEADLINE="2"),
    )
    with httpx.Client(base_url=server.url, timeout=5) as client:
        live = poll(lambda: client.get("/livez", headers=AUTH), lambda r: r.status_code == 503, 10)
        assert live.status_code == 503
        assert "start-up failed" in live.text
        assert "database postgresql+asyncpg://lifesigns:***@127.0.0.1" in live.text
        assert "last error:" in live.text
        assert client.get("/startupz").status_code == 503
    match = server.wait_for_log(
        r"start-up failed: .*did not answer within its start-up deadline of 2 s"
    )
    assert running_postgres.password not in match.group(0)
