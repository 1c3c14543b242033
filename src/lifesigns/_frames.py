"""Frames: one frame type, one idea of "the application's code", one way to print a path.

Every report lifesigns writes (a loop stall, a thread-pool holder, a pool checkout site,
a pending task, a stuck job) names frames, and they all come from here:

* :class:`Frame`: file, line, function and :class:`FrameKind` of one frame;
* :class:`FrameClassifier`: sorts a file into application, library, stdlib, lifesigns or
  launcher code, cached by file name (a dictionary hit on hot paths);
* :func:`short_path`: a path a user can open from the project root, or the path of the
  module inside its package (``lifesigns/lab/app.py``, ``app/api/deps.py``,
  ``click/core.py``, ``asyncio/tasks.py``), never a path cut inside a package;
* :func:`await_chain`: what a task or coroutine is suspended in, through coroutines,
  generators, async generators, awaited tasks (``Task._fut_waiter``) and ``gather``;
* :func:`parent_greenlet`: the hop from a greenlet to the one that switched into it, so a
  walk from SQLAlchemy's async engine (sync code run in a greenlet) reaches the
  coroutines that awaited it.

The classes of code, from the first rule that matches:

1. lifesigns' own files are :attr:`FrameKind.LIFESIGNS`, except ``lifesigns/lab/``, the
   demo service, which plays the application everywhere;
2. when ``app_packages`` is given (or ``LIFESIGNS_APP_PACKAGES``), exactly those packages
   and modules are the application, wherever they are installed, and nothing else is;
3. console-script shims (``.../bin/fastapi``, ``.../bin/uvicorn``), ``runpy`` and CLI
   frameworks (click, typer, rich's traceback hooks, fastapi-cli, uvicorn's ``main``)
   are :attr:`FrameKind.LAUNCHER`;
4. site-packages and dist-packages are :attr:`FrameKind.LIBRARY`, except the package the
   server was told to load (``uvicorn app.main:app``, ``python -m app``);
5. the standard library (the ``sysconfig`` paths) is :attr:`FrameKind.STDLIB`; frozen
   modules too, and generated code (``<string>``) is library code;
6. everything else is the application's: the project's own package wherever it sits,
   installed in editable mode included.

This module imports nothing from the rest of lifesigns: every layer may use it.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import linecache
import os
import re
import site
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from types import FrameType
from typing import Any, Final, NamedTuple

ENV_APP_PACKAGES: Final = "LIFESIGNS_APP_PACKAGES"
"""The environment variable naming the application's packages, comma-separated."""


class FrameKind(enum.StrEnum):
    """Whose code a frame runs."""

    APPLICATION = "application"
    LIBRARY = "library"
    STDLIB = "stdlib"
    LIFESIGNS = "lifesigns"
    LAUNCHER = "launcher"


class Frame(NamedTuple):
    """One frame of a stack or an await chain: where, in what function, whose code.

    ``str(frame)`` is the line a person reads, with the source line
    (``app/jobs.py:42 in clean: await client.fetch()``); it reads the source through
    ``linecache``, so never call it where I/O is not allowed.
    """

    filename: str
    lineno: int
    name: str
    kind: FrameKind

    @property
    def app(self) -> bool:
        """Whether this is the application's own code."""
        return self.kind is FrameKind.APPLICATION

    @property
    def function(self) -> str:
        """The function's name (the same as :attr:`name`)."""
        return self.name

    @property
    def path(self) -> str:
        """The file as a user can open it: ``lifesigns/lab/app.py`` (see :func:`short_path`)."""
        return short_path(self.filename)

    @property
    def site(self) -> str:
        """``tests/apps/stalls.py:40 sleepy``: the short path, line and function."""
        return f"{short_path(self.filename)}:{self.lineno} {self.name}"

    @property
    def where(self) -> str:
        """``app/orders.py:88 in list_orders``."""
        return f"{short_path(self.filename)}:{self.lineno} in {self.name}"

    @property
    def source(self) -> str:
        """The line of source, stripped (empty when the file cannot be read)."""
        return linecache.getline(self.filename, self.lineno).strip()

    def __str__(self) -> str:
        source = self.source
        return f"{self.where}: {source}" if source else self.where


class Wait(NamedTuple):
    """A link of an await chain that is not a frame: ``task Task-3``, ``future (pending)``."""

    what: str

    def __str__(self) -> str:
        return self.what


Link = Frame | Wait
"""One step of an await chain."""


# -- where things are installed ----------------------------------------------------


def _dir(path: str) -> str:
    return os.path.join(os.path.realpath(path), "")


