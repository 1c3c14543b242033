"""The layering rule holds: the import-linter contract, and no import cycle in lifesigns.

The contract lives in ``pyproject.toml`` (``[tool.importlinter]``): the assembler
(``core``) on top, the layers beside each other on the host, the host on the registries.
Its ``ignore_imports`` are the known exceptions still to remove; the cycle check skips
exactly those, so each one removed makes both checks stricter at once.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import grimp

from tests.support.servers import REPO_ROOT

PYPROJECT = REPO_ROOT / "pyproject.toml"


def _contract() -> dict[str, object]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["id"] == "layers"]
    return contract


def _pattern(expression: str) -> re.Pattern[str]:
    # import-linter's wildcards: `*` one module name, `**` one or more.
    parts = []
    for part in expression.strip().split("."):
        parts.append({"*": r"[^.]+", "**": r"[^.]+(?:\.[^.]+)*"}.get(part, re.escape(part)))
    return re.compile(r"\.".join(parts) + "$")


def _ignored() -> list[tuple[re.Pattern[str], re.Pattern[str]]]:
    pairs = []
    for entry in _contract().get("ignore_imports", []):  # type: ignore[attr-defined]
        importer, imported = entry.split("->")
        pairs.append((_pattern(importer), _pattern(imported)))
    return pairs


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_import_linter_contract_holds() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is a dev dependency: uv sync"
    done = subprocess.run(
        [lint, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout, done.stdout


def test_there_is_no_import_cycle_in_lifesigns() -> None:
    graph = grimp.build_graph("lifesigns", cache_dir=None)
    ignored = _ignored()
    edges: dict[str, set[str]] = {}
    for importer in graph.modules:
        edges[importer] = {
            imported
            for imported in graph.find_modules_directly_imported_by(importer)
            if not any(a.match(importer) and b.match(imported) for a, b in ignored)
        }
    assert sum(len(v) for v in edges.values()) > 150  # the graph is the real one
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_layer_names_core_nor_another_layer() -> None:
    # What the contract says, read as a newcomer would: the converted layers import
    # neither core nor each other, not even for type checking.
    graph = grimp.build_graph("lifesigns", cache_dir=None)
    layers = ["loop", "tasks", "memory", "drain", "http.inflight", "http.deadline"]
    others = {"core", "loop", "tasks", "memory", "drain", "db", "startup"}
    for layer in layers:
        module = f"lifesigns.{layer}"
        own = module.split(".")[1]
        members = [module, *graph.find_descendants(module)] if layer.count(".") == 0 else [module]
        if layer == "loop":
            members = [m for m in members if m != "lifesigns.loop.sideport"]  # branch router
        for member in members:
            for imported in graph.find_modules_directly_imported_by(member):
                top = imported.split(".")[1] if imported.count(".") else ""
                assert top == own or top not in others, f"{member} imports {imported}"


def test_every_top_level_module_has_a_place_in_the_contract() -> None:
    # A new module outside every layer would escape the rule: name it in pyproject.toml.
    layers = _contract()["layers"]
    assert isinstance(layers, list)
    named = {name.strip().strip("()") for layer in layers for name in re.split(r"[|:]", layer)}
    graph = grimp.build_graph("lifesigns", cache_dir=None)
    top_level = {m for m in graph.find_children("lifesigns") if m != "lifesigns.__main__"}
    assert top_level - named == set(), "add these modules to [tool.importlinter] layers"
