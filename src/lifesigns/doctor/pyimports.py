"""LS109: imports that resolve neither in the application nor in this environment.

Nothing is imported: :func:`importlib.util.find_spec` finds a top-level module without
running it. Imports guarded by ``try``/``except ImportError`` and ``if TYPE_CHECKING:``
are optional by design and not checked.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterator
from functools import lru_cache

from . import declared
from .config import DoctorConfig
from .findings import Finding
from .pymodel import Module, Project, dotted, finding


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


def imports(project: Project, module: Module, config: DoctorConfig) -> Iterator[Finding]:
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
                yield finding(module, node, "LS109", f"{problem}{lazy}")


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
