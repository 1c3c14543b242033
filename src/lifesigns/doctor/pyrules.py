"""The Python rules (LS101-LS110) over a :class:`~.pymodel.Project`.

Each rule reads the index and the syntax tree; nothing is imported except, for LS109,
:func:`importlib.util.find_spec` on top-level third-party names (which finds a module
without running it).
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterator
from functools import lru_cache

from . import blocking, declared
from .callgraph import CallGraph
from .config import DoctorConfig
from .facts import Engine, Facts, Route, Where
from .findings import Finding
from .pymodel import Function, Module, Project, body_nodes, dotted, resolve

_TASK_STARTERS = {"asyncio.create_task", "asyncio.ensure_future"}
_LOOP_GETTERS = {"asyncio.get_event_loop", "asyncio.get_running_loop", "asyncio.new_event_loop"}
_TIMEOUTS = {
    "asyncio.wait_for",
    "asyncio.timeout",
    "asyncio.timeout_at",
    "anyio.fail_after",
    "anyio.move_on_after",
    "async_timeout.timeout",
    "trio.fail_after",
    "trio.move_on_after",
}
_SLEEPS = {"asyncio.sleep", "anyio.sleep", "trio.sleep"}
_ROUTE_DECORATORS = {"get", "head", "api_route", "route"}
_LIVE_WORDS = {
    "health",
    "healthz",
    "healthcheck",
    "live",
    "livez",
    "liveness",
    "alive",
    "ping",
    "heartbeat",
}
_ENGINES = ("create_engine", "create_async_engine")
_TIMEOUT_KEYS = ("command_timeout", "statement_timeout")


def is_liveness_path(path: str) -> bool:
    """Whether ``path`` names a liveness or health endpoint (not a readiness one)."""
    segments = [s for s in path.lower().split("/") if s]
    if any("ready" in s for s in segments):
        return False
    return any(s in _LIVE_WORDS for s in segments)


def check(project: Project, config: DoctorConfig, facts: Facts) -> list[Finding]:
    """Run every Python rule; record routes, engines and lifesigns settings in ``facts``."""
    findings: list[Finding] = []
    blocking_graph = CallGraph(project, blocking.blocking, config.max_depth, enter_async=False)
    dependency_graph = CallGraph(project, blocking.dependency, config.max_depth, enter_async=True)
    for module in project.modules.values():
        findings += _tasks(module)
        findings += _engines(module, facts)
        findings += _imports(project, module, config)
        _lifesigns_facts(module, facts)
        for function in module.functions.values():
            if function.is_async:
                findings += _blocking(blocking_graph, function)
                findings += _endless_loops(project, function)
                findings += _sync_sessions(project, function)
        findings += _routes(module, dependency_graph, facts)
    _startup_waits(project, dependency_graph, facts)
    return findings


def _finding(module: Module, node: ast.AST, code: str, message: str) -> Finding:
    line = getattr(node, "lineno", 1)
    return Finding(module.rel, line, getattr(node, "col_offset", 0) + 1, code, message)


def _tasks(module: Module) -> Iterator[Finding]:
    """LS101: create_task / ensure_future at module scope or in ``__init__``."""
    body = [stmt for stmt in module.tree.body if not _main_guard(stmt)]
    scopes: list[tuple[str, list[ast.stmt]]] = [("at import time", body)]
    for stmt in module.tree.body:
        if isinstance(stmt, ast.ClassDef):
            scopes.append((f"in the body of class {stmt.name}", stmt.body))
            for item in stmt.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and (
                    item.name == "__init__"
                ):
                    scopes.append((f"in {stmt.name}.__init__", item.body))
    for where, body in scopes:
        for node in body_nodes(body):
            if isinstance(node, ast.Call) and _starts_task(module, node):
                name = ast.unparse(node.func)
                yield _finding(
                    module,
                    node,
                    "LS101",
                    f"{name}() {where}: the task has no owner to await or cancel it; start it "
                    "in the lifespan",
                )


def _main_guard(stmt: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` runs as a script, not at import."""
    if not isinstance(stmt, ast.If) or not isinstance(stmt.test, ast.Compare):
        return False
    parts = [stmt.test.left, *stmt.test.comparators]
    names = {p.id for p in parts if isinstance(p, ast.Name)}
    values = {p.value for p in parts if isinstance(p, ast.Constant)}
    return names == {"__name__"} and values == {"__main__"}


