"""Test harness: real PostgreSQL servers and real uvicorn subprocesses.

See :mod:`tests.support.postgres` and :mod:`tests.support.servers`.
"""

from .postgres import (
    ExternalPostgres,
    Postgres,
    PostgresError,
    PostgresServer,
    open_postgres,
    require_control,
)
from .servers import StartUvicorn, UvicornProcess, free_port

__all__ = [
    "ExternalPostgres",
    "Postgres",
    "PostgresError",
    "PostgresServer",
    "StartUvicorn",
    "UvicornProcess",
    "free_port",
    "open_postgres",
    "require_control",
]
