"""LS104 and LS105: liveness routes that are plain ``def`` or touch a dependency.

Routes are read from decorators (``@app.get("/health")``, ``@router.api_route``, with the
router's ``prefix``) and from registrations (``Route("/health", health)``,
``app.add_api_route``); every route, with the dependency it reaches, goes into the facts
for the container rules (a healthcheck on a path whose route queries the database).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from .callgraph import CallGraph
from .facts import Facts, Route, Where
from .findings import Finding
from .pyengines import keyword_value
from .pymodel import Function, Module, dotted, finding, resolve

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


def is_liveness_path(path: str) -> bool:
    """Whether ``path`` names a liveness or health endpoint (not a readiness one)."""
    segments = [s for s in path.lower().split("/") if s]
    if any("ready" in s for s in segments):
        return False
    return any(s in _LIVE_WORDS for s in segments)


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
        endpoint = call.args[1] if len(call.args) > 1 else keyword_value(call, "endpoint")
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


def routes(module: Module, graph: CallGraph, facts: Facts) -> Iterator[Finding]:
    """LS104 and LS105 on liveness routes; every route goes into ``facts``."""
    for path, function in _all_routes(module):
        chain = graph.first(function)
        node = function.node
        where = Where(module.rel, node.lineno, node.col_offset + 1)
        facts.routes.append(Route(path, node.name, function.is_async, where, chain))
        if not is_liveness_path(path):
            continue
        if not function.is_async:
            yield finding(
                module,
                node,
                "LS104",
                f"liveness route {path} is a plain def {node.name}: it queues for the "
                "thread pool behind the work it reports on",
            )
        if chain is not None:
            via = f" via {chain.via()} ({chain.where[0]}:{chain.where[1]})"
            yield finding(
                module,
                chain.first.node,
                "LS105",
                f"liveness route {path} touches a dependency: {chain.site.what}"
                f"{via if chain.helpers else ''}; an outage of it would restart every "
                "replica",
            )