def _starts_task(module: Module, call: ast.Call) -> bool:
    func = call.func
    if resolve(module, func) in _TASK_STARTERS:
        return True
    if isinstance(func, ast.Attribute) and func.attr in ("create_task", "ensure_future"):
        owner = func.value
        if isinstance(owner, ast.Call):
            return resolve(module, owner.func) in _LOOP_GETTERS
        return "loop" in (dotted(owner) or "").lower()
    return False


def _blocking(graph: CallGraph, function: Function) -> Iterator[Finding]:
    """LS102: blocking calls in, or reachable from, an ``async def``."""
    for chain in graph.chains(function):
        if chain.site.what.endswith("on a sync Session") and not chain.helpers:
            continue  # LS110 says it
        name = function.node.name
        if chain.helpers:
            path, line = chain.where
            text = (
                f"blocking call {chain.site.what} reached from async def {name} via "
                f"{chain.via()} ({path}:{line})"
            )
        else:
            text = f"blocking call {chain.site.what} in async def {name}"
        node = chain.first.node
        yield _finding(function.module, node, "LS102", f"{text}")


def _is_timeout(call: ast.Call, target: str | None) -> bool:
    """``asyncio.timeout(...)`` and kin, or any call given a ``timeout=`` that is not None."""
    if target in _TIMEOUTS:
        return True
    return any(
        k.arg == "timeout" and not (isinstance(k.value, ast.Constant) and k.value.value is None)
        for k in call.keywords
    )


def _bounds_itself(project: Project, call: ast.Call, module: Module) -> bool:
    """Whether an awaited application coroutine applies a timeout in its own body."""
    callee = project.function(resolve(module, call.func))
    return callee is not None and any(_is_timeout(c.node, c.target) for c in callee.calls)


def _exits(loop: ast.While) -> bool:
    """Whether the loop's body can leave it: a ``return``, or a ``break`` of this loop."""
    inner_loops = ast.For | ast.AsyncFor | ast.While
    skipped = ast.expr | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
    stack: list[ast.AST] = list(loop.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Return | ast.Break):
            return True
        if isinstance(node, inner_loops):  # its breaks are its own; its returns are ours
            stack.extend(
                n for n in body_nodes(node.body + node.orelse) if isinstance(n, ast.Return)
            )
            stack.extend(node.orelse)
            continue
        stack.extend(c for c in ast.iter_child_nodes(node) if not isinstance(c, skipped))
    return False


def _endless_loops(project: Project, function: Function) -> Iterator[Finding]:
    """LS103: ``while True`` in a coroutine that never leaves it and awaits with no timeout.

    Loops with a ``break`` or ``return`` (a receive loop that ends on disconnect) are not
    reported, nor loops whose only awaits are sleeps (a ticker): the incident is the
    background job that loops forever on an await that can hang.
    """
    module = function.module
    for node in function.endless_loops:
        if _exits(node):
            continue
        awaited = []
        bounded = False
        for child in body_nodes(node.body):
            if isinstance(child, ast.Call) and _is_timeout(child, resolve(module, child.func)):
                bounded = True
            if isinstance(child, ast.Await):
                value = child.value
                if isinstance(value, ast.Call) and (
                    resolve(module, value.func) in _SLEEPS or _bounds_itself(project, value, module)
                ):
                    continue
                awaited.append(child)
        if awaited and not bounded:
            first = ast.unparse(awaited[0].value)
            first = first if len(first) <= 50 else first[:47] + "..."
            yield _finding(
                module,
                node,
                "LS103",
                f"while True in async def {function.node.name} awaits {first} with no timeout: "
                "one hang stops it for good",
            )


