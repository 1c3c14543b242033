"""The db layer on a host: one call watches an engine end to end.

:func:`attach_engine` is what :meth:`lifesigns.Lifesigns.watch_engine` composes. On the
host it registers the readiness check (``SELECT 1`` on a connection of its own, see
:mod:`lifesigns.db.probe`), a component that closes that connection at the end of the
lifespan, and pool forensics (:mod:`lifesigns.db.forensics`); it returns what start-up
should wait for, for the assembler to wait on. It needs nothing but a
:class:`~lifesigns.host.Host`, so it is tested with ``Host()``::

    host = Host()
    attached = attach_engine(host, engine)
    assert "database" in host.checks.names()

The readiness check answers within the probe budget whatever the pool does: when every
connection is checked out it still pings (on its own connection) and only warns. When
the application's own queries find the database gone (a disconnect), the cached pass is
dropped, so the next probe pings at once instead of serving a stale "ok" for
``pass_ttl``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine

from .. import _config
from ..errors import ConfigError
from ..health import Check
from ..host import HasHost, Host, as_host
from .engine import WatchedEngine
from .forensics import PoolForensics, attach
from .holders import CurrentRequest

ENGINES_LAYER = "db.engines"


@dataclass(frozen=True)
class StartupWait:
    """What start-up should wait for: ``attempt`` raises until the database answers.

    The assembler hands it to its start-up waits (:class:`lifesigns.startup.Dependency`
    has the same fields); the db layer does not import that sibling layer.
    """

    name: str
    description: str
    attempt: Callable[[], Awaitable[object]]
    deadline: float
    attempt_timeout: float


@dataclass
class AttachedEngine:
    """What :func:`attach_engine` registered: the engine, its check, what start-up
    should wait for (``None`` with ``wait_at_startup=False``) and its forensics."""

    watched: WatchedEngine
    check: Check
    wait: StartupWait | None
    forensics: PoolForensics | None


class _Engines:
    """The engines watched on one host, by name."""

    def __init__(self) -> None:
        self.by_name: dict[str, WatchedEngine] = {}


def engines_of(host: Host) -> dict[str, WatchedEngine]:
    """The engines watched on ``host``, by name."""
    found = host.find_layer(ENGINES_LAYER)
    return dict(found.by_name) if isinstance(found, _Engines) else {}


class _ProbeCloser:
    """Closes an engine's probe connection when the lifespan ends."""

    def __init__(self, watched: WatchedEngine) -> None:
        self.watched = watched
        self.name = f"database probe {watched.name}"

    async def start(self) -> None:
        """Nothing: the connection opens on the first ping."""

    async def stop(self) -> None:
        """Close the probe connection."""
        await self.watched.probe.close()


def attach_engine(
    target: Host | HasHost,
    engine: Engine | AsyncEngine,
    *,
    name: str = "database",
    timeout: float | None = None,
    critical: bool = True,
    startup_deadline: float | None = None,
    wait_at_startup: bool = True,
    forensics: bool = True,
    current_request: CurrentRequest | None = None,
    **forensics_options: Any,
) -> AttachedEngine:
    """Watch ``engine`` on the host (see :meth:`lifesigns.Lifesigns.watch_engine`).

    ``timeout`` defaults to the host's ``check_timeout``, ``startup_deadline`` to its
    ``startup_deadline``; ``current_request`` is passed to the pool forensics (see
    :func:`lifesigns.db.forensics.attach`, which also takes ``forensics_options``).
    A second engine with a taken ``name`` raises :class:`~lifesigns.errors.ConfigError`.
    """
    host = as_host(target)
    engines = host.layer(ENGINES_LAYER, None, _Engines)
    if name in engines.by_name:
        raise ConfigError(
            f"an engine named {name!r} is already watched; pass name=... to tell them apart"
        )
    s = host.settings
    chosen_timeout = (
        s.check_timeout
        if timeout is None
        else _config.option("check_timeout").parse(timeout, given_as="timeout")
    )
    deadline = (
        s.startup_deadline
        if startup_deadline is None
        else _config.option("startup_deadline").parse(startup_deadline)
    )
    watched = WatchedEngine(name, engine, timeout=chosen_timeout, startup_deadline=deadline)
    pool: PoolForensics | None = None
    if forensics:
        # First, so that a bad option leaves nothing half-registered.
        pool = attach(host, watched, current_request=current_request, **forensics_options)
    elif forensics_options:
        raise ConfigError(f"{', '.join(sorted(forensics_options))} need forensics=True")
    host.add_secrets([watched.password])
    runner = host.runner

    async def database_check() -> dict[str, Any]:
        return await watched.ping(runner.executor)

    database_check.__qualname__ = f"ping {watched.url}"
    check = host.add_check(
        name,
        database_check,
        timeout=chosen_timeout,
        critical=critical,
        component_type="datastore",
    )
    # Watched from inside a running lifespan: the connection closes with the process.
    with contextlib.suppress(RuntimeError):
        host.add_component(_ProbeCloser(watched))
    _expire_on_disconnect(host, watched, name)
    engines.by_name[name] = watched
    wait = None
    if wait_at_startup:
        wait = StartupWait(
            name=name,
            description=watched.description,
            attempt=database_check,
            deadline=deadline,
            attempt_timeout=max(chosen_timeout, 2.0),
        )
    return AttachedEngine(watched, check, wait, pool)


def _expire_on_disconnect(host: Host, watched: WatchedEngine, name: str) -> None:
    """When the application's queries find the database gone, drop the cached pass.

    Only the cache goes: the next probe pings (within the check's timeout) and
    decides. One dropped connection (a DBA's ``pg_terminate_backend``) costs one ping.
    """
    expire = getattr(host.runner, "expire", None)
    if not callable(expire):
        return

    def on_error(context: Any) -> None:
        try:
            if getattr(context, "is_disconnect", False):
                expire(name)
        except Exception:  # noqa: S110 - never add an error to the application's own
            pass

    event.listen(watched.sync_engine, "handle_error", on_error)
