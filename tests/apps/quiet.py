"""A FastAPI service for the development-mode and pool-timeout tests (issue 10).

No logging is configured here: lifesigns' own stderr handler shows its lines. Two SQLite
files (``QUIET_DIR``), each behind a pool of one connection, no overflow and a 0.5 s
checkout timeout, so a second checkout times out at once:

- ``database``: an ``AsyncEngine`` (aiosqlite), ``async def`` endpoints;
- ``reports``: an ``Engine`` (sqlite3), ``def`` endpoints run in the thread pool.

Endpoints: ``GET /hold?seconds=3`` and ``GET /reports/hold?seconds=3`` hold the only
connection of their pool; ``GET /query`` and ``GET /reports/query`` run one query (503
from lifesigns when the checkout times out). Nothing here handles the timeout itself.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from lifesigns import Lifesigns

DIRECTORY = Path(os.environ.get("QUIET_DIR", "."))
POOL = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.5}

engine = create_async_engine(f"sqlite+aiosqlite:///{DIRECTORY / 'database.db'}", **POOL)
reports = create_engine(f"sqlite:///{DIRECTORY / 'reports.db'}", **POOL)

signs = Lifesigns(service="quiet")
signs.watch_engine(engine, name="database")
signs.watch_engine(reports, name="reports")

app = FastAPI()
signs.install(app)


@app.get("/hold")
async def hold(seconds: float = 3.0) -> dict[str, float]:
    """Hold the async pool's only connection for ``seconds``."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        await asyncio.sleep(seconds)
    return {"held": seconds}


@app.get("/query")
async def query() -> dict[str, int]:
    """One query on the async pool."""
    async with engine.connect() as connection:
        return {"answer": int((await connection.execute(text("SELECT 1"))).scalar_one())}


@app.get("/reports/hold")
def reports_hold(seconds: float = 3.0) -> dict[str, float]:
    """Hold the sync pool's only connection for ``seconds`` (in a worker thread)."""
    with reports.connect() as connection:
        connection.execute(text("SELECT 1"))
        time.sleep(seconds)
    return {"held": seconds}


@app.get("/reports/query")
def reports_query() -> dict[str, int]:
    """One query on the sync pool."""
    with reports.connect() as connection:
        return {"answer": int(connection.execute(text("SELECT 1")).scalar_one())}
