"""A census of the largest containers the application keeps alive, with no tracemalloc.

A leak in a web service is nearly always a container that only grows: a module-level
dict used as a cache, a list on ``app.state``, a class attribute, a closure's cell, an
``lru_cache(maxsize=None)``. Each is reachable from a long-lived *root*: a module of the
application, a class it defines, an object registered with :meth:`ContainerCensus.add_root`
(``app.state``), a function's closure, a live thread's frame. The census walks those roots
(and one level of attributes below them), reads each container's length (O(1)), and keeps
a short history per container so that "this dict grows by 600 entries a minute" comes
without tracing anything.

Cost: a walk touches the application's modules only (not the libraries', not the
stdlib's), reads ``len()`` and a sampled size, and releases the GIL between roots, so it
never holds it for more than a few milliseconds at a time. It runs on the memory
monitor's thread, never on the event loop, and stops at its time budget.
"""

from __future__ import annotations

import collections
import functools
import itertools
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .._frames import default_classifier

__all__ = [
    "ContainerCensus",
    "ContainerGrowth",
    "ContainerSample",
    "deep_size",
    "default_is_app_file",
    "newest_entries",
]

_CONTAINERS = (dict, list, set, deque, collections.OrderedDict, collections.defaultdict)
_LRU = type(functools.lru_cache(maxsize=None)(lambda: None))
_MIN_LEN = 16
"""Containers shorter than this are not worth a line in the census."""


def default_is_app_file(filename: str) -> bool:
    """Whether ``filename`` is the application's code, by the one frame classifier."""
    return default_classifier().is_app(filename)


def deep_size(obj: object, *, sample: int = 64) -> int:
    """Bytes held by a container and its entries, estimated from a sample of entries.

    The container's own size plus, for up to ``sample`` entries (the newest: a dict's
    last keys, a list's tail), each key and value with one level of nesting, scaled to the
    whole length. Never walks a large container whole, so it is quick and bounded.
    """
    own = sys.getsizeof(obj)
    try:
        length = len(obj)  # type: ignore[arg-type]
    except TypeError:
        return own
    if length == 0:
        return own
    entries = list(_newest_entries(obj, sample))
    if not entries:
        return own
    total = 0
    for entry in entries:
        total += _shallow_deep(entry)
    return own + int(total / len(entries) * length)


def _shallow_deep(obj: object) -> int:
    size = sys.getsizeof(obj)
    if isinstance(obj, tuple | list | set | frozenset):
        size += sum(sys.getsizeof(x) for x in list(obj)[:32])
    elif isinstance(obj, dict):
        for key, value in list(obj.items())[:32]:
            size += sys.getsizeof(key) + sys.getsizeof(value)
    elif hasattr(obj, "__dict__") and isinstance(obj.__dict__, dict):
        size += sum(sys.getsizeof(v) for v in list(obj.__dict__.values())[:32])
    return size


def _newest_entries(obj: object, count: int) -> Iterator[object]:
    """Up to ``count`` of the newest entries, without copying the container."""
    if isinstance(obj, dict):
        for n, key in enumerate(reversed(obj)):
            if n >= count:
                return
            yield (key, obj.get(key))
    elif isinstance(obj, list | deque):
        length = len(obj)
        for i in range(1, min(count, length) + 1):
            try:
                yield obj[-i]
            except IndexError:
                return
    elif isinstance(obj, set):
        for n, item in enumerate(obj):
            if n >= count:
                return
            yield item


def newest_entries(obj: object, count: int = 16) -> list[object]:
    """The newest entries of a container (a dict's values), for tracing where they came from."""
    entries = list(_newest_entries(obj, count))
    if isinstance(obj, dict):
        return [entry[1] for entry in entries]  # type: ignore[index]
    return entries


@dataclass(frozen=True)
class ContainerSample:
    """One container as one census saw it."""

    name: str
    """Qualified name a person can find: ``services.cache._store``,
    ``app.state.reports``, ``app.routes.render.<closure cell seen>``."""
    kind: str
    """``module global``, ``class attribute``, ``app.state``, ``closure cell``,
    ``lru_cache``, ``thread frame``, ``attribute``."""
    type_name: str
    length: int
    size: int
    unbounded: bool
    """An ``lru_cache(maxsize=None)``, or a dict keyed by request data (strings or ints
    growing without bound): named as such in reports."""
    ident: int
    at: float


