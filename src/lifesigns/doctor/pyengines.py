"""LS106-LS108 on ``create_engine`` / ``create_async_engine``, and the pool sizes for LS212."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from .facts import Engine, Facts, Where
from .findings import Finding
from .pymodel import Module, dotted, finding, resolve

_ENGINES = ("create_engine", "create_async_engine")
_TIMEOUT_KEYS = ("command_timeout", "statement_timeout")


def keyword_value(call: ast.Call, name: str) -> ast.expr | None:
    """The value of keyword argument ``name`` of ``call``, if given."""
    return next((k.value for k in call.keywords if k.arg == name), None)


def _literal_int(node: ast.expr | None, default: int) -> int | None:
    if node is None:
        return default
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return int(node.value)
    return None


def engines(module: Module, facts: Facts) -> Iterator[Finding]:
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
        url = node.args[0] if node.args else keyword_value(node, "url")
        url_text = url.value if isinstance(url, ast.Constant) and isinstance(url.value, str) else ""
        if url_text.startswith("sqlite"):
            continue
        name = target.rpartition(".")[2]
        echo = keyword_value(node, "echo")
        if isinstance(echo, ast.Constant) and echo.value is True:
            yield finding(
                module,
                echo,
                "LS106",
                f"{name}(echo=True) logs every statement with its parameters",
            )
        poolclass = dotted(keyword_value(node, "poolclass") or ast.Constant(None)) or ""
        null_pool = poolclass.endswith(("NullPool", "StaticPool"))
        ping = keyword_value(node, "pool_pre_ping")
        if not null_pool and not (isinstance(ping, ast.Constant) and ping.value is True):
            yield finding(
                module,
                node,
                "LS107",
                f"{name}() without pool_pre_ping=True hands out connections the server closed",
            )
        if _lacks_statement_timeout(node, url_text):
            yield finding(
                module,
                node,
                "LS108",
                f"{name}() sets no statement or command timeout: a query that never returns "
                "holds its connection forever",
            )
        if null_pool:
            continue
        size = _literal_int(keyword_value(node, "pool_size"), 5)
        overflow = _literal_int(keyword_value(node, "max_overflow"), 10)
        capacity = None if size is None or overflow is None else size + max(overflow, 0)
        where = Where(module.rel, node.lineno, node.col_offset + 1)
        facts.engines.append(Engine(where, capacity, size, overflow))


def _lacks_statement_timeout(call: ast.Call, url: str) -> bool:
    if any(key in url for key in _TIMEOUT_KEYS):
        return False
    connect_args = keyword_value(call, "connect_args")
    if connect_args is None:
        return True
    if not isinstance(connect_args, ast.Dict):
        return False  # built elsewhere: we cannot tell
    text = ast.unparse(connect_args)
    return not any(key in text for key in _TIMEOUT_KEYS)
