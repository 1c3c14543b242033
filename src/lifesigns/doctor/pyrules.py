"""The Python rules (LS101-LS110) over a :class:`~.pymodel.Project`.

This module runs them all (:func:`check`) and holds the two that follow the call graph
from every ``async def``: LS102 (blocking calls) and LS110 (a sync ``Session``). The
others live beside it: :mod:`.pytasks`, :mod:`.pyroutes`, :mod:`.pyengines`,
:mod:`.pyimports`, and :mod:`.pyfacts` for what the container rules read.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import blocking, pyengines, pyfacts, pyimports, pyroutes, pytasks
from .callgraph import CallGraph
from .config import DoctorConfig
from .facts import Facts
from .findings import Finding
from .pymodel import Function, Project, finding


def check(project: Project, config: DoctorConfig, facts: Facts) -> list[Finding]:
    """Run every Python rule; record routes, engines and lifesigns settings in ``facts``."""
    findings: list[Finding] = []
    blocking_graph = CallGraph(project, blocking.blocking, config.max_depth, enter_async=False)
    dependency_graph = CallGraph(project, blocking.dependency, config.max_depth, enter_async=True)
    for module in project.modules.values():
        findings += pytasks.tasks(module)
        findings += pyengines.engines(module, facts)
        findings += pyimports.imports(project, module, config)
        pyfacts.lifesigns_facts(module, facts)
        for function in module.functions.values():
            if function.is_async:
                findings += _blocking(blocking_graph, function)
                findings += pytasks.endless_loops(project, function)
                findings += _sync_sessions(project, function)
        findings += pyroutes.routes(module, dependency_graph, facts)
    pyfacts.startup_waits(project, dependency_graph, facts)
    return findings


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
        yield finding(function.module, node, "LS102", f"{text}")


def _sync_sessions(project: Project, function: Function) -> Iterator[Finding]:
    """LS110: a sync ``Session`` parameter used in an ``async def``."""
    params = blocking.sync_session_params(project, function)
    if not params:
        return
    for call in function.calls:
        if call.receiver in params:
            yield finding(
                function.module,
                call.node,
                "LS110",
                f"sync Session {call.receiver}.{call.attr}() in async def "
                f"{function.node.name}: each query blocks the event loop",
            )
            return
