"""What the container rules need from the Python code besides routes and engines.

Whether the project uses lifesigns (and with which side port, probe budget, drain delay
and grace), and whether its start-up waits for the database (``watch_engine``, or a
tenacity-retried function that reaches it).
"""

from __future__ import annotations

import ast

from .callgraph import CallGraph
from .facts import Facts, Where
from .pymodel import Module, Project, resolve


def lifesigns_facts(module: Module, facts: Facts) -> None:
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


def startup_waits(project: Project, graph: CallGraph, facts: Facts) -> None:
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