def _sync_sessions(project: Project, function: Function) -> Iterator[Finding]:
    """LS110: a sync ``Session`` parameter used in an ``async def``."""
    params = blocking.sync_session_params(project, function)
    if not params:
        return
    for call in function.calls:
        if call.receiver in params:
            yield _finding(
                function.module,
                call.node,
                "LS110",
                f"sync Session {call.receiver}.{call.attr}() in async def "
                f"{function.node.name}: each query blocks the event loop",
            )
            return


def _route_paths(module: Module, function: Function) -> Iterator[str]:
    prefixes = _router_prefixes(module)
    for decorator in function.node.decorator_list:
        if not isinstance(decorator, ast.Call) or not isinstance(decorator.func, ast.Attribute):
            continue
        if decorator.func.attr not in _ROUTE_DECORATORS:
            continue
        path = None
        if decorator.args and isinstance(decorator.args[0], ast.Constant):
            path = decorator.args[0].value
        for keyword in decorator.keywords:
            if keyword.arg == "path" and isinstance(keyword.value, ast.Constant):
                path = keyword.value.value
        if isinstance(path, str):
            owner = dotted(decorator.func.value) or ""
            yield prefixes.get(owner, "") + path


def _router_prefixes(module: Module) -> dict[str, str]:
    cached: dict[str, str] | None = getattr(module, "_prefixes", None)
    if cached is not None:
        return cached
    prefixes = {}
    for stmt in module.tree.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call):
            call = stmt.value
            if (resolve(module, call.func) or "").endswith("APIRouter"):
                for keyword in call.keywords:
                    if keyword.arg == "prefix" and isinstance(keyword.value, ast.Constant):
                        for target in stmt.targets:
                            if isinstance(target, ast.Name):
                                prefixes[target.id] = str(keyword.value.value)
    module._prefixes = prefixes  # type: ignore[attr-defined]
    return prefixes


def _registered_routes(module: Module) -> Iterator[tuple[str, Function]]:
    """``Route("/health", health)`` (Starlette) and ``app.add_api_route("/health", health)``."""
    by_name = {f.node.name: f for f in module.functions.values() if not f.class_name}
    for call in module.all_calls:
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in ("Route", "add_api_route", "add_route") or not call.args:
            continue
        path = call.args[0]
        endpoint = call.args[1] if len(call.args) > 1 else _keyword(call, "endpoint")
        if not (isinstance(path, ast.Constant) and isinstance(path.value, str)):
            continue
        if isinstance(endpoint, ast.Name) and endpoint.id in by_name:
            yield path.value, by_name[endpoint.id]


def _all_routes(module: Module) -> Iterator[tuple[str, Function]]:
    for function in module.functions.values():
        if not function.class_name:
            for path in _route_paths(module, function):
                yield path, function
    yield from _registered_routes(module)


def _routes(module: Module, graph: CallGraph, facts: Facts) -> Iterator[Finding]:
    """LS104 and LS105 on liveness routes; every route goes into ``facts``."""
    for path, function in _all_routes(module):
        chain = graph.first(function)
        node = function.node
        where = Where(module.rel, node.lineno, node.col_offset + 1)
        facts.routes.append(Route(path, node.name, function.is_async, where, chain))
        if not is_liveness_path(path):
            continue
        if not function.is_async:
            yield _finding(
                module,
                node,
                "LS104",
                f"liveness route {path} is a plain def {node.name}: it queues for the "
                "thread pool behind the work it reports on",
            )
        if chain is not None:
            via = f" via {chain.via()} ({chain.where[0]}:{chain.where[1]})"
            yield _finding(
                module,
                chain.first.node,
                "LS105",
                f"liveness route {path} touches a dependency: {chain.site.what}"
                f"{via if chain.helpers else ''}; an outage of it would restart every "
                "replica",
            )


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _literal_int(node: ast.expr | None, default: int) -> int | None:
    if node is None:
        return default
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return int(node.value)
    return None


