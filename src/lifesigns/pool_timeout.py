"""A pool checkout that timed out, answered at the edge: 503 with ``Retry-After``, not a 500.

An endpoint whose ``engine.connect()`` (or session) waits ``pool_timeout`` for a
connection and gets none raises :class:`sqlalchemy.exc.TimeoutError`. Unhandled, the
client sees a 500 with a traceback in the log, or a reset connection. It is overload, not
a bug: the right answer is ``503 Service Unavailable`` with ``Retry-After``, which clients
and load balancers retry elsewhere. :meth:`lifesigns.Lifesigns.install` registers
:class:`PoolTimeoutHandler` for it (unless the application handles the exception or one
of its SQLAlchemy bases itself), and the answer is::

    HTTP/1.1 503 Service Unavailable
    Retry-After: 1
    {"error": "database pool exhausted: no connection within the pool timeout",
     "pool": "database", "checked_out": 15, "capacity": 15, "waiting": 27}

The pool is found in the traceback (the ``Pool`` whose checkout raised) and named by the
watched engine that owns it (``"unknown"``, without figures, for a pool lifesigns does not
watch); the figures come from the host's ``pool`` dump when pool
forensics is on, else from the pool itself (without ``waiting``). The body carries no URL,
no message of the driver and no stack. One WARNING line is logged per pool at most every
:data:`LOG_EVERY` seconds, with the count of the timeouts since the last line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import Pool
from starlette.requests import Request
from starlette.responses import JSONResponse

from .host import Host

__all__ = ["LOG_EVERY", "RETRY_AFTER", "PoolTimeoutHandler", "handles_it_already"]

logger = logging.getLogger("lifesigns.pool")

RETRY_AFTER = 1
"""Seconds in ``Retry-After``: a retry soon, on another replica or once the pool frees."""

LOG_EVERY = 10.0
"""Seconds between two WARNING lines about one pool's checkout timeouts."""

_FIGURES = ("checked_out", "capacity", "waiting")


def handles_it_already(handlers: Mapping[Any, Any]) -> bool:
    """Whether ``handlers`` (``app.exception_handlers``) already cover the pool timeout."""
    covered = [c for c in sa_exc.TimeoutError.__mro__ if issubclass(c, sa_exc.SQLAlchemyError)]
    return any(c in handlers for c in covered)


def _pool_of(traceback: TracebackType | None) -> Pool | None:
    found = None
    while traceback is not None:
        candidate = traceback.tb_frame.f_locals.get("self")
        if isinstance(candidate, Pool):
            found = candidate  # the innermost one: the pool whose checkout raised
        traceback = traceback.tb_next
    return found


class PoolTimeoutHandler:
    """The exception handler: ``app.add_exception_handler(sa_exc.TimeoutError, handler)``.

    ``engines`` gives the watched engines by name (objects with ``sync_engine``), read
    on each call so engines watched after ``install()`` are named too.
    """

    def __init__(self, host: Host, engines: Callable[[], Mapping[str, Any]]) -> None:
        self.host = host
        self.engines = engines
        self._lock = threading.Lock()
        self._last_line: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"PoolTimeoutHandler(engines={sorted(self.engines())!r})"

    async def __call__(self, request: Request, exc: Exception) -> JSONResponse:
        """Answer 503 with ``Retry-After`` and the pool's figures; log at most one line."""
        name, figures = self._describe(_pool_of(exc.__traceback__))
        body: dict[str, Any] = {
            "error": "database pool exhausted: no connection within the pool timeout",
            "pool": name,
            **figures,
        }
        self._log(request, name, figures)
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER)})

    def _describe(self, pool: Pool | None) -> tuple[str, dict[str, Any]]:
        try:
            engines = dict(self.engines())
            names = [n for n, w in engines.items() if w.sync_engine.pool is pool]
            if not names and pool is None and len(engines) == 1:
                names = list(engines)  # the traceback did not show the pool: the only one
            if not names:
                return "unknown", {}
            name = names[0]
            return name, self._figures(name, pool or engines[name].sync_engine.pool)
        except Exception:  # the answer must go out whatever the figures do
            logger.debug("pool timeout: figures unavailable", exc_info=True)
            return "unknown", {}

    def _figures(self, name: str, pool: Pool) -> dict[str, Any]:
        dump = self.host.dumps.get("pool")
        if dump is not None:
            engine = dump().get("engines", {}).get(name, {})
            shown = engine.get("pool", {}) if isinstance(engine, Mapping) else {}
            figures = {k: shown[k] for k in _FIGURES if isinstance(shown.get(k), int)}
            if figures:
                return figures
        own: dict[str, Any] = {}
        checkedout = getattr(pool, "checkedout", None)
        if callable(checkedout):
            own["checked_out"] = int(checkedout())
        size, overflow = getattr(pool, "size", None), getattr(pool, "_max_overflow", None)
        if callable(size) and isinstance(overflow, int):
            own["capacity"] = int(size()) + max(0, overflow)
        return own

    def _log(self, request: Request, name: str, figures: Mapping[str, Any]) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last_line.get(name)
            if last is not None and now - last < LOG_EVERY:
                self._unlogged[name] = self._unlogged.get(name, 0) + 1
                return
            self._last_line[name] = now
            more = self._unlogged.pop(name, 0)
        template = getattr(request.scope.get("route"), "path", None)
        where = f"{request.scope.get('root_path', '')}{template}" if template else request.url.path
        shown = ", ".join(f"{k.replace('_', ' ')} {figures[k]}" for k in _FIGURES if k in figures)
        logger.warning(
            "pool checkout timed out during %s %s: pool '%s'%s; answered 503 with "
            "Retry-After: %d%s",
            request.method,
            where,
            name,
            f" ({shown})" if shown else "",
            RETRY_AFTER,
            f"; {more} more since the last line" if more else "",
            extra={
                "lifesigns": {
                    "event": "pool_checkout_timeout",
                    "pool": name,
                    "route": f"{request.method} {where}",
                    "since_last_line": more,
                    **figures,
                }
            },
        )
