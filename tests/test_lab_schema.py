"""The demo's schema step when several workers start at once on an empty PostgreSQL.

Two concurrent ``CREATE TABLE``s fail one of them on a unique index of PostgreSQL's
catalog (``pg_type_typname_nsp_index``): a worker's start-up failed that way in CI, and
its ``/livez`` said so. Real PostgreSQL, the demo's apps in one process, their
lifespans started together.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from bench.request_path import Lifespan
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from lifesigns.lab.app import create_app
from tests.support import Postgres

WORKERS = 6
TOKEN = "schema-test-token-0123456789abcdef"


async def _startup_of(app: Any) -> str:
    """``/startupz?verbose`` once it passes or fails (30 s at most)."""
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://demo", headers=headers
    ) as client:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            answer = await client.get("/startupz?verbose")
            if answer.status_code == 200 or "start-up failed" in answer.text:
                return f"{answer.status_code} {answer.text}"
            assert asyncio.get_running_loop().time() < deadline, answer.text
            await asyncio.sleep(0.05)


async def test_workers_starting_together_on_an_empty_database_all_start(
    postgres: Postgres,
) -> None:
    url = postgres.url()
    admin = create_async_engine(url)
    try:
        async with admin.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS orders"))
    finally:
        await admin.dispose()
    lifespans = [Lifespan(create_app(url, token=TOKEN)) for _ in range(WORKERS)]
    await asyncio.gather(*(s.start() for s in lifespans))  # each: startup.complete
    try:
        answers = await asyncio.gather(*(_startup_of(s.app) for s in lifespans))
        assert all(a.startswith("200 ") for a in answers), answers
    finally:
        await asyncio.gather(*(s.stop() for s in lifespans), return_exceptions=True)
    admin = create_async_engine(url)
    try:
        async with admin.connect() as conn:
            assert await conn.scalar(text("SELECT to_regclass('orders') IS NOT NULL"))
    finally:
        await admin.dispose()
