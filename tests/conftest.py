"""Fixtures shared by the whole test suite: a real PostgreSQL and real uvicorn servers."""

from __future__ import annotations

import ast
import contextlib
import functools
import itertools
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support import Postgres, StartUvicorn, UvicornProcess, open_postgres


def pytest_configure(config: pytest.Config) -> None:
    if sys.version_info < (3, 13):
        ast.parse = _parse_again_on_false_mismatch(ast.parse)


def _parse_again_on_false_mismatch(parse: Any) -> Any:
    """``ast.parse`` that parses again when CPython says its depth count went wrong.

    Up to 3.12 the AST constructor keeps its recursion depth in interpreter-wide state:
    a parse started while another is half-way (one in a garbage-collector finalizer,
    such as pytest's unraisable-exception hook formatting a traceback, whose 3.11
    carets call ``ast.parse``; or one in another thread) makes the outer one raise
    ``SystemError: AST constructor recursion depth mismatch`` over a tree that is fine
    (python/cpython#106905, pytest-dev/pytest#10874). Raised where pytest formats a
    failure, it ended whole runs with INTERNALERROR and hid the failure itself.
    """

    @functools.wraps(parse)
    def parse_again(*args: Any, **kwargs: Any) -> Any:
        for _ in range(2):
            try:
                return parse(*args, **kwargs)
            except SystemError as exc:
                if "recursion depth mismatch" not in str(exc):
                    raise
        return parse(*args, **kwargs)

    return parse_again


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


@pytest.fixture(autouse=True)
def _postgres_left_as_found(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used the server: what it left stopped or switched off is
    undone, and the test fails for it, instead of every later test that connects."""
    if "postgres" not in request.fixturenames:
        yield
        return
    server: Postgres = request.getfixturevalue("postgres")
    yield
    undone = server.restore()
    if undone:
        pytest.fail(f"the test left PostgreSQL unusable: {'; '.join(undone)}")


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
