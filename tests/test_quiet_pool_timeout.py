"""A pool checkout that times out in an endpoint is a 503 with Retry-After, not a 500 (issue 10).

Real uvicorn, real SQLAlchemy pools of one connection (no overflow, 0.5 s timeout): one
request holds the connection, the next one's checkout times out. lifesigns' exception
handler answers 503 with ``Retry-After`` and the pool's figures, names the right pool of
two, logs one WARNING line (not one per request), and no traceback.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from lifesigns import Lifesigns
from tests.support import StartUvicorn, UvicornProcess

pytestmark = pytest.mark.slow

APP = "tests.apps.quiet:app"


def _hold(server: UvicornProcess, path: str, seconds: float) -> threading.Thread:
    thread = threading.Thread(
        target=httpx.get,
        args=(f"{server.url}{path}",),
        kwargs={"params": {"seconds": seconds}, "timeout": 30.0},
        daemon=True,
    )
    thread.start()
    return thread


def _timed_out(server: UvicornProcess, path: str) -> httpx.Response:
    """Poll ``path`` until its checkout times out (the holder may not have its connection yet)."""
    deadline = time.monotonic() + 15.0
    while True:
        answer = httpx.get(f"{server.url}{path}", timeout=10.0)
        if answer.status_code != 200 or time.monotonic() > deadline:
            return answer


@pytest.mark.parametrize(
    ("pool", "prefix"),
    [("database", ""), ("reports", "/reports")],
    ids=["async-engine", "sync-engine"],
)
def test_a_pool_timeout_is_answered_503_with_retry_after_and_the_pools_figures(
    uvicorn_process: StartUvicorn, tmp_path: Path, pool: str, prefix: str
) -> None:
    server = uvicorn_process(APP, env={"QUIET_DIR": str(tmp_path)}, ready_path="/readyz")
    holder = _hold(server, f"{prefix}/hold", 6.0)

    answers = [_timed_out(server, f"{prefix}/query")]
    answers += [httpx.get(f"{server.url}{prefix}/query", timeout=10.0) for _ in range(2)]

    for answer in answers:
        assert answer.status_code == 503, (answer.text, server.log_text())
        assert answer.headers["retry-after"] == "1"
        body = answer.json()
        assert body["pool"] == pool, body
        assert body["checked_out"] == 1 and body["capacity"] == 1, body
        assert isinstance(body["waiting"], int), body
        assert "pool exhausted" in body["error"]
        # No URL, no driver message, no stack in what the client sees.
        assert str(tmp_path) not in answer.text and "Traceback" not in answer.text
        assert "QueuePool limit" not in answer.text
    holder.join(timeout=20.0)
    assert httpx.get(f"{server.url}{prefix}/query", timeout=10.0).status_code == 200

    log = server.log_text()
    lines = [line for line in log.splitlines() if "pool checkout timed out" in line]
    assert len(lines) == 1, log  # three timeouts within LOG_EVERY: one line
    assert (
        f"WARNING lifesigns.pool: pool checkout timed out during GET {prefix}/query: "
        f"pool '{pool}' (checked out 1, capacity 1, waiting " in lines[0]
    ), lines
    assert "answered 503 with Retry-After: 1" in lines[0]
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log


def test_the_applications_own_handler_is_left_in_place() -> None:
    def own(request: Request, exc: Exception) -> Response:
        return Response("the application's own", status_code=500)

    app = FastAPI()
    app.add_exception_handler(sa_exc.SQLAlchemyError, own)
    Lifesigns(watchdog=False, memory=False).install(app)
    assert sa_exc.TimeoutError not in app.exception_handlers
    assert app.exception_handlers[sa_exc.SQLAlchemyError] == own

    plain = FastAPI()
    Lifesigns(watchdog=False, memory=False).install(plain)
    assert sa_exc.TimeoutError in plain.exception_handlers


@pytest.mark.parametrize("forensics", [False, True], ids=["pool-itself", "pool-dump"])
def test_the_figures_come_from_the_pool_itself_without_forensics(
    tmp_path: Path, forensics: bool
) -> None:
    engine = create_engine(
        f"sqlite:///{tmp_path / 'own.db'}", pool_size=1, max_overflow=0, pool_timeout=0.3
    )
    unwatched = create_engine(
        f"sqlite:///{tmp_path / 'other.db'}", pool_size=1, max_overflow=0, pool_timeout=0.3
    )
    signs = Lifesigns(watchdog=False, memory=False)
    signs.watch_engine(engine, name="orders", forensics=forensics, wait_at_startup=False)
    app = FastAPI()

    @app.get("/query")
    def query(which: str = "orders") -> int:
        with (engine if which == "orders" else unwatched).connect() as connection:
            return int(connection.execute(text("SELECT 1")).scalar_one())

    signs.install(app)
    with TestClient(app) as client, engine.connect(), unwatched.connect():
        answer = client.get("/query")
        other = client.get("/query", params={"which": "other"})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    body = answer.json()
    assert body["pool"] == "orders" and body["checked_out"] == 1 and body["capacity"] == 1
    assert ("waiting" in body) is forensics, body
    # A pool lifesigns does not watch is still a 503, named as unknown, without figures.
    assert other.status_code == 503, other.text
    assert other.json() == {
        "error": "database pool exhausted: no connection within the pool timeout",
        "pool": "unknown",
    }
