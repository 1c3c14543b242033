"""The stalls service plus a watched pool, a ``lab`` dump and one trigger (the live page's).

``GET /orders`` holds a pooled connection (SQLite, ``LIVE_LAB_DB``, default in memory) for
a moment, so the page's connection pool has something to show. The live page's lab tab
shows a button per incident from the ``lab`` dump; its button POSTs the trigger (on the
application port, another origin than the side port that serves the page). The trigger
here freezes the loop for ``LIVE_LAB_FREEZE`` seconds (default 4) just after it answers,
in a function of its own (``# stall: lab`` marks the line).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from tests.apps.stalls import app, signs

__all__ = ["app"]

FREEZE = float(os.environ.get("LIVE_LAB_FREEZE", "4"))
_base: dict[str, str] = {}

engine = create_async_engine(
    os.environ.get("LIVE_LAB_DB", "sqlite+aiosqlite:///:memory:"),
    poolclass=AsyncAdaptedQueuePool,
    pool_size=8,
    max_overflow=0,
)
signs.watch_engine(engine, name="orders-db")
Sessions = async_sessionmaker(engine)


@app.get("/orders")
async def orders() -> dict[str, int]:
    """Reads the orders, holding a connection for a moment as a real query would."""
    async with Sessions() as session:
        found: int = (await session.execute(text("SELECT 3"))).scalar_one()
        await asyncio.sleep(0.15)
    return {"orders": found}


def export_ledger(seconds: float) -> None:
    """A synchronous export run on the event loop (the incident: seeds 000 and 003)."""
    time.sleep(seconds)  # stall: lab


def lab_dump() -> dict[str, Any]:
    """The incidents, each with its trigger on the application port."""
    base = _base.get("url", "")
    return {
        "incidents": [
            {
                "name": "sync-export",
                "seed": "003",
                "seeds": ["000", "003"],
                "title": "A synchronous export inside an async handler",
                "look_for": "the stall's frame: live_lab.py export_ledger",
                "trigger": f"{base}/lab/incidents/sync-export",
            }
        ]
    }


signs.add_dump("lab", lab_dump)


@app.middleware("http")
async def remember_base(request: Request, call_next: Any) -> Any:
    """The application port's URL, for the triggers (known from the first request)."""
    _base.setdefault("url", str(request.base_url).rstrip("/"))
    return await call_next(request)


@app.post("/lab/incidents/sync-export", status_code=202)
async def trigger() -> JSONResponse:
    """Freeze the loop just after answering."""
    asyncio.get_running_loop().call_later(0.05, export_ledger, FREEZE)
    return JSONResponse({"incident": "sync-export"}, status_code=202)
