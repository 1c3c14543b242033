"""The nightly statistics rebuild: a batch job that can starve the API's pool
(incidents ``batch-starves-pool`` and ``batch-with-bulkhead``, seed 002)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def rebuild_chunk(engine: AsyncEngine, chunk: int, seconds: float) -> None:
    """Aggregate one chunk of orders, holding a connection the whole time."""
    async with engine.connect() as conn:  # each chunk holds one connection
        await conn.execute(text("SELECT count(*) FROM orders"))
        await asyncio.sleep(seconds)  # the aggregation's work, connection in hand


async def rebuild_statistics(
    engine: AsyncEngine,
    *,
    chunks: int = 8,
    seconds: float = 4.0,
    limit: Callable[[], AbstractAsyncContextManager[object]] | None = None,
) -> None:
    """Rebuild every chunk at once; ``limit`` (a bulkhead) caps the connections it takes."""

    @contextlib.asynccontextmanager
    async def unlimited() -> AsyncIterator[None]:
        yield

    gate = limit or unlimited

    async def one(chunk: int) -> None:
        async with gate():
            await rebuild_chunk(engine, chunk, seconds)

    await asyncio.gather(*(one(n) for n in range(chunks)), return_exceptions=True)
