"""Which calls block the event loop, and which touch a dependency (database, network).

:func:`classify` looks at one call in one function and answers with a :class:`Site`
(what the call is and its kind) or ``None``. The catalogue lists what ruff's
flake8-async rules list (ASYNC210-251) plus sync SQLAlchemy and sync database drivers,
which they do not.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from .pymodel import SYNC_SESSIONS, Call, Function, Project, resolve

_EXACT = {
    "time.sleep": "sleep",
    "open": "file",
    "io.open": "file",
    "input": "file",
    "os.system": "process",
    "os.popen": "process",
    "os.wait": "process",
    "os.waitpid": "process",
    "subprocess.run": "process",
    "subprocess.call": "process",
    "subprocess.check_call": "process",
    "subprocess.check_output": "process",
    "subprocess.Popen": "process",
    "subprocess.getoutput": "process",
    "subprocess.getstatusoutput": "process",
    "urllib.request.urlopen": "network",
    "urllib3.request": "network",
    "socket.create_connection": "network",
    "socket.getaddrinfo": "network",
    "httpx.get": "network",
    "httpx.post": "network",
    "httpx.put": "network",
    "httpx.patch": "network",
    "httpx.delete": "network",
    "httpx.head": "network",
    "httpx.options": "network",
    "httpx.request": "network",
    "httpx.stream": "network",
    "httpx.Client": "network",
    "psycopg2.connect": "database",
    "psycopg.connect": "database",
    "pymysql.connect": "database",
    "MySQLdb.connect": "database",
    "sqlite3.connect": "database",
    "pymongo.MongoClient": "database",
    "redis.Redis": "database",
    "redis.StrictRedis": "database",
    "redis.from_url": "database",
}
_PREFIXES = {"requests.": "network", "urllib3.PoolManager": "network"}
_ENGINE_METHODS = {"connect", "begin", "execute", "raw_connection"}

# Dependencies reached without blocking: what makes a liveness route touch one (LS105).
_ASYNC_DEPENDENCIES = (
    "httpx.AsyncClient",
    "aiohttp.",
    "asyncpg.",
    "redis.asyncio.",
    "aioredis.",
    "motor.",
    "sqlalchemy.text",
    "sqlmodel.text",
    "aiomysql.",
    "aiosqlite.",
)
_QUERY_METHODS = {
    "execute",
    "exec",
    "scalar",
    "scalars",
    "scalar_one",
    "exec_driver_sql",
    "fetch",
    "fetchrow",
    "fetchval",
    "ping",
    "query",
}
_CONNECT_METHODS = {"connect", "begin", "acquire"}


@dataclass(frozen=True)
class Site:
    """A call worth reporting: ``what`` it is (``time.sleep``) and its ``kind``."""

    what: str
    kind: str  # sleep, file, process, network, database

    @property
    def dependency(self) -> bool:
        """Whether it reaches the database or the network."""
        return self.kind in ("network", "database")


def sync_session_params(project: Project, function: Function) -> set[str]:
    """Parameters that hold a synchronous SQLAlchemy (or SQLModel) ``Session``.

    Either annotated so (``db: Session``, ``Annotated[Session, Depends(...)]``), or filled by
    a FastAPI dependency that is a sync function opening one (``db=Depends(get_db)`` where
    ``get_db`` calls a sync ``sessionmaker``): FastAPI runs that dependency in a thread, but
    the session it yields is then used on the event loop.
    """
    cached: set[str] | None = getattr(function, "_sync_params", None)
    if cached is not None:
        return cached
    names = set()
    args = function.node.args
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    pairs = zip([*positional, *args.kwonlyargs], [*defaults, *args.defaults, *args.kw_defaults],
                strict=True)  # fmt: skip
    for arg, default in pairs:
        annotation = arg.annotation
        if isinstance(annotation, ast.Subscript):  # Annotated[Session, Depends(...)]
            inner = annotation.slice
            elements = inner.elts if isinstance(inner, ast.Tuple) else [inner]
            annotation = elements[0]
            default = next((e for e in elements[1:] if isinstance(e, ast.Call)), default)
        target = resolve(function.module, annotation) if annotation is not None else None
        if target in SYNC_SESSIONS or _opens_sync_session(project, function, default):
            names.add(arg.arg)
    function._sync_params = names  # type: ignore[attr-defined]
    return names


def _opens_sync_session(project: Project, function: Function, default: ast.expr | None) -> bool:
    if not (isinstance(default, ast.Call) and default.args):
        return False
    if not (resolve(function.module, default.func) or "").endswith("Depends"):
        return False
    dependency = project.function(resolve(function.module, default.args[0]))
    if dependency is None or dependency.is_async:
        return False
    return any(project.sync_object(c.target) == "session factory" for c in dependency.calls)


def blocking(project: Project, function: Function, call: Call) -> Site | None:
    """What ``call`` blocks on, when it is a known blocking call."""
    target = call.target
    if target is not None:
        kind = _EXACT.get(target)
        if kind is None:
            kind = next((k for p, k in _PREFIXES.items() if target.startswith(p)), None)
        if kind is not None:
            return Site(target, kind)
        if project.sync_object(target) == "session factory":
            return Site(f"{call_text(call)}() (a sync SQLAlchemy session)", "database")
        owner = target.rpartition(".")[0]
        if call.attr in _ENGINE_METHODS and project.sync_object(owner) == "engine":
            return Site(f"{call_text(call)}() on a sync SQLAlchemy engine", "database")
    if call.receiver and call.receiver in sync_session_params(project, function):
        return Site(f"{call.receiver}.{call.attr}() on a sync Session", "database")
    return None


def dependency(project: Project, function: Function, call: Call) -> Site | None:
    """What dependency ``call`` touches (database or network), blocking or not."""
    site = blocking(project, function, call)
    if site is not None:
        return site if site.dependency else None
    target = call.target or ""
    if target.startswith(_ASYNC_DEPENDENCIES):
        return Site(target, "network" if "http" in target else "database")
    if call.attr in _QUERY_METHODS and call.receiver not in ("self", "cls"):
        return Site(f"{call_text(call)}()", "database")
    receiver = (call.receiver or "").lower()
    if call.attr in _CONNECT_METHODS and any(w in receiver for w in ("engine", "pool", "db")):
        return Site(f"{call_text(call)}()", "database")
    return None


def call_text(call: Call) -> str:
    """The call's function as written (``db.query``), shortened when it is long."""
    text = ast.unparse(call.node.func)
    return text if len(text) <= 60 else f"...{call.attr}"
