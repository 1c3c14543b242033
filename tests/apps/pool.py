"""A FastAPI service with a watched pool, for the pool-forensics tests (issue 4).

Configured by environment variables:

- ``POOL_URL``: SQLAlchemy URL, password included; ``POOL_MODE``: ``async`` (an
  ``AsyncEngine``, ``async def`` endpoints) or ``sync`` (an ``Engine``, ``def`` endpoints
  run in the thread pool);
- ``POOL_SIZE``, ``POOL_OVERFLOW``, ``POOL_TIMEOUT``: the QueuePool's settings;
- ``POOL_BULKHEAD``: when set, the batch job runs inside ``bulkhead("batch", N)``;
- ``LIFESIGNS_TOKEN``, ``LIFESIGNS_LEAK_THRESHOLD``, ``LIFESIGNS_SATURATED_AFTER``...:
  read by lifesigns itself.

Endpoints (both modes):

- ``GET /api``: one quick query, the API traffic of seed 002 (503 when the pool's
  checkout times out);
- ``GET /reports/{report_id}/leak``: opens a session, queries, never closes it (the
  connection stays checked out, idle in transaction);
- ``GET /hold``: holds a connection in a transaction until ``POST /release`` (or 30 s);
- ``POST /release``: lets every holder go and closes the leaked sessions;
- ``POST /batch?groups=8&hold=2``: starts seed 002's aggregation in the background: each
  group holds a connection in a transaction for ``hold`` seconds, all groups at once;
  ``GET /batch`` says whether it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from lifesigns import Lifesigns
from lifesigns.db.bulkhead import Bulkhead
from lifesigns.db.engine import WatchedEngine
from lifesigns.db.forensics import attach

logging.basicConfig(
    level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
)

MODE = os.environ.get("POOL_MODE", "async")
URL = os.environ["POOL_URL"]
POOL = {
    "pool_size": int(os.environ.get("POOL_SIZE", "5")),
    "max_overflow": int(os.environ.get("POOL_OVERFLOW", "0")),
    "pool_timeout": float(os.environ.get("POOL_TIMEOUT", "1")),
}
HOLD_LIMIT = 30.0

# The tests read /metrics and /debug/* on the application port: since issue 10 the
# default serves the probes only there, so this app asks for every surface (deliberate).
signs = Lifesigns(service="pool-test", expose=os.environ.get("LIFESIGNS_EXPOSE", "all"))
app = FastAPI()


@app.exception_handler(sa_exc.TimeoutError)
async def pool_timed_out(request: Request, exc: sa_exc.TimeoutError) -> JSONResponse:
    """A checkout that waited pool_timeout in vain: 503, as a real service would say."""
    return JSONResponse({"error": str(exc)}, status_code=503)


batch_state: dict[str, Any] = {"running": False, "done": 0, "errors": []}
bulkhead: Bulkhead | None = None
if os.environ.get("POOL_BULKHEAD"):
    bulkhead = signs.bulkhead("batch", max_connections=int(os.environ["POOL_BULKHEAD"]))


def async_routes() -> WatchedEngine:
    """The async engine and its `async def` endpoints."""
    async_engine = create_async_engine(URL, **POOL)
    watched = signs.watch_engine(async_engine, forensics=False)
    AsyncSessions = async_sessionmaker(async_engine)
    leaked_async: list[AsyncSession] = []
    release_async = [asyncio.Event()]

    @app.get("/api")
    async def api() -> dict[str, Any]:
        async with AsyncSessions() as session:
            value: int = (await session.execute(text("SELECT 1 AS api_call"))).scalar_one()
        return {"value": value}

    @app.get("/reports/{report_id}/leak")
    async def open_report_and_forget(report_id: int) -> dict[str, Any]:
        session = AsyncSessions()
        await session.execute(text("SELECT 1 AS report_leak"))
        leaked_async.append(session)  # never closed: the connection stays checked out
        return {"report": report_id}

    @app.get("/hold")
    async def hold_connection() -> dict[str, Any]:
        async with AsyncSessions() as session:
            await session.execute(text("SELECT 1 AS held_connection"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release_async[0].wait(), HOLD_LIMIT)
        return {"held": True}

    @app.post("/release")
    async def release() -> dict[str, Any]:
        event = release_async[0]
        release_async[0] = asyncio.Event()
        event.set()
        while leaked_async:
            await leaked_async.pop().close()
        return {"released": True}

    async def aggregate_group(seconds: float) -> None:
        async with AsyncSessions() as session, session.begin():
            await session.execute(text("SELECT pg_sleep(:s) AS aggregate_group"), {"s": seconds})

    async def run_batch(groups: int, seconds: float) -> None:
        async def one() -> None:
            try:
                if bulkhead is not None:
                    async with bulkhead:
                        await aggregate_group(seconds)
                else:
                    await aggregate_group(seconds)
            except Exception as exc:
                batch_state["errors"].append(f"{type(exc).__name__}: {exc}")
            batch_state["done"] += 1

        try:
            await asyncio.gather(*(one() for _ in range(groups)))
        finally:
            batch_state["running"] = False

    background: set[asyncio.Task[None]] = set()

    @app.post("/batch")
    async def start_batch(groups: int = 8, hold: float = 2.0) -> dict[str, Any]:
        batch_state.update(running=True, done=0, errors=[])
        task = asyncio.get_running_loop().create_task(run_batch(groups, hold), name="batch")
        background.add(task)
        task.add_done_callback(background.discard)
        return {"started": groups}

    return watched


def sync_routes() -> WatchedEngine:
    """The sync engine and its `def` endpoints (run in the thread pool)."""
    engine = create_engine(URL, **POOL)
    watched = signs.watch_engine(engine, forensics=False)
    Sessions = sessionmaker(engine)
    leaked_sync: list[Session] = []
    release_sync = [threading.Event()]
    executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="batch")

    @app.get("/api")
    def api() -> dict[str, Any]:
        with Sessions() as session:
            value: int = session.execute(text("SELECT 1 AS api_call")).scalar_one()
        return {"value": value}

    @app.get("/reports/{report_id}/leak")
    def open_report_and_forget(report_id: int) -> dict[str, Any]:
        session = Sessions()
        session.execute(text("SELECT 1 AS report_leak"))
        leaked_sync.append(session)  # never closed: the connection stays checked out
        return {"report": report_id}

    @app.get("/hold")
    def hold_connection() -> dict[str, Any]:
        event = release_sync[0]
        with Sessions() as session:
            session.execute(text("SELECT 1 AS held_connection"))
            event.wait(HOLD_LIMIT)
        return {"held": True}

    @app.post("/release")
    def release() -> dict[str, Any]:
        event, release_sync[0] = release_sync[0], threading.Event()
        event.set()
        while leaked_sync:
            leaked_sync.pop().close()
        return {"released": True}

    def aggregate_group(seconds: float) -> None:
        with Sessions() as session, session.begin():
            session.execute(text("SELECT pg_sleep(:s) AS aggregate_group"), {"s": seconds})

    def one_group(seconds: float) -> None:
        try:
            if bulkhead is not None:
                with bulkhead:
                    aggregate_group(seconds)
            else:
                aggregate_group(seconds)
        except Exception as exc:
            batch_state["errors"].append(f"{type(exc).__name__}: {exc}")
        batch_state["done"] += 1

    def run_batch_sync(groups: int, seconds: float) -> None:
        try:
            list(executor.map(lambda _: one_group(seconds), range(groups)))
        finally:
            batch_state["running"] = False

    @app.post("/batch")
    def start_batch(groups: int = 8, hold: float = 2.0) -> dict[str, Any]:
        batch_state.update(running=True, done=0, errors=[])
        threading.Thread(target=run_batch_sync, args=(groups, hold), daemon=True).start()
        return {"started": groups}

    return watched


@app.get("/batch")
def batch_status() -> dict[str, Any]:
    return dict(batch_state)


watched = async_routes() if MODE == "async" else sync_routes()
forensics = attach(signs, watched)
signs.install(app)