@dataclass
class ContainerGrowth:
    """One container's history over the last censuses, and its slopes."""

    name: str
    kind: str
    type_name: str
    unbounded: bool
    ident: int
    history: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=32))

    @property
    def length(self) -> int:
        """Entries at the last census."""
        return self.history[-1][1] if self.history else 0

    @property
    def size(self) -> int:
        """Estimated bytes at the last census."""
        return self.history[-1][2] if self.history else 0

    def slope(self, index: int) -> float:
        """Growth per minute of length (``index=1``) or size (``index=2``), by least squares."""
        points = list(self.history)
        if len(points) < 2:
            return 0.0
        xs = [(p[0] - points[0][0]) / 60.0 for p in points]
        ys = [float(p[index]) for p in points]
        n = len(points)
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx == 0:
            return 0.0
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx

    @property
    def entries_per_min(self) -> float:
        """Entries added per minute (negative when shrinking)."""
        return self.slope(1)

    @property
    def bytes_per_min(self) -> float:
        """Estimated bytes added per minute."""
        return self.slope(2)

    @property
    def grows(self) -> bool:
        """Whether it grew at every one of its last censuses (at least three)."""
        points = list(self.history)[-4:]
        if len(points) < 3:
            return False
        return all(b[1] > a[1] for a, b in itertools.pairwise(points))

    def describe(self) -> str:
        """``services.cache._store: dict, 6,120 entries (+610/min), holding 63 MB``."""
        unbounded = ", unbounded" if self.unbounded else ""
        return (
            f"{self.name}: {self.type_name}{unbounded}, {self.length:,} entries "
            f"({self.entries_per_min:+,.0f}/min), holding {_mb(self.size)}"
            f" ({_mb(self.bytes_per_min, signed=True)}/min)"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "name": self.name,
            "kind": self.kind,
            "type": self.type_name,
            "unbounded": self.unbounded,
            "entries": self.length,
            "entries_per_min": round(self.entries_per_min, 1),
            "size_mb": round(self.size / 1048576, 2),
            "mb_per_min": round(self.bytes_per_min / 1048576, 2),
            "grows": self.grows,
        }


def _mb(value: float, *, signed: bool = False) -> str:
    mb = value / 1048576
    return f"{mb:+.1f} MB" if signed else f"{mb:.1f} MB"


