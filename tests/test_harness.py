"""The test harness itself: real PostgreSQL and uvicorn servers behave as tests assume."""

from __future__ import annotations

import ast
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support import Postgres, PostgresServer, StartUvicorn, UvicornProcess, require_control
from tests.support.nested_parse import failures_under_nested_parses
from tests.support.postgres import DATABASE_URL_ENV

pytestmark = pytest.mark.slow

IDENTITY = sa.text("SELECT current_user, current_database()")


def connect_app(postgres: Postgres, **overrides: Any) -> psycopg.Connection[tuple[Any, ...]]:
    """Connect with psycopg as the application role; ``overrides`` replace arguments."""
    arguments: dict[str, Any] = {
        "host": postgres.host,
        "port": postgres.port,
        "user": postgres.user,
        "password": postgres.password,
        "dbname": postgres.database,
        "connect_timeout": 5,
        **overrides,
    }
    return psycopg.connect(**arguments)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by its parent) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# -- PostgreSQL ----------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "postgresql+psycopg_async"])
async def test_async_drivers_connect_as_the_app_role(postgres: Postgres, driver: str):
    engine = create_async_engine(postgres.url(driver))
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(IDENTITY)).one()
    finally:
        await engine.dispose()
    assert tuple(row) == (postgres.user, postgres.database)


def test_sync_psycopg_connects_as_the_app_role(postgres: Postgres):
    engine = sa.create_engine(postgres.url("postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            row = conn.execute(IDENTITY).one()
    finally:
        engine.dispose()
    assert tuple(row) == (postgres.user, postgres.database)


def test_url_quotes_the_password(postgres: Postgres):
    url = postgres.url()
    assert make_url(url).password == postgres.password
    if isinstance(postgres, PostgresServer):
        assert postgres.password not in url, "the password should need quoting"
        assert postgres.password_marker in url


def test_wrong_password_is_refused(postgres: Postgres):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect_app(postgres, password=postgres.password + "x")


def test_stop_refuses_connections_until_start_again(postgres: Postgres):
    server = require_control(postgres)
    port = server.port
    server.stop()
    try:
        assert not server.running
        with pytest.raises(psycopg.OperationalError):
            connect_app(server)
    finally:
        server.start_again()
    assert server.port == port
    with connect_app(server) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_restart_drops_open_connections(postgres: Postgres):
    server = require_control(postgres)
    with connect_app(server) as old:
        server.restart()
        with pytest.raises(psycopg.OperationalError):
            old.execute("SELECT 1")
    with connect_app(server) as new:
        assert new.execute("SELECT 1").fetchone() == (1,)


def test_restore_undoes_a_stopped_server_and_a_database_refusing_connections(
    postgres: Postgres,
):
    server = require_control(postgres)
    assert server.restore() == [], "nothing to undo on a healthy server"
    with psycopg.connect(server.maintenance_dsn(), connect_timeout=5, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{server.database}" ALLOW_CONNECTIONS false')
    server.stop()
    undone = server.restore()
    assert len(undone) == 2 and "stopped" in undone[0], undone
    assert repr(server.database) in undone[1] and "refused connections" in undone[1], undone
    with connect_app(server) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_ast_parse_survives_a_parse_nested_in_a_finalizer():
    """The suite's ``ast.parse`` (tests/conftest.py) against CPython's false depth mismatch."""
    source = Path(__file__).read_text()
    if sys.version_info < (3, 13):
        original = ast.parse.__wrapped__  # type: ignore[attr-defined]
        assert failures_under_nested_parses(lambda: original(source)) > 0, "CPython's fails"
    assert failures_under_nested_parses(lambda: ast.parse(source)) == 0


def test_statement_calls_counts_a_distinctive_statement(postgres: Postgres):
    marker = f"harness_marker_{secrets.token_hex(4)}"
    try:
        postgres.reset_statements()
    except NotImplementedError as exc:  # only with an external server
        pytest.skip(str(exc))
    assert postgres.statement_calls(marker) == 0
    with connect_app(postgres) as conn:
        for _ in range(3):
            conn.execute(f"SELECT 1 AS {marker}")
    assert postgres.statement_calls(marker) == 3
    postgres.reset_statements()
    assert postgres.statement_calls(marker) == 0


def test_backend_states_show_an_idle_connection(postgres: Postgres):
    name = f"harness-{secrets.token_hex(4)}"
    with connect_app(postgres, application_name=name, autocommit=True) as conn:
        conn.execute("SELECT 42")
        mine = [row for row in postgres.backend_states() if row["application_name"] == name]
        assert len(mine) == 1
        assert mine[0]["state"] == "idle"
        assert mine[0]["query"] == "SELECT 42"
        assert mine[0]["pid"] == conn.info.backend_pid
    assert not [row for row in postgres.backend_states() if row["application_name"] == name]


@pytest.mark.skipif(bool(os.environ.get(DATABASE_URL_ENV)), reason=f"{DATABASE_URL_ENV} is set")
def test_a_throwaway_server_leaves_nothing_behind():
    with PostgresServer() as server:
        directory = server.directory
        pid = int((directory / "data" / "postmaster.pid").read_text().split()[0])
        assert server.log_path.is_file()
        assert "database system is ready to accept connections" in server.log_text()
    assert not directory.exists()
    assert not process_alive(pid)


# -- uvicorn -------------------------------------------------------------------------


def test_uvicorn_serves_and_terminates_cleanly(uvicorn_process: StartUvicorn):
    server = uvicorn_process("tests.apps.echo:app")

    response = httpx.get(f"{server.url}/livez")
    assert (response.status_code, response.text) == (200, "ok")
    assert server.wait_ready("/missing").status_code == 404, "any answer means ready"
    server.wait_for_log(r"^echo: started$")

    assert server.terminate() == -signal.SIGTERM, "uvicorn re-raises the signal it handled"
    assert "echo: stopped" in server.log_text(), "the shutdown should be graceful"
    assert not process_alive(server.pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/livez")


def test_uvicorn_factory_env_and_signals(uvicorn_process: StartUvicorn):
    server = uvicorn_process(
        "tests.apps.echo:create_app", env={"ECHO_MARKER": "from-the-test"}, factory=True
    )
    assert httpx.get(f"{server.url}/env/ECHO_MARKER").text == "from-the-test"

    server.send_signal(signal.SIGINT)
    assert server.wait() == 0, "uvicorn turns a re-raised SIGINT into a clean exit"
    assert "echo: stopped" in server.log_text()


def test_wait_ready_fails_fast_with_the_log_when_the_app_cannot_load(tmp_path):
    server = UvicornProcess("tests.apps.no_such_module:app", log_path=tmp_path / "bad.log")
    with server, pytest.raises(RuntimeError, match="exited") as failure:
        server.wait_ready(timeout=20)
    assert 'Could not import module "tests.apps.no_such_module"' in str(failure.value)
    assert server.returncode not in (None, 0)