_HERE: Final = _dir(os.path.dirname(os.path.abspath(__file__)))  # .../lifesigns/
_LAB: Final = os.path.join(_HERE, "lab", "")
_PACKAGE_MARKERS: Final = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


def _site_roots() -> tuple[str, ...]:
    roots = {sysconfig.get_paths().get(k, "") for k in ("purelib", "platlib")}
    with contextlib.suppress(AttributeError):  # some embedded interpreters lack it
        roots.update(site.getsitepackages())
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if isinstance(user, str):
        roots.add(user)
    return tuple(sorted({_dir(r) for r in roots if r}, key=len, reverse=True))


def _stdlib_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get("stdlib", ""), paths.get("platstdlib", ""), os.path.dirname(os.__file__)}
    return tuple(sorted({_dir(r) for r in roots if r}, key=len, reverse=True))


def _script_dirs() -> tuple[str, ...]:
    dirs = {sysconfig.get_paths().get("scripts", ""), os.path.dirname(sys.executable)}
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        dirs.add(os.path.join(prefix, "Scripts" if os.name == "nt" else "bin"))
    return tuple(sorted({_dir(d) for d in dirs if d}))


_SITE_ROOTS: Final = _site_roots()
_STDLIB_ROOTS: Final = _stdlib_roots()
_SCRIPT_DIRS: Final = _script_dirs()

LAUNCHER_PACKAGES: Final = frozenset(
    {"click", "typer", "rich", "fastapi_cli", "watchfiles", "watchgod", "uvicorn_worker"}
)
"""Command-line frameworks and reloaders: their frames start a service, never serve it."""

LAUNCHER_MODULES: Final = frozenset(
    {
        "runpy",
        "uvicorn.main",
        "uvicorn.__main__",
        "uvicorn.supervisors",
        "uvicorn._subprocess",
        "gunicorn.app",
        "hypercorn.__main__",
        "hypercorn.run",
        "fastapi.cli",
        "fastapi.__main__",
    }
)
"""Modules (and their submodules) of servers and frameworks that only launch them."""

SERVING_PACKAGES: Final = frozenset(
    {
        "uvicorn",
        "uvloop",
        "httptools",
        "h11",
        "websockets",
        "gunicorn",
        "hypercorn",
        "starlette",
        "fastapi",
        "anyio",
        "sniffio",
        "sqlalchemy",
        "greenlet",
        "asyncpg",
        "psycopg",
        "psycopg2",
        "psycopg_pool",
        "aiosqlite",
    }
)
"""Libraries that serve every request (servers, ASGI frameworks, SQLAlchemy, drivers).

Their frames sit between the application and the pool or the loop in every stack, so
they never stand for "where": see :meth:`FrameClassifier.rank`.
"""

_IDENTIFIER = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z")
_LOAD_TARGET = re.compile(r"([A-Za-z_]\w*)(?:\.[A-Za-z_]\w*)*:[A-Za-z_][\w.]*(?:\(\))?\Z")