class ContainerCensus:
    """Walks the application's roots for large containers and tracks their growth.

    ``is_app_file`` decides which modules are the application's (the frame classifier's
    rule). ``budget`` bounds one walk in seconds; a walk that runs out keeps what it saw.
    Thread-safe: :meth:`take` runs on the memory thread, :meth:`growing` anywhere.
    """

    def __init__(
        self,
        *,
        is_app_file: Callable[[str], bool] = default_is_app_file,
        budget: float = 0.5,
        keep: int = 50,
    ) -> None:
        self.is_app_file = is_app_file
        self.budget = budget
        self.keep = keep
        self._roots: list[tuple[str, Callable[[], object]]] = []
        self._lock = threading.Lock()
        self._tracked: dict[tuple[str, int], ContainerGrowth] = {}
        self.last_walk_s = 0.0
        self.longest_hold_s = 0.0
        self.censuses = 0

    def add_root(self, name: str, get: Callable[[], object]) -> None:
        """Walk ``get()`` too, under ``name`` (``"app.state"``): its attributes' containers."""
        self._roots.append((name, get))

    # -- walking -----------------------------------------------------------------------

    def take(self) -> list[ContainerSample]:
        """One census now: every large container found, biggest first."""
        began = time.monotonic()
        deadline = began + self.budget
        found: dict[int, ContainerSample] = {}
        hold_began = time.perf_counter()
        for name, kind, obj in self._walk(deadline):
            now = time.perf_counter()
            self.longest_hold_s = max(self.longest_hold_s, now - hold_began)
            sample = self._measure(name, kind, obj)
            if sample is not None and sample.ident not in found:
                found[sample.ident] = sample
            # Let the event loop's thread have the GIL between containers.
            time.sleep(0)
            hold_began = time.perf_counter()
        samples = sorted(found.values(), key=lambda s: s.size, reverse=True)[: self.keep]
        self._record(samples)
        self.last_walk_s = time.monotonic() - began
        self.censuses += 1
        return samples

    def _walk(self, deadline: float) -> Iterator[tuple[str, str, object]]:
        for name, get in list(self._roots):
            try:
                root = get()
            except Exception:  # noqa: S112 - a root that cannot be read is skipped
                continue
            state = getattr(root, "_state", None)
            values = state if isinstance(state, dict) else _attributes(root)
            for attr, value in values.items():
                if _is_container(value):
                    yield f"{name}.{attr}", "app.state", value
        for module_name, module in list(sys.modules.items()):
            if time.monotonic() > deadline:
                return
            filename = getattr(module, "__file__", None) or ""
            if not isinstance(module, types.ModuleType) or not self.is_app_file(filename):
                continue
            yield from self._walk_module(module_name, module)
            time.sleep(0)
        yield from self._walk_threads()

    def _walk_module(
        self, module_name: str, module: types.ModuleType
    ) -> Iterator[tuple[str, str, object]]:
        try:
            namespace = dict(vars(module))
        except RuntimeError:
            return
        for attr, value in namespace.items():
            qualified = f"{module_name}.{attr}"
            if _is_container(value):
                yield qualified, "module global", value
            elif isinstance(value, _LRU):
                yield qualified, "lru_cache", value
            elif isinstance(value, type) and getattr(value, "__module__", None) == module_name:
                for cattr, cvalue in list(vars(value).items()):
                    if _is_container(cvalue):
                        yield f"{qualified}.{cattr}", "class attribute", cvalue
                    elif isinstance(cvalue, _LRU):
                        yield f"{qualified}.{cattr}", "lru_cache", cvalue
            elif isinstance(value, types.FunctionType):
                yield from _closure_cells(qualified, value)
            elif not isinstance(value, types.ModuleType | type) and hasattr(value, "__dict__"):
                attrs = _attributes(value)
                for iattr, ivalue in attrs.items():
                    if _is_container(ivalue):
                        yield f"{qualified}.{iattr}", "attribute", ivalue
                    elif isinstance(ivalue, types.FunctionType):
                        yield from _closure_cells(f"{qualified}.{iattr}", ivalue)

    def _walk_threads(self) -> Iterator[tuple[str, str, object]]:
        for ident, frame in list(sys._current_frames().items()):
            depth = 0
            current: types.FrameType | None = frame
            while current is not None and depth < 40:
                code = current.f_code
                if self.is_app_file(code.co_filename):
                    for local, value in list(current.f_locals.items()):
                        if _is_container(value):
                            yield (
                                f"{code.co_qualname}.<local {local}> (thread {ident})",
                                "thread frame",
                                value,
                            )
                current = current.f_back
                depth += 1

    def _measure(self, name: str, kind: str, obj: object) -> ContainerSample | None:
        if isinstance(obj, _LRU):
            info = obj.cache_info()
            length = int(info.currsize)
            if length < _MIN_LEN:
                return None
            unbounded = info.maxsize is None
            # The cache's dict is private to the C type: estimate from the wrapped
            # function's result size, unknown here, as a lower bound of its entries.
            size = sys.getsizeof(obj) + length * 100
            return ContainerSample(
                name, kind, "lru_cache", length, size, unbounded, id(obj), time.monotonic()
            )
        try:
            length = len(obj)  # type: ignore[arg-type]
        except Exception:
            return None
        if length < _MIN_LEN:
            return None
        size = deep_size(obj)
        return ContainerSample(
            name,
            kind,
            type(obj).__name__,
            length,
            size,
            _keyed_by_request_data(obj),
            id(obj),
            time.monotonic(),
        )

    # -- history -----------------------------------------------------------------------

    def _record(self, samples: list[ContainerSample]) -> None:
        with self._lock:
            seen = set()
            for s in samples:
                key = (s.name, s.ident)
                seen.add(key)
                growth = self._tracked.get(key)
                if growth is None:
                    growth = ContainerGrowth(s.name, s.kind, s.type_name, s.unbounded, s.ident)
                    self._tracked[key] = growth
                growth.unbounded = s.unbounded
                growth.history.append((s.at, s.length, s.size))
            for key in [k for k in self._tracked if k not in seen]:
                # Out of the top list, or gone: forget it once it has not been seen
                # for a while, so the table stays bounded.
                history = self._tracked[key].history
                if not history or time.monotonic() - history[-1][0] > 3600:
                    del self._tracked[key]
            if len(self._tracked) > self.keep * 4:
                ranked = sorted(self._tracked.items(), key=lambda kv: kv[1].size, reverse=True)
                self._tracked = dict(ranked[: self.keep * 4])

    def growing(self, *, minimum_bytes_per_min: float = 0.0) -> list[ContainerGrowth]:
        """Containers that grew at each recent census, fastest first."""
        with self._lock:
            tracked = list(self._tracked.values())
        return sorted(
            (g for g in tracked if g.grows and g.bytes_per_min >= minimum_bytes_per_min),
            key=lambda g: g.bytes_per_min,
            reverse=True,
        )

    def largest(self, count: int = 10) -> list[ContainerGrowth]:
        """The largest containers at the last census."""
        with self._lock:
            tracked = list(self._tracked.values())
        return sorted(tracked, key=lambda g: g.size, reverse=True)[:count]

    def find(self, name: str) -> object | None:
        """The live container named ``name`` at the last census, if it is still reachable."""
        with self._lock:
            idents = {g.ident for g in self._tracked.values() if g.name == name}
        if not idents:
            return None
        for found_name, _kind, obj in self._walk(time.monotonic() + self.budget):
            if found_name == name and id(obj) in idents:
                return obj
        return None


def _is_container(value: object) -> bool:
    return isinstance(value, _CONTAINERS)


def _attributes(obj: object) -> dict[str, object]:
    try:
        namespace = vars(obj)
    except TypeError:
        return {}
    try:
        return dict(namespace)
    except RuntimeError:
        return {}


def _closure_cells(
    qualified: str, function: types.FunctionType
) -> Iterator[tuple[str, str, object]]:
    closure = function.__closure__ or ()
    names = function.__code__.co_freevars
    for cell_name, cell in zip(names, closure, strict=False):
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if _is_container(value):
            yield f"{qualified}.<closure {cell_name}>", "closure cell", value


def _keyed_by_request_data(obj: object) -> bool:
    """A dict whose newest keys are strings or ints: the shape of a per-request cache."""
    if not isinstance(obj, dict) or len(obj) < 256:
        return False
    keys = [entry[0] for entry in _newest_entries(obj, 16)]  # type: ignore[index]
    return bool(keys) and all(isinstance(k, str | int | tuple) for k in keys)
