"""The lab's database switch: refuse connections for a while, outside any worker.

``database-down-at-start`` restarts the workers while the database refuses connections;
the switch back cannot run in a worker (it is being replaced), so it runs here, in a
short-lived process of its own: ``python -m lifesigns.lab.dbswitch`` with the URL in
``LIFESIGNS_LAB_DATABASE_URL`` (never on the command line, where ``ps`` would show its
password), the seconds and, optionally, a pid to send SIGHUP once connections are refused.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import psutil
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


async def refuse_connections(url: str, seconds: float, restart_pid: int | None = None) -> None:
    """Make the database of ``url`` refuse connections for ``seconds``, then allow them again.

    Connections are switched off from the maintenance database ``postgres`` (PostgreSQL
    refuses it on the database one is connected to), existing sessions are cut, and
    the workers of ``restart_pid`` (uvicorn's supervisor) get SIGTERM: each drains and
    exits, and the supervisor starts a new one, into a database that does not answer.
    """
    target = make_url(url)
    name = target.database
    # lifesigns: ignore[LS108] ALTER DATABASE and pg_terminate_backend only, bounded by wait_for
    admin = create_async_engine(target.set(database="postgres"), poolclass=NullPool)
    quoted = admin.dialect.identifier_preparer.quote(str(name))
    try:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS false"))
            try:
                await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
                if restart_pid is not None:
                    for worker in psutil.Process(restart_pid).children():
                        worker.send_signal(signal.SIGTERM)
                await asyncio.sleep(seconds)
            finally:
                await conn.execute(text(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS true"))
    finally:
        await admin.dispose()


def main(argv: list[str]) -> int:
    """``python -m lifesigns.lab.dbswitch SECONDS [PID]``; the URL comes from the environment."""
    url = os.environ.get("LIFESIGNS_LAB_DATABASE_URL")
    if not url or not argv:
        sys.stderr.write(
            "usage: LIFESIGNS_LAB_DATABASE_URL=... python -m lifesigns.lab.dbswitch S [PID]\n"
        )
        return 2
    seconds = float(argv[0])
    pid = int(argv[1]) if len(argv) > 1 else None
    asyncio.run(asyncio.wait_for(refuse_connections(url, seconds, pid), timeout=seconds + 30))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
