"""Fixtures shared by the whole test suite: a real PostgreSQL and real uvicorn servers."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.support import Postgres, StartUvicorn, UvicornProcess, open_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server for the session, started when a test first asks for it.

    A throwaway cluster (:class:`tests.support.PostgresServer`), or the server named by
    ``LIFESIGNS_TEST_DATABASE_URL``. Tests that stop it must start it again; use
    :func:`tests.support.require_control` to skip where that is impossible.
    """
    server = open_postgres()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    """SQLAlchemy URL (``postgresql+asyncpg``) of the session's PostgreSQL server."""
    return postgres.url()


@pytest.fixture
def uvicorn_process(tmp_path: Path) -> Iterator[StartUvicorn]:
    """A factory that starts uvicorn servers; all are stopped when the test ends.

    ``start(app_spec, env=None, factory=False, ready_path="/livez", extra_args=())``
    returns a :class:`tests.support.UvicornProcess` that already answers HTTP on
    ``ready_path`` (``None`` skips the wait). Logs go to ``tmp_path``.
    """
    numbers = itertools.count(1)
    stack = contextlib.ExitStack()

    def start(
        app_spec: str,
        env: Mapping[str, str] | None = None,
        factory: bool = False,
        ready_path: str | None = "/livez",
        extra_args: Sequence[str] = (),
        *,
        access_log: bool = False,
    ) -> UvicornProcess:
        server = UvicornProcess(
            app_spec,
            # No drain delay unless a test asks: each server would take 5 s to stop.
            env={"LIFESIGNS_DRAIN_DELAY": "0", **(env or {})},
            factory=factory,
            access_log=access_log,
            extra_args=extra_args,
            log_path=tmp_path / f"uvicorn-{next(numbers)}.log",
        )
        server.start()
        stack.callback(server.terminate, timeout=5.0)  # SIGTERM, then SIGKILL the group
        if ready_path is not None:
            server.wait_ready(ready_path)
        return server

    with stack:
        yield start