def _engines(module: Module, facts: Facts) -> Iterator[Finding]:
    """LS106-LS108 on every create_engine / create_async_engine call."""
    for node in module.all_calls:
        func = node.func
        last = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if last not in _ENGINES:
            continue
        target = resolve(module, func) or ""
        if not target.endswith(_ENGINES) or not target.startswith(("sqlalchemy", "sqlmodel")):
            continue
        if any(k.arg is None for k in node.keywords):
            continue  # **options: built elsewhere, we cannot tell
        url = node.args[0] if node.args else _keyword(node, "url")
        url_text = url.value if isinstance(url, ast.Constant) and isinstance(url.value, str) else ""
        if url_text.startswith("sqlite"):
            continue
        name = target.rpartition(".")[2]
        echo = _keyword(node, "echo")
        if isinstance(echo, ast.Constant) and echo.value is True:
            yield _finding(
                module,
                echo,
                "LS106",
                f"{name}(echo=True) logs every statement with its parameters",
            )
        poolclass = dotted(_keyword(node, "poolclass") or ast.Constant(None)) or ""
        null_pool = poolclass.endswith(("NullPool", "StaticPool"))
        ping = _keyword(node, "pool_pre_ping")
        if not null_pool and not (isinstance(ping, ast.Constant) and ping.value is True):
            yield _finding(
                module,
                node,
                "LS107",
                f"{name}() without pool_pre_ping=True hands out connections the server closed",
            )
        if _lacks_statement_timeout(node, url_text):
            yield _finding(
                module,
                node,
                "LS108",
                f"{name}() sets no statement or command timeout: a query that never returns "
                "holds its connection forever",
            )
        if null_pool:
            continue
        size = _literal_int(_keyword(node, "pool_size"), 5)
        overflow = _literal_int(_keyword(node, "max_overflow"), 10)
        capacity = None if size is None or overflow is None else size + max(overflow, 0)
        where = Where(module.rel, node.lineno, node.col_offset + 1)
        facts.engines.append(Engine(where, capacity, size, overflow))


def _lacks_statement_timeout(call: ast.Call, url: str) -> bool:
    if any(key in url for key in _TIMEOUT_KEYS):
        return False
    connect_args = _keyword(call, "connect_args")
    if connect_args is None:
        return True
    if not isinstance(connect_args, ast.Dict):
        return False  # built elsewhere: we cannot tell
    text = ast.unparse(connect_args)
    return not any(key in text for key in _TIMEOUT_KEYS)


def _guarded_imports(
    body: list[ast.stmt], guarded: bool, inside: str | None
) -> Iterator[tuple[ast.Import | ast.ImportFrom, str | None]]:
    for stmt in body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            if not guarded:
                yield stmt, inside
        elif isinstance(stmt, ast.Try | ast.TryStar):
            catches = any(_catches_import_error(h.type) for h in stmt.handlers)
            yield from _guarded_imports(stmt.body, guarded or catches, inside)
            for handler in stmt.handlers:
                yield from _guarded_imports(handler.body, guarded, inside)
            yield from _guarded_imports(stmt.orelse + stmt.finalbody, guarded, inside)
        elif isinstance(stmt, ast.If) and "TYPE_CHECKING" in (dotted(stmt.test) or ""):
            yield from _guarded_imports(stmt.orelse, guarded, inside)
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _guarded_imports(stmt.body, guarded, stmt.name)
        else:
            for name in ("body", "orelse", "finalbody"):
                child = getattr(stmt, name, None)
                if isinstance(child, list):
                    yield from _guarded_imports(child, guarded, inside)
            for case in getattr(stmt, "cases", []):
                yield from _guarded_imports(case.body, guarded, inside)


