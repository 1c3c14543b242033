"""LS101 (a task started at import or in a constructor) and LS103 (a coroutine's endless loop)."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from .findings import Finding
from .pymodel import Function, Module, Project, body_nodes, dotted, finding, resolve

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


def tasks(module: Module) -> Iterator[Finding]:
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
                yield finding(
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


def endless_loops(project: Project, function: Function) -> Iterator[Finding]:
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
            yield finding(
                module,
                node,
                "LS103",
                f"while True in async def {function.node.name} awaits {first} with no timeout: "
                "one hang stops it for good",
            )
