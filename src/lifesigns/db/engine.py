"""A watched SQLAlchemy engine: its masked URL, its pool's figures and its readiness ping.

Works with a sync ``Engine`` and an ``AsyncEngine`` alike (asyncpg, psycopg 3, aiosqlite
and others). The ping measures reachability on a connection of its own
(:mod:`lifesigns.db.probe`), so it never queues behind the application's checkouts,
whatever the pool does: a full pool is load, and load is not an outage.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool

from .._secrets import mask_url
from ..errors import ConfigError, Degraded
from .probe import PING_SQL, ProbeConnection

__all__ = ["PING_SQL", "WatchedEngine", "engine_url", "ping", "pool_state"]


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
        size, out = state.get("size"), state.get("checked_out")
        if isinstance(size, int) and isinstance(out, int) and max_overflow >= 0:
            # The pool counts a connection being opened as checked out: never more than
            # it may hand out.
            state["checked_out"] = max(0, min(out, size + max_overflow))
    return state


def _exhausted(state: dict[str, Any]) -> bool:
    size, out, extra = state.get("size"), state.get("checked_out"), state.get("max_overflow")
    if not isinstance(size, int) or not isinstance(out, int) or not isinstance(extra, int):
        return False
    return extra >= 0 and out >= size + extra


async def ping(
    engine: Engine | AsyncEngine,
    timeout: float,
    executor: concurrent.futures.Executor | None = None,
) -> dict[str, Any]:
    """Run ``SELECT 1`` once on a connection of its own and return the pool's state.

    Raises the driver's error when the database does not answer, and
    :class:`~lifesigns.errors.Degraded` when it answers while the application's pool is
    exhausted. A sync engine is driven from ``executor`` (a thread), never the loop.
    """
    watched = WatchedEngine("ping", engine, timeout=timeout)
    try:
        return await watched.ping(executor)
    finally:
        await watched.probe.close()


class WatchedEngine:
    """An engine lifesigns watches: its name, masked URL and ``SELECT 1`` ping.

    The ping runs on :attr:`probe`, a one-connection pool of its own (see
    :mod:`lifesigns.db.probe`); the application's pool is only read, never borrowed from.
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
        self.probe = ProbeConnection(engine, timeout=timeout)

    def __repr__(self) -> str:
        return f"WatchedEngine({self.name!r}, {self.url!r})"

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
        await self.probe.ping(executor)
        state = self.pool_state()
        if _exhausted(state):
            # Reachable: readiness holds. The warning says where the latency comes from.
            raise Degraded(
                f"pool exhausted: {state['checked_out']} of "
                f"{state['size'] + state['max_overflow']} connections checked out; "
                "the database answers on lifesigns' own connection"
            )
        return state