def _catches_import_error(node: ast.expr | None) -> bool:
    if node is None:
        return True
    names = [dotted(e) for e in node.elts] if isinstance(node, ast.Tuple) else [dotted(node)]
    return any(
        n in ("ImportError", "ModuleNotFoundError", "Exception", "BaseException") for n in names
    )


@lru_cache(maxsize=4096)
def _installed(top: str) -> bool:
    if top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "__future__":
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _imports(project: Project, module: Module, config: DoctorConfig) -> Iterator[Finding]:
    """LS109: imports that resolve neither in the application nor in this environment."""
    tops = project.tops
    for node, inside in _guarded_imports(module.tree.body, False, None):
        lazy = f" (lazy import in {inside})" if inside else ""
        if isinstance(node, ast.Import):
            wanted: list[tuple[str, str | None]] = [(alias.name, None) for alias in node.names]
        else:
            from .pymodel import resolve_relative

            base = resolve_relative(module, node.module, node.level)
            wanted = [(base, alias.name) for alias in node.names]
        for name, member in wanted:
            problem = _unresolved(project, tops, config, name, member)
            if problem:
                yield _finding(module, node, "LS109", f"{problem}{lazy}")


def _unresolved(
    project: Project, tops: set[str], config: DoctorConfig, name: str, member: str | None
) -> str | None:
    top = name.split(".")[0]
    known = config.known_modules
    if not top or top in known or name in known or f"{name}.{member}" in known:
        return None
    if name in project.unparsed or f"{name}.{member}" in project.unparsed:
        return None  # there, but in syntax this Python cannot parse
    if top not in tops:
        if _installed(top) or declared.provides(project.declared, top):
            return None  # declared but absent here: the project's own environment has it
        return f"module {top!r} is not installed in this environment, nor declared"
    if project.modules.get(name) is None:
        if project.on_disk(name):
            return None  # not scanned, but there
        return f"module {name!r} does not exist in the application"
    target = project.modules[name]
    if member is None or member == "*" or member in target.toplevel:
        return None
    if f"{name}.{member}" in project.modules or "__getattr__" in target.toplevel:
        return None
    if any(isinstance(s, ast.ImportFrom) and s.names[0].name == "*" for s in target.tree.body):
        return None
    return f"{member!r} is not defined in {name!r}"


def _lifesigns_facts(module: Module, facts: Facts) -> None:
    if module.name.split(".")[0] == "lifesigns" or any(
        v.split(".")[0] == "lifesigns" for v in module.aliases.values()
    ):
        facts.uses_lifesigns = True
    else:
        return
    for node in module.all_calls:
        target = resolve(module, node.func) or ""
        if target.startswith("lifesigns") and target.endswith(".Lifesigns"):
            for keyword in node.keywords:
                value = keyword.value
                if keyword.arg == "side_port" and not (
                    isinstance(value, ast.Constant) and value.value is None
                ):
                    facts.side_port = Where(module.rel, node.lineno, node.col_offset + 1)
                if (
                    keyword.arg in ("probe_budget", "drain_delay", "grace")
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, int | float)
                ):
                    facts.lifesigns_settings[keyword.arg] = float(value.value)
        elif isinstance(node.func, ast.Attribute) and node.func.attr == "watch_engine":
            facts.startup_waits = f"watch_engine ({module.rel}:{node.lineno}) waits for it"


def _startup_waits(project: Project, graph: CallGraph, facts: Facts) -> None:
    """Start-up waits for the database: a tenacity-retried function that touches it."""
    if facts.startup_waits:
        return
    for module in project.modules.values():
        for function in module.functions.values():
            for decorator in function.node.decorator_list:
                func = decorator.func if isinstance(decorator, ast.Call) else decorator
                if not (resolve(module, func) or "").startswith(("tenacity", "backoff")):
                    continue
                if graph.first(function) is not None:
                    node = function.node
                    facts.startup_waits = (
                        f"{node.name} ({module.rel}:{node.lineno}) retries the database"
                    )
                    return
