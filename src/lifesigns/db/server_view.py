"""What PostgreSQL says about the holders' connections, asked over a side connection.

Ages are measured on the server's clock alone (``clock_timestamp()``, not ``now()``,
which is the start of the asking transaction and so earlier than a state change it
sees: "active for -0.1 s"), and never below zero.

The pool may be exhausted when this is needed, so the query never borrows from it: it
opens one short-lived connection of its own (the engine's own connection factory, so
its credentials, TLS and ``connect_args`` apply, behind a ``NullPool``), asks
``pg_stat_activity`` about the holders' backend pids (read from each connection when it
was opened) and closes it. Each call runs in its own daemon thread and is bounded by
``timeout`` (connection included); while an earlier call is still stuck, the next one
fails at once instead of piling up threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine, bindparam, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from .._secrets import SecretRedactor

T = TypeVar("T")

QUERY_TEXT_LIMIT = 200
"""Characters of each backend's current (or last) query that reports keep."""

_ACTIVITY = text(
    f"""
    SELECT pid, state, left(query, {QUERY_TEXT_LIMIT}) AS query,
           greatest(0, extract(epoch FROM clock_timestamp() - state_change))::float8
               AS state_age,
           greatest(0, extract(epoch FROM clock_timestamp() - xact_start))::float8
               AS xact_age,
           wait_event_type, wait_event, application_name
    FROM pg_stat_activity
    WHERE pid IN :pids
    """  # noqa: S608 - a constant, not input
).bindparams(bindparam("pids", expanding=True))

_LIMITS = text(
    """
    SELECT name, setting FROM pg_settings
    WHERE name IN ('max_connections', 'superuser_reserved_connections',
                   'reserved_connections')
    """
)


@dataclass(frozen=True)
class Backend:
    """One server backend as ``pg_stat_activity`` shows it."""

    pid: int
    state: str | None
    query: str | None
    state_age: float | None
    xact_age: float | None
    wait_event: str | None
    application_name: str | None

    def describe(self) -> str:
        """``backend 4242: idle in transaction for 12.0 s (transaction open 12.1 s); last
        query: SELECT ...``."""
        parts = [f"backend {self.pid}: {self.state or 'unknown state'}"]
        if self.state_age is not None:
            parts.append(f" for {self.state_age:.1f} s")
        if self.xact_age is not None:
            parts.append(f" (transaction open {self.xact_age:.1f} s)")
        if self.wait_event:
            parts.append(f", waiting on {self.wait_event}")
        if self.query:
            word = "query" if self.state == "active" else "last query"
            parts.append(f"; {word}: {' '.join(self.query.split())}")
        return "".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "pid": self.pid,
            "state": self.state,
            "query": self.query,
            "state_age_s": None if self.state_age is None else round(self.state_age, 3),
            "xact_age_s": None if self.xact_age is None else round(self.xact_age, 3),
            "wait_event": self.wait_event,
            "application_name": self.application_name,
        }


class ServerView:
    """Asks PostgreSQL about backends and limits for one watched engine."""

    def __init__(
        self,
        engine: Engine | AsyncEngine,
        *,
        timeout: float,
        redactor: SecretRedactor,
    ) -> None:
        self.engine = engine
        self.sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        self.timeout = timeout
        self.redactor = redactor
        self.available = self.sync_engine.dialect.name == "postgresql"
        self._stuck: threading.Thread | None = None

    def backends(self, pids: Collection[int]) -> dict[int, Backend]:
        """``pg_stat_activity`` rows of ``pids``; raises on failure or after ``timeout``."""
        wanted = sorted({p for p in pids if p})
        if not self.available or not wanted:
            return {}
        rows = self._run(lambda conn: conn.execute(_ACTIVITY, {"pids": wanted}).all())
        found: dict[int, Backend] = {}
        for row in rows:
            m = row._mapping
            wait = ":".join(x for x in (m["wait_event_type"], m["wait_event"]) if x) or None
            query = m["query"]
            found[int(m["pid"])] = Backend(
                pid=int(m["pid"]),
                state=m["state"],
                query=self.redactor.redact(query) if query else None,
                state_age=m["state_age"],
                xact_age=m["xact_age"],
                wait_event=wait,
                application_name=m["application_name"],
            )
        return found

    def limits(self) -> dict[str, int]:
        """``max_connections`` and the reserved slots, from ``pg_settings``."""
        if not self.available:
            return {}
        rows = self._run(lambda conn: conn.execute(_LIMITS).all())
        return {str(name): int(setting) for name, setting in rows}

    # -- plumbing ---------------------------------------------------------------------

    def _run(self, query: Callable[[Any], T]) -> T:
        stuck = self._stuck
        if stuck is not None and stuck.is_alive():
            raise TimeoutError("an earlier server query is still waiting for the database")
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = self._query(query)
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=work, name="lifesigns server view", daemon=True)
        thread.start()
        thread.join(self.timeout + 0.5)
        if thread.is_alive():
            self._stuck = thread
            raise TimeoutError(f"the server did not answer within {self.timeout:g} s")
        if "error" in box:
            error: BaseException = box["error"]
            raise RuntimeError(self.redactor.redact(f"{type(error).__name__}: {error}"))
        result: T = box["result"]
        return result

    def _query(self, query: Callable[[Any], T]) -> T:
        guard = f"SET statement_timeout = {max(1, int(self.timeout * 1000))}"
        creator = getattr(self.sync_engine.pool, "_creator", None)
        options: dict[str, Any] = {"poolclass": NullPool}
        if isinstance(self.engine, AsyncEngine):

            async def run() -> T:
                side = create_async_engine(self.sync_engine.url, **options)
                if creator is not None:
                    side.sync_engine.pool._creator = creator
                try:
                    async with asyncio.timeout(self.timeout), side.connect() as conn:
                        await conn.exec_driver_sql(guard)
                        return await conn.run_sync(lambda sync: query(sync))
                finally:
                    await side.dispose()

            return asyncio.run(run())
        side_sync = create_engine(self.sync_engine.url, **options)
        if creator is not None:
            side_sync.pool._creator = creator
        try:
            with side_sync.connect() as conn:
                conn.exec_driver_sql(guard)
                return query(conn)
        finally:
            side_sync.dispose()
