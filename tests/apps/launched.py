"""A user's own service, as ``fastapi run`` and ``uvicorn`` launch it (issue 8).

tests/test_launchers.py copies this file to ``<project>/app/main.py`` in a temporary
project (``app`` is a package there), and starts it with the command-line launchers from
that directory, so that its frames are the application's and lifesigns knows nothing of
the test suite. Configured by ``LAUNCHED_DB_URL`` (an ``sqlite+aiosqlite`` URL) and
``LIFESIGNS_TOKEN``.

Lines the tests look for carry a ``# LINE:`` marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from lifesigns import Lifesigns

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

signs = Lifesigns(service="launched")
engine = create_async_engine(
    os.environ["LAUNCHED_DB_URL"], poolclass=AsyncAdaptedQueuePool, pool_size=2, max_overflow=0
)
signs.watch_engine(engine)
Sessions = async_sessionmaker(engine)
app = FastAPI()
release = [asyncio.Event()]


@app.get("/stall")
async def stall(seconds: float = 1.0) -> dict[str, float]:
    """Blocks the event loop in the endpoint itself."""
    time.sleep(seconds)  # LINE: stall
    return {"stalled": seconds}


@app.get("/stall-later")
async def stall_later(seconds: float = 1.0) -> dict[str, float]:
    """Blocks the loop in a callback: no frame of the application is on the stack."""
    asyncio.get_running_loop().call_soon(time.sleep, seconds)
    return {"scheduled": seconds}


@app.get("/hold")
async def hold() -> dict[str, bool]:
    """Holds a pooled connection until ``POST /release`` (or 30 s)."""
    async with Sessions() as session:
        await session.execute(text("SELECT 1"))  # LINE: checkout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release[0].wait(), 30)
    return {"held": True}


@app.post("/release")
async def let_go() -> dict[str, Any]:
    """Lets every holder go."""
    event, release[0] = release[0], asyncio.Event()
    event.set()
    return {"released": True}


signs.install(app)
