"""Who runs a periodic task: once per container, once per cluster, or every process.

Before each run a :class:`PeriodicRunner <lifesigns.tasks.periodic.PeriodicRunner>` asks
its :class:`Leader` whether this process leads; a process that does not lead skips the
run (counted as ``not_leading``, never as a skip). ``once=`` on ``@signs.periodic``
chooses:

* ``"worker"``: every process runs it (no election).
* ``"container"`` (default): under ``lifesigns run``, one worker per container, elected
  with an exclusive ``flock`` on ``<agent runtime folder>/periodic.lock``
  (:class:`FileLeader`). Why a lock file and not "the worker in slot 0": the kernel frees
  a ``flock`` the moment its holder dies, even by SIGKILL, so another worker takes over at
  its next due time with no lease or heartbeat to expire; slot 0 would stay with a dead
  worker until the agent reclaims it, and a replacement may take another slot. The
  holder keeps the lock for its life, so the same worker runs every period. Without the
  agent there is no shared folder and every process runs it, as before.
* ``"cluster"``: one process across every service on one PostgreSQL, elected with a
  session-level ``pg_try_advisory_lock`` on a dedicated connection (:class:`AdvisoryLeader`),
  held for as long as the process leads: a lock taken per run would only keep runs from
  overlapping, while two services a few milliseconds apart would each run once per period.
  The connection is the task's own (not from the application's pool, which it would hold
  forever). Under the agent only the container's leader asks PostgreSQL.

The key is a stable 63-bit hash of ``lifesigns.once:<service>:<task>``. The tasks layer
runs no driver: the assembler (``lifesigns.core``) hands :class:`AdvisoryLeader` a
``connect`` that opens an :class:`SqlSession` on the watched engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError

__all__ = [
    "ONCE",
    "AdvisoryLeader",
    "Both",
    "Everyone",
    "FileLeader",
    "Leader",
    "SqlSession",
    "advisory_key",
    "check_once",
]

logger = logging.getLogger("lifesigns.tasks")

ONCE = ("worker", "container", "cluster")
"""The values of ``once=``."""

_TIMEOUT = 5.0


def check_once(task: str, once: object) -> str:
    """``once`` validated, or a :class:`ConfigError` naming the value and what is allowed."""
    if once not in ONCE:
        raise ConfigError(f"task {task!r}: once={once!r}; allowed: {', '.join(ONCE)}")
    return str(once)


class Leader(Protocol):
    """Decides, before each run, whether this process runs the task."""

    async def lead(self) -> bool:
        """Whether this process leads now (taking the lead when it is free)."""
        ...

    async def close(self) -> None:
        """Give the lead up (at shutdown)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Scope, holder and whether this process holds it, for ``/debug/supervised``."""
        ...


class Everyone:
    """No election: every process runs the task."""

    def __init__(self, why: str = "once='worker'") -> None:
        self.why = why

    async def lead(self) -> bool:
        """Always."""
        return True

    async def close(self) -> None:
        """Nothing to give up."""

    def describe(self) -> dict[str, Any]:
        """Every process runs it, and why."""
        return {"scope": "every process", "why": self.why, "leading": True}


class FileLeader:
    """One process per container: an exclusive ``flock`` on ``path``, kept while alive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"FileLeader({str(self.path)!r}, leading={self._fd is not None})"

    async def lead(self) -> bool:
        """Take the lock if free (never waits); ``True`` while this process holds it."""
        import fcntl

        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        logger.info("pid %d leads the container's periodic tasks (%s)", os.getpid(), self.path)
        return True

    async def close(self) -> None:
        """Release the lock (the kernel does it anyway if the process dies)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def describe(self) -> dict[str, Any]:
        """The container scope, the holder's pid (from the file) and whether it is us."""
        try:
            holder: int | None = int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            holder = None
        return {
            "scope": "container",
            "lock": str(self.path),
            "holder_pid": holder,
            "leading": self._fd is not None,
        }


