"""The readiness ping's own connection: reachability, never a place in the pool's queue.

The application's pool can be full for ordinary reasons (50 clients on a 5 + 10 pool is
a busy afternoon, not an outage). A readiness ``SELECT 1`` that borrowed from that pool
would queue behind the requests' checkouts and time out, and a readiness-gated load
balancer would pull a healthy replica (issue 10). So the ping runs on a pool of its own:
**one** connection, opened with the engine's own connection factory (its credentials,
TLS and ``connect_args`` apply), kept open between pings so that a probe flood costs one
round trip per cache lifetime, and re-opened after the database drops it.

Every ping is bounded: the check's timeout around the whole call (connection
included), ``statement_timeout`` on PostgreSQL for the statement, and a pool timeout
on the one connection for the rare case where the start-up wait and a probe ping at
once. The connection counts against the server's ``max_connections``: one per replica
per watched engine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, QueuePool

PING_SQL = "SELECT 1 AS lifesigns_ping"
"""What the check runs; the alias makes it easy to find in ``pg_stat_statements``."""


def statement_timeout_sql(dialect: str, timeout: float) -> str | None:
    """``SET LOCAL statement_timeout`` for PostgreSQL, ``None`` elsewhere."""
    if dialect == "postgresql":
        return f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}"
    return None


class ProbeConnection:
    """A one-connection pool beside ``engine``'s, for the readiness ping alone.

    Building one opens nothing: the side engine is made on the first ping and disposed
    by :meth:`close` (at the end of the lifespan).
    """

    def __init__(self, engine: Engine | AsyncEngine, *, timeout: float) -> None:
        self.engine = engine
        self.sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        self.timeout = timeout
        self.guard = statement_timeout_sql(self.sync_engine.dialect.name, timeout)
        self._side: Engine | AsyncEngine | None = None
        self._lock = threading.Lock()
        self._stuck: concurrent.futures.Future[None] | None = None

    def __repr__(self) -> str:
        return f"ProbeConnection({self.sync_engine.url!r}, timeout={self.timeout:g})"

    def _side_engine(self) -> Engine | AsyncEngine:
        with self._lock:
            if self._side is not None:
                return self._side
            url = self.sync_engine.url
            options: dict[str, Any] = {
                "pool_size": 1,
                "max_overflow": 0,
                "pool_timeout": self.timeout,
            }
            side: Engine | AsyncEngine
            if isinstance(self.engine, AsyncEngine):
                side = create_async_engine(url, poolclass=AsyncAdaptedQueuePool, **options)
                side_pool = side.sync_engine.pool
            else:
                side = create_engine(url, poolclass=QueuePool, **options)
                side_pool = side.pool
            creator = getattr(self.sync_engine.pool, "_creator", None)
            if creator is not None:
                # The application's own factory: its connect_args, TLS and do_connect hooks.
                side_pool._creator = creator
            self._side = side
            return side

    async def ping(self, executor: concurrent.futures.Executor | None) -> None:
        """Run ``SELECT 1`` on the probe connection; raises the driver's error.

        A sync engine is driven from ``executor`` (a thread, never the event loop). Such
        a thread cannot be interrupted: while one ping is still stuck (a database that
        accepts connections and never answers), the next fails at once instead of
        stacking a second thread behind it.
        """
        side = self._side_engine()
        try:
            if isinstance(side, AsyncEngine):
                async with side.connect() as conn:
                    if self.guard:
                        await conn.exec_driver_sql(self.guard)
                    await conn.exec_driver_sql(PING_SQL)
                return
            if self._stuck is not None and not self._stuck.done():
                raise TimeoutError("the previous ping is still waiting for the database")
            if executor is None:
                raise RuntimeError("pinging a sync engine needs an executor")
            future = executor.submit(_ping_sync, side, self.guard)
            self._stuck = future
            await asyncio.wrap_future(future)
        except sa_exc.TimeoutError:
            # The one connection never came back (a ping cancelled at the worst moment):
            # start afresh rather than wait for it at every probe.
            with self._lock:
                if self._side is side:
                    self._side = None
            raise TimeoutError(
                "lifesigns' probe connection was still busy with an earlier ping"
            ) from None

    async def close(self) -> None:
        """Close the probe connection (a later ping opens it again)."""
        with self._lock:
            side, self._side = self._side, None
        if side is None:
            return
        if isinstance(side, AsyncEngine):
            await side.dispose()
        else:
            await asyncio.to_thread(side.dispose)


def _ping_sync(engine: Engine, guard: str | None) -> None:
    with engine.connect() as conn:
        if guard:
            conn.exec_driver_sql(guard)
        conn.exec_driver_sql(PING_SQL)
