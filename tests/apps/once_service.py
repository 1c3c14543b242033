"""A service with one periodic task that appends a line per run, for ``once=`` tests.

``ONCE_RUNS``: the file of runs (``<pid> <time>`` per line); ``ONCE_SCOPE``: ``once=``;
``ONCE_EVERY``: the period; ``DATABASE_URL``: the watched engine (SQLite by default).
"""

from __future__ import annotations

import asyncio
import os
import time

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from lifesigns import Lifesigns

signs = Lifesigns(service="once-service")
engine = create_async_engine(os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///:memory:"))
signs.watch_engine(engine, name="database")

app = FastAPI()
signs.install(app)

RUNS = os.environ["ONCE_RUNS"]


@app.get("/pid")
async def pid() -> dict[str, int]:
    """Which worker answered."""
    await asyncio.sleep(0)
    return {"pid": os.getpid()}


@signs.periodic(
    every=float(os.environ.get("ONCE_EVERY", "0.5")),
    once=os.environ.get("ONCE_SCOPE", "container"),
    initial_delay=0,
)
async def tick() -> None:
    """One line per run: which process ran it, and when."""
    with open(RUNS, "a") as runs:
        runs.write(f"{os.getpid()} {time.time():.3f}\n")
