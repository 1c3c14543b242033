"""A FastAPI service with lifesigns, to run under ``lifesigns run`` with several workers.

Settings come from the environment as in production (``LIFESIGNS_TOKEN``,
``LIFESIGNS_STALL_THRESHOLD``...). A watched SQLite engine gives the pool forensics
something to hold. Each blocking line carries a ``# stall:`` marker so that tests can
find its line number.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from lifesigns import Lifesigns

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

signs = Lifesigns(service="agent-service")
engine = create_async_engine("sqlite+aiosqlite:///:memory:")
signs.watch_engine(engine, name="database")

app = FastAPI()
signs.install(app)


@app.get("/pid")
async def pid() -> dict[str, int]:
    """Which worker answered."""
    await asyncio.sleep(0)
    return {"pid": os.getpid()}


@app.get("/slow/{seconds}")
async def slow(seconds: float) -> dict[str, int]:
    """Takes its time without blocking the loop (for drains)."""
    await asyncio.sleep(seconds)
    return {"pid": os.getpid()}


@app.get("/freeze/sleep/{seconds}")
async def freeze_sleep(seconds: float) -> dict[str, float]:
    """Blocks the loop in a system call, the GIL released."""
    time.sleep(seconds)  # stall: sleep
    return {"slept": seconds}


@app.get("/freeze/regex/{n}")
async def freeze_regex(n: int) -> dict[str, bool]:
    """Blocks the loop in C code that holds the GIL: catastrophic backtracking."""
    found = re.match(r"^(a+)+$", "a" * n + "!")  # stall: regex
    return {"found": found is not None}


@app.get("/freeze/holding/{seconds}")
async def freeze_holding(seconds: float) -> dict[str, float]:
    """Holds a pooled connection, then blocks the loop (a pool holder for the incident)."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        time.sleep(seconds)  # stall: holding
    return {"slept": seconds}
