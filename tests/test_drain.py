"""Graceful drain on SIGTERM, under uvicorn and under gunicorn's UvicornWorker.

Seed 004 lists "no graceful shutdown" among its risks; the Kubernetes termination
sequence keeps routing requests for a moment after SIGTERM. With 200 requests of about
1 s in flight, SIGTERM must fail readiness at once, let every request finish, stop the
supervised tasks, dispose the engine and exit within the grace period.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Postgres, StartUvicorn, UvicornProcess

pytestmark = pytest.mark.slow

TOKEN = "lifecycle-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
APP = "tests.apps.lifecycle_app:app"
REQUESTS = 200
REQUEST_SECONDS = 1.2
DRAIN_DELAY = 0.4
GRACE = 5.0


class GunicornProcess(UvicornProcess):
    """``gunicorn -k uvicorn_worker.UvicornWorker`` with one worker, driven like uvicorn."""

    def __init__(self, app: str, *, env: dict[str, str], log_path: Path) -> None:
        super().__init__(app, env=env, log_path=log_path)
        self._args = [
            sys.executable,
            "-m",
            "gunicorn",
            app,
            "--worker-class",
            "uvicorn_worker.UvicornWorker",
            "--workers",
            "1",
            "--bind",
            f"{self.host}:{self.port}",
            "--graceful-timeout",
            "10",
        ]


@pytest.fixture
def start_gunicorn(tmp_path: Path) -> Iterator[Callable[[str, dict[str, str]], GunicornProcess]]:
    started: list[GunicornProcess] = []

    def start(app: str, env: dict[str, str]) -> GunicornProcess:
        server = GunicornProcess(app, env=env, log_path=tmp_path / "gunicorn.log")
        started.append(server)
        server.start()
        server.wait_ready("/livez", timeout=30.0)
        return server

    yield start
    for server in started:
        server.terminate(timeout=5.0)


async def _in_flight(client: httpx.AsyncClient) -> int:
    return int((await client.get("/debug/requests", headers=AUTH)).json()["in_flight"])


async def _drain_under_load(server: UvicornProcess) -> None:
    limits = httpx.Limits(max_connections=REQUESTS + 20, max_keepalive_connections=REQUESTS)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=30.0, limits=limits) as load,
        httpx.AsyncClient(base_url=server.url, timeout=5.0) as probe,
    ):
        deadline = time.monotonic() + 30.0
        while (await probe.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, server.log_text()
            await asyncio.sleep(0.05)
        calls = [
            asyncio.ensure_future(load.get("/work", params={"seconds": REQUEST_SECONDS}))
            for _ in range(REQUESTS)
        ]
        while await _in_flight(probe) < REQUESTS:
            assert time.monotonic() < deadline, server.log_text()
            await asyncio.sleep(0.01)

        server.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # Under gunicorn the arbiter passes the signal on: poll rather than ask once.
        readyz = (await probe.get("/readyz")).status_code
        while readyz != 503 and time.monotonic() - signalled < DRAIN_DELAY:
            readyz = (await probe.get("/readyz")).status_code
        answered_after = time.monotonic() - signalled

        responses = await asyncio.gather(*calls, return_exceptions=True)
        failures = [r for r in responses if not isinstance(r, httpx.Response) or r.is_error]
        assert failures == [], failures[:3]
        assert readyz == 503, server.log_text()
        assert answered_after < DRAIN_DELAY
        code = await asyncio.to_thread(server.wait, DRAIN_DELAY + GRACE + 5.0)
        exited_after = time.monotonic() - signalled
    assert exited_after < DRAIN_DELAY + GRACE, (exited_after, server.log_text())
    assert code in (0, -signal.SIGTERM), server.log_text()


def _assert_drained_in_order(log: str) -> None:
    stages = [
        "SIGTERM received: draining. Readiness fails now",
        "drain delay over: the server stops accepting; ",
        "supervised tasks cancelled: ticking",
        "engine database disposed (no connection held)",
        "drained in ",
    ]
    positions = [log.find(stage) for stage in stages]
    assert all(p >= 0 for p in positions), (positions, log)
    assert positions == sorted(positions), (positions, log)
    assert "worker (cancelled while running" in log
    assert "Exception in ASGI application" not in log


def _env(postgres: Postgres) -> dict[str, str]:
    return {
        "LIFECYCLE_DB_URL": postgres.url(),
        "LIFECYCLE_TASKS": "ticking,worker",
        "LIFESIGNS_TOKEN": TOKEN,
        "LIFESIGNS_DRAIN_DELAY": str(DRAIN_DELAY),
        "LIFESIGNS_GRACE": str(GRACE),
        "LIFESIGNS_TERMINATION_GRACE": "10",
    }


async def test_sigterm_drains_200_requests_under_uvicorn(
    postgres: Postgres, uvicorn_process: StartUvicorn
) -> None:
    server = uvicorn_process(APP, env=_env(postgres), ready_path="/livez")
    await _drain_under_load(server)
    log = server.log_text()
    _assert_drained_in_order(log)
    assert "Waiting for connections to close" in log or "request(s) in flight" in log


async def test_sigterm_drains_200_requests_under_gunicorn_uvicorn_worker(
    postgres: Postgres, start_gunicorn: Callable[[str, dict[str, str]], GunicornProcess]
) -> None:
    server = start_gunicorn(APP, _env(postgres))
    await _drain_under_load(server)
    log = server.log_text()
    _assert_drained_in_order(log)
    assert "Handling signal: term" in log  # the arbiter passed SIGTERM on to the worker
