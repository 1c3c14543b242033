"""``watch_engine`` with each driver, sync and async, against real databases."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from lifesigns import Lifesigns, Status
from lifesigns.health import Phase


async def ready_result(signs: Lifesigns, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while signs.lifecycle.phase is Phase.STARTING and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return await signs.probes.readiness()


@pytest.mark.parametrize(
    "driver", ["postgresql+asyncpg", "postgresql+psycopg_async", "postgresql+psycopg"]
)
async def test_each_postgres_driver_is_watched(postgres, driver):
    url = postgres.url(driver)
    engine = create_engine(url) if driver == "postgresql+psycopg" else create_async_engine(url)
    signs = Lifesigns(service="orders")
    watched = signs.watch_engine(engine)
    assert postgres.password not in watched.description
    assert ":***@" in watched.description
    async with signs.lifespan():
        result = await ready_result(signs)
        assert result.status is Status.PASS, result.reason
        check = next(c for c in result.checks if c.name == "database")
        assert check.details is not None
        assert check.details["checked_out"] == 0
    if hasattr(engine, "dispose"):
        outcome = engine.dispose()
        if asyncio.iscoroutine(outcome):
            await outcome


async def test_sqlite_through_aiosqlite_is_watched(tmp_path):
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    signs = Lifesigns()
    signs.watch_engine(engine)
    async with signs.lifespan():
        assert (await ready_result(signs)).status is Status.PASS
    await engine.dispose()


async def test_exhausted_pool_is_reported_at_once_instead_of_queueing(postgres):
    engine = create_async_engine(postgres.url(), pool_size=1, max_overflow=0, pool_timeout=30)
    signs = Lifesigns()
    signs.watch_engine(engine, timeout=1.0)
    async with signs.lifespan():
        assert (await ready_result(signs)).status is Status.PASS
        async with engine.connect():
            check = signs.checks.get("database")
            assert check is not None
            started = time.monotonic()
            result = await signs.runner.run(
                type(check)(name="database-now", func=check.func, timeout=1.0)
            )
            assert time.monotonic() - started < 0.5
            assert result.status is Status.WARN
            assert "pool exhausted: 1 of 1 connections checked out" in (result.error or "")
    await engine.dispose()


async def test_two_engines_need_two_names(postgres):
    signs = Lifesigns()
    signs.watch_engine(create_async_engine(postgres.url()))
    from lifesigns import ConfigError

    with pytest.raises(ConfigError, match="'database' is already watched"):
        signs.watch_engine(create_async_engine(postgres.url()))
    signs.watch_engine(create_async_engine(postgres.url()), name="replica")
    assert sorted(signs.engines) == ["database", "replica"]
