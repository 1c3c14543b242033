"""A small FastAPI service on a real database, configured by environment variables.

``DATABASE_URL``: the SQLAlchemy URL; ``SYNC_ENGINE=1`` makes a sync engine of it.
``HANG_CHECK=1``: add a critical check that never returns.
lifesigns' own options come from ``LIFESIGNS_*`` as in production.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from lifesigns import Lifesigns

logging.basicConfig(
    level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s"
)

url = os.environ["DATABASE_URL"]
sync = os.environ.get("SYNC_ENGINE") == "1"
engine = create_engine(url) if sync else create_async_engine(url)

# The tests read /metrics and /debug/* on the application port: since issue 10 the
# default serves the probes only there, so this app asks for every surface (deliberate).
signs = Lifesigns(service="orders", expose=os.environ.get("LIFESIGNS_EXPOSE", "all"))
signs.watch_engine(engine)

if os.environ.get("HANG_CHECK") == "1":

    @signs.check("hang", timeout=0.3)
    async def hang() -> None:
        await asyncio.Event().wait()


app = FastAPI()
signs.install(app)


@app.get("/now")
async def now() -> dict[str, str]:
    if sync:
        with engine.connect() as conn:  # type: ignore[union-attr]
            value = conn.execute(text("SELECT now()::text")).scalar_one()
    else:
        async with engine.connect() as conn:  # type: ignore[union-attr]
            value = (await conn.execute(text("SELECT now()::text"))).scalar_one()
    return {"now": value}


@app.get("/naive-health")
async def naive_health() -> dict[str, str]:
    """Seed 004's fix: a database round trip on every probe, no timeout, no cache."""
    if sync:
        with engine.connect() as conn:  # type: ignore[union-attr]
            conn.execute(text("SELECT 1 AS naive_ping"))
    else:
        async with engine.connect() as conn:  # type: ignore[union-attr]
            await conn.execute(text("SELECT 1 AS naive_ping"))
    return {"status": "healthy", "database": "connected"}