def parse_app_packages(value: object, *, where: str = "app_packages") -> tuple[str, ...]:
    """Validate package names (``"app, worker"`` or ``["app", "worker"]``) into a tuple.

    Raises :class:`ValueError` naming ``where``, the bad name and what is allowed.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        names: list[object] = list(value.split(","))
    elif isinstance(value, Iterable) and not isinstance(value, bytes | Mapping):
        names = list(value)
    else:
        raise ValueError(
            f"{where}={value!r} is not a list of packages; allowed: names such as "
            "['app', 'myservice.api'] or the text 'app,myservice.api'"
        )
    result: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise ValueError(
                f"{where}={value!r} holds {name!r}; allowed: package or module names "
                "such as 'app' or 'myservice.api'"
            )
        name = name.strip()
        if not name and isinstance(value, str):
            continue
        if not _IDENTIFIER.match(name):
            raise ValueError(
                f"{where}={value!r} holds {name!r}, which is not a package name; allowed: "
                "dotted Python names such as 'app' or 'myservice.api', comma-separated"
            )
        result.append(name)
    return tuple(dict.fromkeys(result))


def inferred_app_packages(argv: Iterable[str] | None = None, main: Any = None) -> tuple[str, ...]:
    """The package a server was told to load: ``app`` of ``uvicorn app.main:app``,
    ``python -m app``. Only used to keep such a package the application's when it is
    installed in site-packages."""
    found: list[str] = []
    for arg in sys.argv[1:] if argv is None else argv:
        match = _LOAD_TARGET.match(arg)
        if match:
            found.append(match.group(1))
    main = sys.modules.get("__main__") if main is None else main
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if isinstance(name, str) and name:
        found.append(name.split(".")[0])
    skip = LAUNCHER_PACKAGES | SERVING_PACKAGES | {"lifesigns"}
    return tuple(dict.fromkeys(n for n in found if n not in skip))


# -- paths -------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _package_root(directory: str) -> str | None:
    """The directory above the outermost regular package holding ``directory``."""
    root = None
    current = directory
    while os.path.isfile(os.path.join(current, "__init__.py")):
        parent = os.path.dirname(current)
        if parent == current:
            break
        root, current = parent, parent
    return root


def _after_marker(filename: str) -> str | None:
    for marker in _PACKAGE_MARKERS:
        at = filename.rfind(marker)
        if at >= 0:
            return filename[at + len(marker) :]
    for root in _SITE_ROOTS:
        if filename.startswith(root):
            return filename[len(root) :]
    return None


def _relative_to_longest(filename: str, bases: Iterable[str]) -> str | None:
    best = ""
    for base in bases:
        prefix = os.path.join(base, "")
        if filename.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return filename[len(best) :] if best else None


@functools.lru_cache(maxsize=8192)
def short_path(filename: str) -> str:
    """``filename`` as a user can find it.

    Inside a regular package: the path from the directory above the package
    (``lifesigns/lab/app.py``, ``app/api/deps.py``), which is also the module's dotted
    name. In site-packages: the path inside it (``click/core.py``). In the standard
    library: the path inside it (``asyncio/tasks.py``). Else: relative to the working
    directory, or to the ``sys.path`` entry it was imported from. ``<frozen ...>``
    and other pseudo-files are returned as they are.
    """
    if filename.startswith("<") or not os.path.isabs(filename):
        return filename
    inside = _after_marker(filename)
    if inside is not None:
        return inside
    root = _package_root(os.path.dirname(filename))
    if root is not None:
        return os.path.relpath(filename, root)
    for stdlib in _STDLIB_ROOTS:
        if filename.startswith(stdlib):
            return filename[len(stdlib) :]
    cwd = os.getcwd()
    if filename.startswith(os.path.join(cwd, "")):
        return filename[len(cwd) + 1 :]
    entries = (os.path.abspath(p) for p in sys.path if p)
    return _relative_to_longest(filename, entries) or filename


def module_name(filename: str) -> str | None:
    """The dotted module a file is imported as (``click.core``), as far as its path says."""
    if filename.startswith("<"):
        return filename[8:-1] if filename.startswith("<frozen ") else None
    path = short_path(filename)
    if os.path.isabs(path):
        return None
    stem, ext = os.path.splitext(path)
    if ext not in (".py", ".pyc", ".pyw", ""):
        return None
    parts = stem.split(os.sep)
    if parts and parts[-1] == "__init__":
        parts.pop()
    name = ".".join(parts)
    return name if _IDENTIFIER.match(name) else None


def _in_modules(module: str | None, names: Iterable[str]) -> bool:
    if module is None:
        return False
    return any(module == n or module.startswith(f"{n}.") for n in names)


# -- the classifier --------------------------------------------------------------


SKIP, FALLBACK, OWN = 0, 1, 2
"""Ranks of :meth:`FrameClassifier.rank`: never a site, a site when nothing better, the app's."""


