"""A FastAPI service with every lifesigns layer on, for request metrics, rules and dashboards.

Configured by environment variables (all optional):

- ``DATABASE_URL``: a SQLAlchemy async URL; when set the engine is watched (pool forensics
  on) and ``GET /api/v1/db`` runs a query on it;
- ``OBSERVED_METRICS_PORT``: also serve ``/metrics`` from prometheus_client's own server
  thread on 127.0.0.1 at that port, so that it answers while the event loop is frozen;
- ``OBSERVED_SERVICE``: the service name (default ``observed``);
- ``OBSERVED_CENSUS_INTERVAL``: seconds between task censuses (default the library's);
- ``LIFESIGNS_*``: lifesigns' own options (``LIFESIGNS_DEADLINE``, ``LIFESIGNS_SIDE_PORT``...).

Routes, chosen to exercise route naming: a router included with ``prefix="/api/v1"``,
a Starlette application mounted at ``/sub``, one mounted at ``/tenants/{tenant}``, and
``GET /freeze/{seconds}``, which blocks the event loop with ``time.sleep``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException
from prometheus_client import start_http_server
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from lifesigns import Lifesigns
from lifesigns.loop import attach

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

TOKEN = "observed-test-token-0123456789"
URL = os.environ.get("DATABASE_URL")
METRICS_PORT = os.environ.get("OBSERVED_METRICS_PORT")

# The loop layer is attached explicitly, first, to choose its census interval.
# The tests scrape /metrics on the application port: it is served there only when asked
# (expose=, issue 10); the side port serves it always.
signs = Lifesigns(
    service=os.environ.get("OBSERVED_SERVICE", "observed"),
    token=TOKEN,
    watchdog=False,
    expose=os.environ.get("LIFESIGNS_EXPOSE", "all"),
)
if os.environ.get("OBSERVED_CENSUS_INTERVAL"):
    attach(signs, census_interval=float(os.environ["OBSERVED_CENSUS_INTERVAL"]))
else:
    attach(signs)
engine = create_async_engine(URL, pool_size=2, max_overflow=1, pool_timeout=2) if URL else None
if engine is not None:
    signs.watch_engine(engine)
reports = signs.bulkhead("reports", 2, timeout=1.0)


@signs.periodic(every=0.5, initial_delay=0.1)
async def refresh_cache() -> None:
    """A supervised periodic task that always succeeds."""
    await asyncio.sleep(0)


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Serves the registry from its own thread when ``OBSERVED_METRICS_PORT`` is set."""
    server = None
    if METRICS_PORT:
        server, _ = start_http_server(int(METRICS_PORT), "127.0.0.1", registry=signs.registry)
    try:
        yield
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if engine is not None:
            await engine.dispose()


api = APIRouter()


@api.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, int]:
    """200, or 404 for a negative id."""
    if item_id < 0:
        raise HTTPException(status_code=404, detail="no such item")
    return {"id": item_id}


@api.post("/items", status_code=201)
async def create_item() -> dict[str, str]:
    """201."""
    return {"created": "yes"}


@api.get("/items/{item_id}/fail")
async def fail(item_id: int) -> None:
    """An unhandled exception: 500."""
    raise RuntimeError(f"item {item_id} is cursed")


@api.get("/slow/{seconds}")
async def slow(seconds: float) -> dict[str, float]:
    """Waits without blocking the loop (a deadline cuts it)."""
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@api.get("/stream")
async def stream() -> StreamingResponse:
    """Ten chunks, 0.3 s apart: a client can leave in the middle."""

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(10):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0.3)

    return StreamingResponse(chunks(), media_type="text/plain")


@api.get("/hang-up")
async def hang_up(request: Request) -> dict[str, str]:
    """Waits (up to 10 s) for the client to leave, then answers to nobody: a 499."""
    for _ in range(200):
        if await request.is_disconnected():
            break
        await asyncio.sleep(0.05)
    return {"answered": "too late"}


@api.get("/db")
async def db() -> dict[str, int]:
    """One query on the watched engine, inside the ``reports`` bulkhead."""
    if engine is None:
        raise HTTPException(status_code=503, detail="no database configured")
    async with reports, engine.connect() as conn:
        value: int = (await conn.execute(text("SELECT 1"))).scalar_one()
    return {"value": value}


@api.get("/work/{seconds}")
def work(seconds: float) -> dict[str, float]:
    """A sync endpoint: runs in anyio's thread pool."""
    time.sleep(seconds)
    return {"worked": seconds}


async def thing(request: Request) -> PlainTextResponse:
    """A plain Starlette endpoint in a mounted application."""
    return PlainTextResponse(f"thing {request.path_params['thing']}")


async def order(request: Request) -> PlainTextResponse:
    """An endpoint under a mount with a parameter."""
    params = request.path_params
    return PlainTextResponse(f"order {params['order']} of {params['tenant']}")


app = FastAPI(lifespan=lifespan)
app.include_router(api, prefix="/api/v1")
app.mount("/sub", Starlette(routes=[Route("/things/{thing}", thing)]))
app.mount("/tenants/{tenant}", Starlette(routes=[Route("/orders/{order}", order)]))


@app.get("/freeze/{seconds}")
async def freeze(seconds: float) -> dict[str, float]:
    """Blocks the event loop: the incident the loop-stalled alert is for."""
    time.sleep(seconds)  # the point of this endpoint
    return {"froze": seconds}


signs.install(app)
