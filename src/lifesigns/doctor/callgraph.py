"""Follow the application's own calls, across modules, to a blocking or dependency call.

The graph is the one :mod:`.pymodel` resolved: a call whose target names a function
of a scanned module is an edge; calls on objects of unknown type are not followed.
The search is breadth-first and bounded (``max_depth`` hops), so the shortest chain
is the one shown, and a cycle or a deep framework of helpers costs little.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .blocking import Site
from .pymodel import Call, Function, Project

Classifier = Callable[[Project, Function, Call], Site | None]


@dataclass(frozen=True)
class Chain:
    """From a call in the starting function to the offending call: the helpers between."""

    first: Call  # the call written in the starting function
    helpers: tuple[Function, ...]  # functions entered, in order (empty: a direct call)
    site: Site
    where: tuple[str, int]  # file and line of the offending call

    def via(self) -> str:
        """``reports.build -> reports._fetch`` (empty for a direct call)."""
        return " -> ".join(helper.short for helper in self.helpers)


class CallGraph:
    """Shortest chains from a function to calls a classifier picks, cached per function."""

    def __init__(
        self, project: Project, classify: Classifier, max_depth: int, *, enter_async: bool
    ) -> None:
        self.project = project
        self.classify = classify
        self.max_depth = max_depth
        self.enter_async = enter_async
        self._reach: dict[str, tuple[tuple[Function, ...], Site, tuple[str, int]] | None] = {}

    def chains(self, function: Function) -> list[Chain]:
        """One chain per call written in ``function`` that leads to a picked call."""
        found = []
        for call in function.calls:
            site = self.classify(self.project, function, call)
            if site is not None:
                found.append(Chain(call, (), site, (function.module.rel, call.line)))
                continue
            callee = self._callee(call)
            if callee is None or callee is function:
                continue
            reached = self.reach(callee)
            if reached is not None:
                helpers, site, where = reached
                found.append(Chain(call, helpers, site, where))
        return found

    def first(self, function: Function) -> Chain | None:
        """The shortest chain from ``function``, if any."""
        chains = self.chains(function)
        return min(chains, key=lambda c: len(c.helpers)) if chains else None

    def reach(self, start: Function) -> tuple[tuple[Function, ...], Site, tuple[str, int]] | None:
        """Breadth-first from ``start`` (itself the first helper) to the nearest picked call."""
        key = start.qualname
        if key in self._reach:
            return self._reach[key]
        self._reach[key] = None  # a cycle back here finds nothing
        queue: deque[tuple[Function, tuple[Function, ...]]] = deque([(start, (start,))])
        seen = {key}
        result = None
        while queue and result is None:
            function, path = queue.popleft()
            for call in function.calls:
                site = self.classify(self.project, function, call)
                if site is not None:
                    result = (path, site, (function.module.rel, call.line))
                    break
            else:
                if len(path) >= self.max_depth:
                    continue
                for call in function.calls:
                    callee = self._callee(call)
                    if callee is not None and callee.qualname not in seen:
                        seen.add(callee.qualname)
                        queue.append((callee, (*path, callee)))
        self._reach[key] = result
        return result

    def _callee(self, call: Call) -> Function | None:
        callee = self.project.function(call.target)
        if callee is None or (callee.is_async and not self.enter_async):
            return None
        return callee
