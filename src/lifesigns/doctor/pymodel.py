"""An index of the application's Python modules, built with :mod:`ast`.

Each module gets its dotted name (from its ``__init__.py`` chain), its import aliases,
its top-level names, and every function and method with the calls it makes, each call
resolved to a dotted name where the source says which (``time.sleep``,
``app.reports.build``, ``app.crud.VitalsCRUD.mark``). Nothing is imported or run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .findings import Finding

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
_BUILTINS = {"open", "input"}
_NESTED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


@dataclass
class Call:
    """One call expression in a function body."""

    target: str | None  # dotted name when resolvable, e.g. "time.sleep"
    attr: str | None  # the method name of ``x.attr(...)``
    receiver: str | None  # ``x`` in ``x.attr(...)`` when ``x`` is a plain name
    line: int
    col: int
    node: ast.Call


@dataclass
class Function:
    """A function or method of the application."""

    qualname: str
    module: Module
    node: FunctionNode
    class_name: str | None
    calls: list[Call] = field(default_factory=list)
    endless_loops: list[ast.While] = field(default_factory=list)  # `while True:` in the body

    @property
    def is_async(self) -> bool:
        """Whether it is an ``async def``."""
        return isinstance(self.node, ast.AsyncFunctionDef)

    @property
    def short(self) -> str:
        """The name shown in chains: ``reports.build``, ``RateLimit.__init__``."""
        last = self.module.name.rsplit(".", 1)[-1]
        inner = self.qualname[len(self.module.name) + 1 :]
        return inner if self.class_name else f"{last}.{inner}"


@dataclass
class Module:
    """One parsed source file."""

    name: str
    path: Path
    rel: str  # path as shown in findings
    tree: ast.Module
    is_package: bool
    aliases: dict[str, str] = field(default_factory=dict)
    toplevel: set[str] = field(default_factory=set)
    classes: set[str] = field(default_factory=set)
    functions: dict[str, Function] = field(default_factory=dict)
    # module-level names bound to sync SQLAlchemy objects: name -> "engine" | "session factory"
    sync_objects: dict[str, str] = field(default_factory=dict)
    all_calls: list[ast.Call] = field(default_factory=list)  # every call, at any depth
    # module-level names bound to a call's result: name -> what was called (a class, often)
    instances: dict[str, str] = field(default_factory=dict)

    @property
    def package(self) -> str:
        """The package relative imports start from."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


def module_name(path: Path) -> tuple[str, bool]:
    """The dotted name of ``path`` from its chain of ``__init__.py``, and if it is a package."""
    is_package = path.name == "__init__.py"
    parts = [] if is_package else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.append(folder.name)
        folder = folder.parent
    return ".".join(reversed(parts)) or path.parent.name, is_package