class FrameClassifier:
    """Sorts files into :class:`FrameKind` s; one per process is enough.

    ``app_packages``: the application's packages or modules (``("app", "worker.jobs")``);
    when given, exactly those are the application. Without it, ``LIFESIGNS_APP_PACKAGES``
    is read from ``env`` (the process environment by default); without either, the rules
    of the module docstring apply.

    Results are cached by file name, so :meth:`kind` costs a dictionary lookup after the
    first frame of each file. Safe to share between threads (a race computes one result
    twice).

    Usage::

        classifier = FrameClassifier(app_packages=["app"])
        classifier.kind("/srv/app/app/api/deps.py")      # FrameKind.APPLICATION
        classifier.kind(click.core.__file__)             # FrameKind.LAUNCHER
    """

    def __init__(
        self,
        app_packages: str | Iterable[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        inferred: Iterable[str] | None = None,
    ) -> None:
        if app_packages is None:
            raw = (os.environ if env is None else env).get(ENV_APP_PACKAGES) or None
            self.app_packages = parse_app_packages(raw, where=ENV_APP_PACKAGES)
        else:
            self.app_packages = parse_app_packages(app_packages)
        self.inferred = tuple(inferred_app_packages() if inferred is None else inferred)
        self.kinds: dict[str, FrameKind] = {}
        """The cache: file name to kind (read it directly on hot paths)."""
        self.ranks: dict[str, int] = {}
        """The cache of :meth:`rank`, by file name."""

    def __repr__(self) -> str:
        return f"FrameClassifier(app_packages={list(self.app_packages)!r})"

    def kind(self, filename: str) -> FrameKind:
        """Whose code ``filename`` is (cached)."""
        kind = self.kinds.get(filename)
        if kind is None:
            kind = self._classify(filename)
            if len(self.kinds) < 65536:
                self.kinds[filename] = kind
        return kind

    def is_app(self, filename: str) -> bool:
        """Whether ``filename`` is the application's own code."""
        return self.kind(filename) is FrameKind.APPLICATION

    def rank(self, filename: str) -> int:
        """How well a frame of ``filename`` says *where* the application is (cached).

        :data:`OWN` for the application; :data:`FALLBACK` for libraries outside
        :data:`SERVING_PACKAGES` (the best there is when no application frame shows);
        :data:`SKIP` for the stdlib, lifesigns, launchers and the serving stack.
        """
        rank = self.ranks.get(filename)
        if rank is None:
            kind = self.kind(filename)
            if kind is FrameKind.APPLICATION:
                rank = OWN
            elif kind is FrameKind.LIBRARY and not filename.startswith("<"):
                serving = _in_modules(module_name(filename), SERVING_PACKAGES)
                rank = SKIP if serving else FALLBACK
            else:
                rank = SKIP
            if len(self.ranks) < 65536:
                self.ranks[filename] = rank
        return rank

    def frame(self, filename: str, lineno: int, name: str) -> Frame:
        """A :class:`Frame` with its kind."""
        return Frame(filename, lineno, name, self.kind(filename))

    def _classify(self, filename: str) -> FrameKind:
        if filename.startswith("<"):
            if filename == "<frozen runpy>":
                return FrameKind.LAUNCHER
            return FrameKind.STDLIB if filename.startswith("<frozen ") else FrameKind.LIBRARY
        real = os.path.realpath(filename)
        if real.startswith(_HERE):
            return FrameKind.APPLICATION if real.startswith(_LAB) else FrameKind.LIFESIGNS
        module = module_name(filename)
        if self.app_packages:
            if _in_modules(module, self.app_packages):
                return FrameKind.APPLICATION
            kind = self._not_app(filename, real, module)
            return FrameKind.LIBRARY if kind is FrameKind.APPLICATION else kind
        return self._not_app(filename, real, module)

    def _not_app(self, filename: str, real: str, module: str | None) -> FrameKind:
        directory = os.path.join(os.path.dirname(real), "")
        if directory in _SCRIPT_DIRS or (
            not real.endswith((".py", ".pyw"))
            and os.path.basename(os.path.dirname(real)) in ("bin", "Scripts")
        ):
            return FrameKind.LAUNCHER
        if _in_modules(module, LAUNCHER_PACKAGES) or _in_modules(module, LAUNCHER_MODULES):
            return FrameKind.LAUNCHER
        if any(m in filename or m in real for m in _PACKAGE_MARKERS) or real.startswith(
            _SITE_ROOTS
        ):
            if self.inferred and _in_modules(module, self.inferred):
                return FrameKind.APPLICATION
            return FrameKind.LIBRARY
        if real.startswith(_STDLIB_ROOTS) or filename.startswith(_STDLIB_ROOTS):
            return FrameKind.STDLIB
        return FrameKind.APPLICATION


@functools.cache
def default_classifier() -> FrameClassifier:
    """The classifier built from the environment (``LIFESIGNS_APP_PACKAGES``), made once.

    Layers use it when their host passes none; a host with ``app_packages`` builds its
    own :class:`FrameClassifier` and passes it in. A malformed variable is refused
    loudly by the settings (:class:`~lifesigns.errors.ConfigError` when ``Lifesigns`` is
    built); here, deep in a checkout or the watchdog thread, it is ignored instead.
    """
    try:
        return FrameClassifier()
    except ValueError:
        return FrameClassifier(env={})


# -- walking -----------------------------------------------------------------------


def parent_greenlet(greenlet: Any = None) -> tuple[Any, FrameType | None]:
    """The greenlet that switched into ``greenlet`` (the current one by default), and
    the frame it waits in; ``(None, None)`` at the main greenlet or without greenlets.

    SQLAlchemy's async engine runs its sync code in a greenlet whose frames end at
    ``greenlet_spawn``; the coroutine that awaited it (the endpoint among them) is
    suspended in the parent. Call it on the thread that runs the greenlets.
    """
    module = sys.modules.get("greenlet")
    if module is None:  # never imported: there are no greenlets to cross
        return None, None
    try:
        current = module.getcurrent() if greenlet is None else greenlet
        parent = current.parent
    except Exception:  # a dead or foreign greenlet
        return None, None
    if parent is None:
        return None, None
    return parent, parent.gr_frame


MAX_GREENLET_HOPS: Final = 3
"""Most greenlets a walk crosses (SQLAlchemy nests one; more is a loop gone wrong)."""


def walk(
    frame: FrameType | None, limit: int = 128, *, greenlets: bool = True
) -> Iterable[FrameType]:
    """Frames from ``frame`` outwards, crossing into parent greenlets (own thread only).

    Hot paths inline the same loop with :func:`parent_greenlet`; this is the readable one.
    """
    greenlet: Any = None
    hops = 0
    count = 0
    while count < limit:
        if frame is None:
            if not greenlets or hops >= MAX_GREENLET_HOPS:
                return
            greenlet, frame = parent_greenlet(greenlet)
            if greenlet is None:
                return
            hops += 1
            continue
        yield frame
        count += 1
        frame = frame.f_back


def stack_of(
    frame: FrameType | None,
    limit: int = 128,
    *,
    greenlets: bool = False,
    classifier: FrameClassifier | None = None,
) -> tuple[Frame, ...]:
    """The frames from ``frame`` outwards, innermost first, classified."""
    kind = (classifier or default_classifier()).kind
    return tuple(
        Frame(f.f_code.co_filename, f.f_lineno or 0, f.f_code.co_name, kind(f.f_code.co_filename))
        for f in walk(frame, limit, greenlets=greenlets)
    )


def _frame_and_code(obj: Any) -> tuple[FrameType | None, Any]:
    for prefix in ("cr", "gi", "ag"):
        code = getattr(obj, f"{prefix}_code", None)
        if code is not None:
            return getattr(obj, f"{prefix}_frame", None), code
    return None, None


def _awaited(obj: Any) -> Any:
    for attr in ("cr_await", "gi_yieldfrom", "ag_await"):
        value = getattr(obj, attr, None)
        if value is not None:
            return value
    return None


def _is_future(obj: Any) -> bool:
    return callable(getattr(obj, "done", None)) and callable(
        getattr(obj, "add_done_callback", None)
    )


def await_chain(
    awaitable: Any, *, limit: int = 64, classifier: FrameClassifier | None = None
) -> list[Link]:
    """What ``awaitable`` (a task, coroutine, generator or async generator) is suspended
    in, outermost first: a :class:`Frame` per coroutine, a :class:`Wait` where the chain
    goes through something else.

    Awaiting another task is followed into that task (through ``Task._fut_waiter``), and
    ``gather`` into its first pending child. Reads attributes only: call it on the
    loop that runs the tasks (their frames change while it runs); capture it before
    cancelling, as cancellation unwinds the chain.
    """
    kind = (classifier or default_classifier()).kind
    links: list[Link] = []
    seen: set[int] = set()
    task: Any = None
    obj: Any = awaitable
    while obj is not None and len(links) < limit:
        if id(obj) in seen:
            break
        seen.add(id(obj))
        frame, code = _frame_and_code(obj)
        if code is not None:
            lineno = frame.f_lineno if frame is not None else code.co_firstlineno
            links.append(Frame(code.co_filename, lineno or 0, code.co_name, kind(code.co_filename)))
            if frame is None:
                break  # finished, or a frame already gone
            nxt = _awaited(obj)
            if nxt is None and task is not None:
                nxt = getattr(task, "_fut_waiter", None)  # a task waits on a future
            obj = nxt
            continue
        if _is_future(obj) and hasattr(obj, "get_coro"):  # a task
            if obj is not awaitable:
                links.append(Wait(f"task {obj.get_name()}" + (" (done)" if obj.done() else "")))
            if obj.done():
                break
            task, obj = obj, obj.get_coro()
            continue
        if _is_future(obj):
            children = getattr(obj, "_children", None)
            if children is not None:  # gather
                pending = [c for c in children if not c.done()]
                links.append(Wait(f"gather ({len(pending)} of {len(children)} pending)"))
                obj = pending[0] if pending else None
                continue
            links.append(Wait("future (done)" if obj.done() else "future (pending)"))
            break
        # A C iterator over a future (``await fut``): the task knows the future itself.
        waiter = getattr(task, "_fut_waiter", None) if task is not None else None
        if waiter is not None and id(waiter) not in seen:
            obj = waiter
            continue
        links.append(Wait(type(obj).__qualname__))
        break
    return links


def frames_of(links: Iterable[Link]) -> list[Frame]:
    """The frames of an await chain, without its :class:`Wait` links."""
    return [link for link in links if isinstance(link, Frame)]