class SqlSession(Protocol):
    """One dedicated database connection, as the assembler opens it."""

    async def scalar(self, sql: str, params: Mapping[str, Any]) -> Any:
        """The first column of the first row of ``sql``."""
        ...

    async def rows(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every row of ``sql`` as a mapping."""
        ...

    async def close(self) -> None:
        """Close the connection (which releases session-level locks)."""
        ...


def advisory_key(service: str, task: str) -> int:
    """A stable signed 64-bit key (non-negative) for ``pg_try_advisory_lock``."""
    digest = hashlib.blake2b(f"lifesigns.once:{service}:{task}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


_TRY = "SELECT pg_try_advisory_lock(:key)"
_HOLDER = (
    "SELECT a.pid AS backend_pid, a.application_name, host(a.client_addr) AS client_addr, "
    "a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :hi AND l.objid = :lo "
    "AND l.objsubid = 1"
)


class AdvisoryLeader:
    """One process per cluster: a session-level advisory lock held on its own connection.

    ``connect`` opens the dedicated connection; ``label`` becomes its
    ``application_name`` so that the holder is recognisable in ``pg_stat_activity`` and in
    ``/debug/supervised``. A lost connection loses the lead (PostgreSQL released the lock
    with the session); the next due time tries again on a new one.
    """

    def __init__(
        self,
        connect: Callable[[str], Awaitable[SqlSession]],
        key: int,
        *,
        engine: str,
        label: str | None = None,
        timeout: float = _TIMEOUT,
    ) -> None:
        self.connect = connect
        self.key = key
        self.engine = engine
        self.label = label or f"lifesigns once {socket.gethostname()} pid {os.getpid()}"
        self.timeout = timeout
        self._session: SqlSession | None = None
        self._leading = False
        self._holder: dict[str, Any] | None = None
        self._checked_at: float | None = None
        self._error: str | None = None

    def __repr__(self) -> str:
        return f"AdvisoryLeader(key={self.key}, engine={self.engine!r}, leading={self._leading})"

    async def lead(self) -> bool:
        """Still leading (the connection answers), or the lock taken now; never waits on it."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._lead()
        except Exception as exc:  # a database outage: not leading, never a crash
            self._error = f"{type(exc).__name__}: {exc}"
            await self._drop()
            logger.warning("once='cluster' lock on %s not checked: %s", self.engine, self._error)
            return False

    async def _lead(self) -> bool:
        if self._session is None:
            self._session = await self.connect(self.label)
        session = self._session
        if self._leading:
            await session.scalar("SELECT 1", {})  # the session, and so the lock, still lives
        else:
            self._leading = bool(await session.scalar(_TRY, {"key": self.key}))
            if self._leading:
                logger.info(
                    "%s leads once='cluster' tasks on %s (advisory lock %d)",
                    self.label,
                    self.engine,
                    self.key,
                )
        self._error = None
        await self._look(session)
        if not self._leading:
            await self._drop()  # no idle connection per follower
        return self._leading

    async def _look(self, session: SqlSession) -> None:
        hi, lo = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
        found = await session.rows(_HOLDER, {"hi": hi, "lo": lo})
        self._holder = found[0] if found else None
        self._checked_at = time.time()

    async def _drop(self) -> None:
        session, self._session = self._session, None
        self._leading = False
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()

    async def close(self) -> None:
        """Close the connection: PostgreSQL releases the lock with it."""
        await self._drop()

    def describe(self) -> dict[str, Any]:
        """The cluster scope, the key, the holder as last seen, and whether it is us."""
        return {
            "scope": "cluster",
            "engine": self.engine,
            "advisory_lock": self.key,
            "leading": self._leading,
            "holder": self._holder,
            "holder_seen_at": self._checked_at,
            "error": self._error,
        }


class Both:
    """Leads when ``first`` and then ``second`` do: the container's leader asks the cluster."""

    def __init__(self, first: Leader, second: Leader) -> None:
        self.first, self.second = first, second

    async def lead(self) -> bool:
        """``first`` leads, then ``second``."""
        return await self.first.lead() and await self.second.lead()

    async def close(self) -> None:
        """Give both up."""
        await self.second.close()
        await self.first.close()

    def describe(self) -> dict[str, Any]:
        """The outer scope's description, with the inner one under ``within``."""
        return {**self.second.describe(), "within": self.first.describe()}
