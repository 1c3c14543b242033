"""A FastAPI service for the lifecycle tests: supervised tasks, drain, deadlines, memory.

Configured by environment variables (``LIFESIGNS_*`` go to :class:`~lifesigns.Lifesigns`):

- ``LIFECYCLE_DB_URL``: asyncpg URL of the watched engine (required);
- ``LIFECYCLE_TASKS``: comma-separated tasks to register: ``failing`` (raises every run),
  ``hanging`` (never finishes a run), ``ticking`` (a healthy periodic task), ``worker``
  (a long-running supervised task);
- ``LIFECYCLE_ORPHAN=1``: create a task at import time, outside supervision (seed 001).

Routes: ``/work?seconds=`` (sleeps), ``/db/hold?seconds=`` (holds a pooled connection
while sleeping, deadline 0.5 s), ``/db/pg-sleep?seconds=`` (a query that sleeps,
deadline 0.5 s), ``/sync-sleep?seconds=`` (blocks a worker thread, deadline 0.5 s),
``/pool`` (the pool's state), ``/leak?kb=`` (leaks small Python objects), ``/pid``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import lifesigns.drain
import lifesigns.http.inflight
import lifesigns.memory
from lifesigns import Lifesigns
from lifesigns.http.deadline import DeadlineMiddleware

logging.basicConfig(
    level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
)

TASKS = {t for t in os.environ.get("LIFECYCLE_TASKS", "").split(",") if t}

# The tests read /metrics and /debug/* on the application port: since issue 10 the
# default serves the probes only there, so this app asks for every surface (deliberate).
signs = Lifesigns(service="lifecycle", expose=os.environ.get("LIFESIGNS_EXPOSE", "all"))
engine = create_async_engine(
    os.environ["LIFECYCLE_DB_URL"], pool_size=3, max_overflow=0, pool_timeout=5
)
signs.watch_engine(engine)
lifesigns.drain.attach(signs)
lifesigns.memory.attach(signs)
lifesigns.http.inflight.attach(signs)

if "failing" in TASKS:

    @signs.periodic(every=1.0, timeout=1.0, backoff=0.2, max_restarts=4, within=30.0)
    async def failing() -> None:
        raise RuntimeError("the payments API said no")


if "hanging" in TASKS:

    @signs.periodic(every=1.0, timeout=0.4, max_restarts=100, within=60.0, initial_delay=0.2)
    async def hanging() -> None:
        await _wait_for_a_reply_that_never_comes()


async def _wait_for_a_reply_that_never_comes() -> None:
    await asyncio.Event().wait()  # HANG-LINE


if "ticking" in TASKS:

    @signs.periodic(every=0.2, timeout=5.0, initial_delay=0.0)
    async def ticking() -> None:
        await asyncio.sleep(0.1)


if "worker" in TASKS:

    @signs.supervised(restart="permanent")
    async def worker() -> None:
        while True:
            await asyncio.sleep(0.5)


async def _periodic_cleanup() -> None:
    while True:
        await asyncio.sleep(300)


if os.environ.get("LIFECYCLE_ORPHAN") == "1":
    try:
        _loop = asyncio.get_running_loop()
    except RuntimeError:  # gunicorn imports the app before the worker's loop exists
        _loop = asyncio.new_event_loop()
    _ORPHAN = _loop.create_task(  # noqa: RUF006 - orphaned on purpose (seed 001)
        _periodic_cleanup(), name="rate-limit-cleanup"
    )

app = FastAPI()
app.add_middleware(
    DeadlineMiddleware,
    signs=signs,
    routes={"/db": 0.5, "/sync-sleep": 0.5, "/work": None},
)
signs.install(app)

_LEAKED: list[str] = []


@app.get("/work")
async def work(seconds: float = 1.0) -> dict[str, Any]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.get("/db/hold")
async def hold(seconds: float = 5.0) -> dict[str, Any]:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        await asyncio.sleep(seconds)
    return {"held": seconds}


@app.get("/db/pg-sleep")
async def pg_sleep(seconds: float = 5.0) -> dict[str, Any]:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
    return {"slept": seconds}


@app.get("/sync-sleep")
def sync_sleep(seconds: float = 2.0) -> dict[str, Any]:
    time.sleep(seconds)
    return {"slept": seconds}


@app.get("/pool")
async def pool() -> dict[str, Any]:
    p: Any = engine.pool
    return {"checked_out": p.checkedout(), "checked_in": p.checkedin(), "size": p.size()}


@app.get("/leak")
async def leak(kb: int = 85) -> dict[str, Any]:
    count = kb * 1024 // 100
    stamp = time.monotonic_ns()
    _LEAKED.extend([f"leaked-{stamp}-{i:040d}" for i in range(count)])  # LEAK-LINE
    return {"leaked_strings": len(_LEAKED)}


@app.get("/pid")
async def pid() -> dict[str, Any]:
    return {"pid": os.getpid()}
