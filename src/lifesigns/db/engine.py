"""A watched SQLAlchemy engine: its readiness check and its start-up wait.

Works with a sync ``Engine`` and an ``AsyncEngine`` alike (asyncpg, psycopg 3, aiosqlite
and others). The check never waits in the pool's queue: when every connection is checked
out it reports that at once instead of queueing behind the requests for ``pool_timeout``
(30 s by default).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool

from .._secrets import mask_url
from ..errors import ConfigError, Degraded

PING_SQL = "SELECT 1 AS lifesigns_ping"
"""What the check runs; the alias makes it easy to find in ``pg_stat_statements``."""


def engine_url(engine: Engine | AsyncEngine) -> str:
    """The engine's URL with its password masked."""
    return mask_url(engine.url)


def _sync_engine(engine: Engine | AsyncEngine) -> Engine:
    if isinstance(engine, AsyncEngine):
        return engine.sync_engine
    if isinstance(engine, Engine):
        return engine
    raise ConfigError(
        "watch_engine() takes a SQLAlchemy Engine or AsyncEngine; "
        f"got {type(engine).__name__}: {engine!r}"
    )


def pool_state(pool: Pool) -> dict[str, Any]:
    """Size, checked-out connections and overflow of a pool, where the pool knows them."""
    state: dict[str, Any] = {"pool": type(pool).__name__}
    for key, attr in (("size", "size"), ("checked_out", "checkedout"), ("overflow", "overflow")):
        method = getattr(pool, attr, None)
        if callable(method):
            state[key] = method()
    max_overflow = getattr(pool, "_max_overflow", None)
    if isinstance(max_overflow, int):
        state["max_overflow"] = max_overflow
    return state


def _exhausted(state: dict[str, Any]) -> bool:
    size, out, extra = state.get("size"), state.get("checked_out"), state.get("max_overflow")
    if not isinstance(size, int) or not isinstance(out, int) or not isinstance(extra, int):
        return False
    return extra >= 0 and out >= size + extra


def _statement_timeout_sql(dialect: str, timeout: float) -> str | None:
    if dialect == "postgresql":
        return f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}"
    return None


async def ping(
    engine: Engine | AsyncEngine,
    timeout: float,
    executor: concurrent.futures.Executor | None = None,
) -> dict[str, Any]:
    """Run ``SELECT 1`` on ``engine`` once and return the pool's state.

    Raises :class:`~lifesigns.errors.Degraded` when the pool is exhausted (no waiting in
    its queue) and the driver's error when the database does not answer. On PostgreSQL
    the statement runs under ``statement_timeout``; the caller bounds the whole call.
    A sync engine is driven from ``executor`` (a thread), never from the event loop.
    """
    return await WatchedEngine("ping", engine, timeout=timeout).ping(executor)


def _ping_sync(engine: Engine, guard: str | None) -> None:
    with engine.connect() as conn:
        if guard:
            conn.exec_driver_sql(guard)
        conn.exec_driver_sql(PING_SQL)


class WatchedEngine:
    """An engine lifesigns watches: its name, masked URL and ``SELECT 1`` ping.

    A sync engine is pinged from a worker thread that cannot be interrupted; while one
    such ping is still stuck (a database that accepts connections and never answers),
    the next ping fails at once instead of stacking a second thread behind it.
    """

    def __init__(
        self,
        name: str,
        engine: Engine | AsyncEngine,
        *,
        timeout: float,
        startup_deadline: float = 60.0,
    ) -> None:
        self.name = name
        self.engine = engine
        self.sync_engine = _sync_engine(engine)
        self.url = engine_url(engine)
        self.timeout = timeout
        self.startup_deadline = startup_deadline
        self._stuck: concurrent.futures.Future[None] | None = None

    @property
    def password(self) -> str | None:
        """The URL's password, for the redactor (never shown)."""
        return self.sync_engine.url.password

    @property
    def description(self) -> str:
        """``database postgresql+asyncpg://app:***@db:5432/orders``."""
        return f"{self.name} {self.url}"

    def pool_state(self) -> dict[str, Any]:
        """Size, checked-out connections and overflow of the engine's pool."""
        return pool_state(self.sync_engine.pool)

    async def ping(self, executor: concurrent.futures.Executor | None = None) -> dict[str, Any]:
        """See :func:`ping`."""
        state = self.pool_state()
        if _exhausted(state):
            raise Degraded(
                f"pool exhausted: {state['checked_out']} of "
                f"{state['size'] + state['max_overflow']} connections checked out; "
                "not queueing behind them"
            )
        guard = _statement_timeout_sql(self.sync_engine.dialect.name, self.timeout)
        if isinstance(self.engine, AsyncEngine):
            async with self.engine.connect() as conn:
                if guard:
                    await conn.exec_driver_sql(guard)
                await conn.exec_driver_sql(PING_SQL)
            return state
        if self._stuck is not None and not self._stuck.done():
            raise TimeoutError("the previous ping is still waiting for the database")
        if executor is None:
            raise RuntimeError("pinging a sync engine needs an executor")
        future = executor.submit(_ping_sync, self.sync_engine, guard)
        self._stuck = future
        await asyncio.wrap_future(future)
        return state