def body_nodes(nodes: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node under ``nodes`` without entering nested functions, lambdas or classes."""
    stack: list[ast.AST] = [n for n in reversed(nodes) if not isinstance(n, _NESTED)]
    while stack:
        node = stack.pop()
        yield node
        for child in reversed(list(ast.iter_child_nodes(node))):
            if not isinstance(child, _NESTED):
                stack.append(child)


def nested_functions(nodes: list[ast.stmt]) -> Iterator[FunctionNode]:
    """Functions defined directly in ``nodes`` (inside ifs and withs, not inside classes)."""
    stack: list[ast.AST] = list(reversed(nodes))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node
        elif not isinstance(node, ast.ClassDef | ast.Lambda | ast.expr):
            stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _always(test: ast.expr) -> bool:
    return isinstance(test, ast.Constant) and bool(test.value)


def dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else ``None``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class _Indexer:
    def __init__(self, module: Module) -> None:
        self.module = module

    def run(self) -> None:
        tree = self.module.tree
        toplevel = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                self.module.all_calls.append(node)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                self._alias(node, toplevel=id(node) in toplevel)
        for stmt in tree.body:
            self._toplevel(stmt)
        for stmt in tree.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                self._function(stmt, None)
            elif isinstance(stmt, ast.ClassDef):
                for item in stmt.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        self._function(item, stmt.name)

    def _alias(self, node: ast.Import | ast.ImportFrom, toplevel: bool) -> None:
        aliases = self.module.aliases
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases.setdefault(top, top)
                if toplevel:
                    self.module.toplevel.add(alias.asname or alias.name.split(".")[0])
            return
        base = resolve_relative(self.module, node.module, node.level)
        for alias in node.names:
            if alias.name == "*":
                continue
            local = alias.asname or alias.name
            aliases.setdefault(local, f"{base}.{alias.name}" if base else alias.name)
            if toplevel:
                self.module.toplevel.add(local)

    def _toplevel(self, stmt: ast.stmt) -> None:
        module = self.module
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            module.toplevel.add(stmt.name)
            if isinstance(stmt, ast.ClassDef):
                module.classes.add(stmt.name)
            return
        if isinstance(stmt, ast.If | ast.Try):
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.stmt):
                    self._toplevel(child)
            for handler in getattr(stmt, "handlers", []):
                for child in handler.body:
                    self._toplevel(child)
            return
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign):
            targets, value = [stmt.target], stmt.value
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    module.toplevel.add(name.id)
        if isinstance(value, ast.Call) and len(targets) == 1:
            target = targets[0]
            kind = sync_sqlalchemy_kind(self.module, value)
            if kind and isinstance(target, ast.Name):
                module.sync_objects[target.id] = kind
            called = resolve(self.module, value.func)
            if called and isinstance(target, ast.Name):
                module.instances[target.id] = called

    def _function(self, node: FunctionNode, class_name: str | None, outer: str = "") -> None:
        inner = f"{class_name}.{node.name}" if class_name else node.name
        inner = f"{outer}.{inner}" if outer else inner
        function = Function(f"{self.module.name}.{inner}", self.module, node, class_name)
        for child in body_nodes(node.body):
            if isinstance(child, ast.Call):
                function.calls.append(self._call(child, class_name))
            elif isinstance(child, ast.While) and _always(child.test):
                function.endless_loops.append(child)
        self.module.functions.setdefault(inner, function)
        for nested in nested_functions(node.body):
            self._function(nested, None, inner)  # routes defined in an app factory

    def _call(self, node: ast.Call, class_name: str | None) -> Call:
        func = node.func
        attr = func.attr if isinstance(func, ast.Attribute) else None
        receiver = None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            receiver = func.value.id
        return Call(
            resolve(self.module, func, class_name),
            attr,
            receiver,
            node.lineno,
            node.col_offset + 1,
            node,
        )


def resolve_relative(module: Module, name: str | None, level: int) -> str:
    """The absolute module named by ``from <level dots><name> import ...`` in ``module``."""
    if level == 0:
        return name or ""
    parts = module.package.split(".") if module.package else []
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    if name:
        parts.append(name)
    return ".".join(parts)


def resolve(module: Module, func: ast.expr, class_name: str | None = None) -> str | None:
    """The dotted name a call's function expression refers to, when the source says."""
    name = dotted(func)
    if name is None:
        return None
    head, _, rest = name.partition(".")
    if head == "self" and class_name and rest and "." not in rest:
        return f"{module.name}.{class_name}.{rest}"
    if head in module.aliases:
        base = module.aliases[head]
    elif head in module.toplevel:
        base = f"{module.name}.{head}"
    elif head in _BUILTINS and not rest:
        base = head
    else:
        return None  # a local name (which may shadow a module): not followed
    return f"{base}.{rest}" if rest else base


_SYNC_ENGINES = {
    "sqlalchemy.create_engine",
    "sqlalchemy.engine.create_engine",
    "sqlmodel.create_engine",
}
_SESSION_FACTORIES = {
    "sqlalchemy.orm.sessionmaker",
    "sqlalchemy.orm.scoped_session",
    "sqlalchemy.orm.Session",
    "sqlmodel.Session",
}
SYNC_SESSIONS = {"sqlalchemy.orm.Session", "sqlalchemy.orm.session.Session", "sqlmodel.Session"}


def sync_sqlalchemy_kind(module: Module, call: ast.Call) -> str | None:
    """``"engine"`` or ``"session factory"`` when ``call`` builds a sync SQLAlchemy one."""
    target = resolve(module, call.func)
    if target in _SYNC_ENGINES:
        return "engine"
    if target in _SESSION_FACTORIES:
        for keyword in call.keywords:
            if keyword.arg == "class_" and "Async" in (dotted(keyword.value) or ""):
                return None
        return "session factory"
    return None


@dataclass
class Project:
    """Every parsed module, with lookups across them."""

    modules: dict[str, Module] = field(default_factory=dict)
    unparsed: set[str] = field(default_factory=set)  # modules in syntax newer than ours
    declared: set[str] = field(default_factory=set)  # distributions the project declares

    @property
    def tops(self) -> set[str]:
        """The application's top-level package and module names."""
        return {name.split(".")[0] for name in (*self.modules, *self.unparsed)}

    def function(self, target: str | None, hops: int = 0) -> Function | None:
        """The application function ``target`` names (a class name gives its ``__init__``)."""
        if target is None or hops > 4:
            return None
        module_name, _, inner = target.rpartition(".")
        for split in range(target.count("."), 0, -1):
            parts = target.split(".")
            module_name, inner = ".".join(parts[:split]), ".".join(parts[split:])
            module = self.modules.get(module_name)
            if module is None:
                continue
            if inner in module.functions:
                return module.functions[inner]
            if inner in module.classes:
                return module.functions.get(f"{inner}.__init__")
            head, _, rest = inner.partition(".")
            if head in module.aliases and module.aliases[head] != target:
                again = module.aliases[head] + (f".{rest}" if rest else "")
                return self.function(again, hops + 1)
            if head in module.instances and rest:  # limiter = RateLimiter(); limiter.run()
                return self.function(f"{module.instances[head]}.{rest}", hops + 1)
            return None
        return None

    def on_disk(self, name: str) -> bool:
        """Whether module ``name`` exists beside the scanned ones, though it was not scanned."""
        top = name.split(".")[0]
        for module in self.modules.values():
            if module.name.split(".")[0] != top:
                continue
            depth = module.name.count(".") + (1 if module.is_package else 0)
            if len(module.path.parents) <= depth:
                continue
            base = module.path.parents[depth].joinpath(*name.split("."))
            if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
                return True
            break  # one scanned module of that package tells where its source root is
        return False

    def sync_object(self, target: str | None) -> str | None:
        """``"engine"`` / ``"session factory"`` when ``target`` names a module-level one."""
        if target is None or "." not in target:
            return None
        module_name, _, name = target.rpartition(".")
        module = self.modules.get(module_name)
        if module is None:
            return None
        if name in module.sync_objects:
            return module.sync_objects[name]
        alias = module.aliases.get(name)
        return self.sync_object(alias) if alias and alias != target else None


def finding(module: Module, node: ast.AST, code: str, message: str) -> Finding:
    """A finding at ``node`` (its line and 1-based column) in ``module``."""
    line = getattr(node, "lineno", 1)
    return Finding(module.rel, line, getattr(node, "col_offset", 0) + 1, code, message)


def parse(path: Path, rel: str, source: str) -> Module:
    """Parse and index one file; raises :class:`SyntaxError` as :func:`ast.parse` does."""
    tree = _parse(source, rel)
    name, is_package = module_name(path)
    module = Module(name, path, rel, tree, is_package)
    _Indexer(module).run()
    return module


def _parse(source: str, filename: str) -> ast.Module:
    # Up to 3.12 the AST constructor counts its depth in interpreter-wide state: a parse
    # made meanwhile (in a garbage-collector finalizer, or by a thread formatting a
    # traceback, whose 3.11 carets parse) makes this one raise a false SystemError over
    # a tree that is fine (python/cpython#106905). Parsing again succeeds.
    for _ in range(2):
        try:
            return ast.parse(source, filename=filename)
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc):
                raise
    return ast.parse(source, filename=filename)
