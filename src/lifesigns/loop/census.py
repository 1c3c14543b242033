"""Task census: pending asyncio tasks counted by coroutine and creation site, with a trend.

Tasks that pile up (created per request and never finished, looping forever without a
timeout) freeze a service slowly: memory grows, every loop iteration gets longer. The
census counts pending tasks every ``interval`` seconds on the loop, grouped by

* the coroutine (its qualified name and where it is defined), always known;
* the creation site: the innermost application frame that called ``create_task``,
  recorded by a task factory that walks at most 32 frames with no source read. It is
  sampled by coroutine (every task of a coroutine's first 32, then one in 32), and the
  tasks not sampled count with the sites sampled for their coroutine: a request's task
  costs a counter, not a walk. The factory wraps any factory already installed.

A site whose count never fell over the last ``growth_samples`` censuses, rose in at
least two of them, and by at least ``min_growth`` tasks in all, is flagged as piling up
(logged once until it stops).
Snapshots are kept in a ring of ``history`` entries.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from .._frames import FrameClassifier, FrameKind, Wait, default_classifier, short_path
from .._frames import await_chain as _await_chain
from .report import Notice

if TYPE_CHECKING:
    from ..host import RequestsView  # a protocol: the edge's RequestTracker is one

Emit = Callable[[object], None]
Site = tuple[str, int, str]

_MAX_WALK = 32
_ASYNCIO_DIR = f"{asyncio.__path__[0]}/"
_APPLICATION = FrameKind.APPLICATION


def creator_site(depth: int = 2, classifier: FrameClassifier | None = None) -> Site | None:
    """The innermost application frame above the caller (else the first outside asyncio)."""
    try:
        frame: FrameType | None = sys._getframe(depth)
    except ValueError:
        return None
    return _walk(frame, classifier or default_classifier())


def site_text(site: Site | None) -> str | None:
    """``tests/apps/stalls.py:120 leak``."""
    return None if site is None else f"{short_path(site[0])}:{site[1]} {site[2]}"


def coroutine_of(task: asyncio.Task[Any]) -> tuple[str, str]:
    """The task's coroutine name and where its function is defined."""
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None) or type(coro).__name__
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    defined = f"{short_path(code.co_filename)}:{code.co_firstlineno}" if code else "?"
    return str(name), defined


def await_chain(task: asyncio.Task[Any], limit: int = 24) -> list[str]:
    """Where the task waits: its coroutine, then what that awaits, innermost last."""
    return [
        link.what if isinstance(link, Wait) else link.site
        for link in _await_chain(task, limit=limit)
    ]


_STABLE_AFTER = 8
"""Walks from one call site that must agree before its answer is reused without a walk."""
_RECHECK_EVERY = 64
"""A reused call site is walked again on one task in this many, to notice it changed."""
_UNSTABLE = object()
_RECORD_FIRST = 32
"""Tasks of one coroutine recorded one by one before sampling starts."""
_RECORD_EVERY = 32
"""Past those, one task in this many of a coroutine is recorded."""
_MAX_CODES = 4096
"""Coroutines counted apart before the counts start over (their number is bounded)."""


class _Book:
    """Creation records by task: ``id(task)`` -> (weak reference, site, time).

    A plain dictionary of weak references without callbacks, pruned of dead entries once
    it has doubled since the last pruning (amortised O(1) per task): a
    ``WeakKeyDictionary`` runs a Python callback for every task that dies, which cost
    more than recording its creation site.
    """

    __slots__ = ("_entries", "_prune_at")

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[Any], Site | None, float]] = {}
        self._prune_at = 4096

    def add(self, task: Any, site: Site | None, created: float) -> None:
        entries = self._entries
        entries[id(task)] = (weakref.ref(task), site, created)
        if len(entries) >= self._prune_at:
            for key in [k for k, (ref, _, _) in entries.items() if ref() is None]:
                del entries[key]
            self._prune_at = max(4096, 2 * len(entries))

    def get(self, task: Any) -> tuple[Site | None, float] | None:
        found = self._entries.get(id(task))
        if found is None or found[0]() is not task:
            return None  # never recorded, or an id reused by a later object
        return found[1], found[2]

    def __len__(self) -> int:
        return len(self._entries)


class CreationSites:
    """A task factory that remembers where and when each task was created.

    The creation site is the innermost application frame above ``create_task``, found by
    walking the stack. The walk is cached by call site: the first frame outside asyncio
    (its code and instruction). An application frame there is its own answer; for a
    library's call site (uvicorn creates one task per request) the walk is reused once
    :data:`_STABLE_AFTER` walks agreed, and redone on one task in :data:`_RECHECK_EVERY`;
    a call site whose walks disagree (a helper many application sites call) is always
    walked. So a request's task costs a frame look-up and a dictionary hit, not a walk.

    Past the first :data:`_RECORD_FIRST` tasks of a coroutine, one in
    :data:`_RECORD_EVERY` is recorded: the census counts the others with the sites
    sampled for the same coroutine (a pile of tasks comes from few sites, and is large).
    """

    def __init__(self, classifier: FrameClassifier | None = None) -> None:
        self.classifier = classifier or default_classifier()
        self.sites = _Book()
        # (code, lasti) of the first frame outside asyncio -> [site, agreeing walks]
        self._by_call_site: dict[tuple[CodeType, int], list[Any]] = {}
        # coroutine code -> [tasks created, the latest site recorded for one of them]
        self.by_code: dict[Any, list[Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Any = None
        self._factory: Any = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Install the factory on ``loop``, wrapping any factory already there."""
        previous = loop.get_task_factory()
        book = self.sites
        entries = book._entries
        by_call_site = self._by_call_site
        by_code = self.by_code
        site_of = self.site_of
        monotonic = time.monotonic
        getframe = sys._getframe
        ref = weakref.ref

        # On every task's path (one per request under uvicorn). Tasks are sampled by
        # coroutine: the first _RECORD_FIRST of each are recorded, then one in
        # _RECORD_EVERY (the census counts the others with the sites sampled for their
        # coroutine); a recorded task whose call site is known costs a look-up.
        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
            if previous is not None:
                task = previous(loop, coro, **kwargs)
            else:
                task = asyncio.Task(coro, loop=loop, **kwargs)
            code = getattr(coro, "cr_code", None)
            seen = by_code.get(code)
            if seen is None:
                if len(by_code) >= _MAX_CODES:
                    by_code.clear()
                seen = by_code[code] = [0, None]
            count = seen[0] = seen[0] + 1
            if count > _RECORD_FIRST and count % _RECORD_EVERY:
                return task
            frame: FrameType | None = getframe(1)
            while frame is not None and frame.f_code.co_filename.startswith(_ASYNCIO_DIR):
                frame = frame.f_back
            known = None if frame is None else by_call_site.get((frame.f_code, frame.f_lasti))
            if known is not None and known[1] >= _STABLE_AFTER and known[1] % _RECHECK_EVERY:
                known[1] += 1
                site = known[0]
                if site is not _UNSTABLE and len(entries) < book._prune_at:
                    seen[1] = site
                    try:  # noqa: SIM105 - contextlib.suppress costs a Python call per task
                        entries[id(task)] = (ref(task), site, monotonic())
                    except TypeError:  # a factory may return what cannot be weakly referenced
                        pass
                    return task
            site = site_of(frame)
            seen[1] = site
            try:  # noqa: SIM105
                book.add(task, site, monotonic())
            except TypeError:
                pass
            return task

        loop.set_task_factory(factory)
        self._loop, self._previous, self._factory = loop, previous, factory

    def site_of(self, frame: FrameType | None) -> Site | None:
        """The creation site for a task created by ``frame`` (or a frame above it)."""
        while frame is not None and frame.f_code.co_filename.startswith(_ASYNCIO_DIR):
            frame = frame.f_back
        if frame is None:
            return None
        code = frame.f_code
        key = (code, frame.f_lasti)
        known = self._by_call_site.get(key)
        if known is None:
            found = _walk(frame, self.classifier)
            if len(self._by_call_site) < 4096:  # call sites are few; keep memory bounded
                # An application frame is its own answer: reusable at once.
                classifier = self.classifier
                own = classifier.kind(code.co_filename) is _APPLICATION
                self._by_call_site[key] = [found, _STABLE_AFTER if own else 1]
            return found
        site, agreed = known
        if site is _UNSTABLE:
            return _walk(frame, self.classifier)
        known[1] = agreed + 1
        if agreed >= _STABLE_AFTER and agreed % _RECHECK_EVERY:
            return site  # type: ignore[no-any-return]
        found = _walk(frame, self.classifier)
        if found != site:
            known[0] = _UNSTABLE  # walks disagree: this call site is always walked
        return found

    def uninstall(self) -> None:
        """Put the previous factory back, unless someone replaced ours since."""
        loop = self._loop
        if loop is not None and loop.get_task_factory() is self._factory:
            loop.set_task_factory(self._previous)
        self._loop = None

    def get(self, task: asyncio.Task[Any]) -> tuple[Site | None, float | None]:
        """Where and when ``task`` was created, as far as known."""
        found = self.sites.get(task)
        return (None, None) if found is None else found


def _walk(frame: FrameType | None, classifier: FrameClassifier) -> Site | None:
    """The innermost application frame from ``frame`` up (else the first outside asyncio)."""
    kinds = classifier.kinds
    kind_of = classifier.kind
    fallback: Site | None = None
    for _ in range(_MAX_WALK):
        if frame is None:
            break
        code = frame.f_code
        filename = code.co_filename
        if (kinds.get(filename) or kind_of(filename)) is _APPLICATION:
            return (filename, frame.f_lineno or 0, code.co_name)
        if fallback is None and not filename.startswith(_ASYNCIO_DIR):
            fallback = (filename, frame.f_lineno or 0, code.co_name)
        frame = frame.f_back
    return fallback


@dataclass(frozen=True)
class Group:
    """Pending tasks of one coroutine from one creation site."""

    coroutine: str
    defined_at: str
    created_at: str | None
    count: int

    @property
    def key(self) -> str:
        """What the trend follows: the creation site, else the coroutine's definition."""
        return f"{self.created_at or self.defined_at} {self.coroutine}"


@dataclass(frozen=True)
class Snapshot:
    """One census."""

    at: float
    total: int
    groups: tuple[Group, ...]
    oldest: tuple[dict[str, Any], ...] = ()
    piling_up: tuple[str, ...] = field(default=())


class TaskCensus:
    """Counts pending tasks of one loop by coroutine and creation site; spots pile-ups."""

    def __init__(
        self,
        emit: Emit,
        *,
        interval: float = 10.0,
        history: int = 60,
        growth_samples: int = 3,
        min_growth: int = 100,
        top: int = 50,
        requests: RequestsView | None = None,
        classifier: FrameClassifier | None = None,
    ) -> None:
        self.emit = emit
        self.interval = interval
        self.history: collections.deque[Snapshot] = collections.deque(maxlen=history)
        self.growth_samples = growth_samples
        self.min_growth = min_growth
        self.top = top
        self.requests = requests
        self.creation = CreationSites(classifier)
        self.listeners: list[Callable[[Snapshot], None]] = []
        self._flagged: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    @property
    def latest(self) -> Snapshot | None:
        """The most recent census."""
        return self.history[-1] if self.history else None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Install the creation-site factory and schedule censuses (on the loop)."""
        self._loop = loop
        self.creation.install(loop)
        self._handle = loop.call_later(self.interval, self._periodic)

    def stop(self) -> None:
        """Stop counting and remove the factory (on the loop)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.creation.uninstall()

    def _periodic(self) -> None:
        try:
            self.take()
        finally:
            if self._loop is not None and self._handle is not None:
                self._handle = self._loop.call_later(self.interval, self._periodic)

    def take(self) -> Snapshot:
        """Count now (on the loop), record the snapshot and flag sites that pile up."""
        assert self._loop is not None
        tasks = asyncio.all_tasks(self._loop)
        # Count by raw keys and format per group only: this runs on the loop, and a
        # service with 10,000 pending tasks must not stall because it is being counted.
        counts: collections.Counter[tuple[Any, Site | None]] = collections.Counter()
        # The oldest ten in a bounded heap (negated ages): no per-task objects that survive
        # the loop, so counting does not itself set off a collection.
        aged: list[tuple[float, int, asyncio.Task[Any]]] = []
        lookup = self.creation.sites.get
        unrecorded: collections.Counter[Any] = collections.Counter()
        for task in tasks:
            found = lookup(task)
            coro = task.get_coro()
            code = getattr(coro, "cr_code", None) or type(coro)
            if found is None:
                unrecorded[code] += 1
                continue
            counts[(code, found[0])] += 1
            if len(aged) < 10:
                heapq.heappush(aged, (-found[1], id(task), task))
            elif -found[1] > aged[0][0]:
                heapq.heapreplace(aged, (-found[1], id(task), task))
        self._attribute(counts, unrecorded)
        now = time.monotonic()
        groups = tuple(
            Group(*_describe_code(code), site_text(site), n)
            for (code, site), n in counts.most_common(self.top)
        )
        oldest = tuple(
            {
                "task": task.get_name(),
                "coroutine": coroutine_of(task)[0],
                "created_at": site_text(self.creation.get(task)[0]),
                "age_s": round(now - created, 1),
            }
            for created, _, task in sorted((-c, i, t) for c, i, t in aged)
        )
        snapshot = Snapshot(now, len(tasks), groups, oldest)
        self.history.append(snapshot)
        snapshot = self._trend(snapshot)
        for listener in self.listeners:
            listener(snapshot)
        return snapshot

    def _attribute(
        self,
        counts: collections.Counter[tuple[Any, Site | None]],
        unrecorded: collections.Counter[Any],
    ) -> None:
        """Count the tasks that were not sampled with the sites sampled for their
        coroutine, in proportion (else with the latest site seen for it)."""
        recorded_sites: dict[Any, list[tuple[Site | None, int]]] = {}
        for (code, site), n in counts.items():
            if code in unrecorded:
                recorded_sites.setdefault(code, []).append((site, n))
        for code, missing in unrecorded.items():
            sites = recorded_sites.get(code)
            if not sites:
                seen = self.creation.by_code.get(code)
                counts[(code, seen[1] if seen is not None else None)] += missing
                continue
            recorded = sum(n for _, n in sites)
            shares = [(site, missing * n / recorded) for site, n in sites]
            given = 0
            for site, share in shares:
                counts[(code, site)] += int(share)
                given += int(share)
            # What rounding left goes to the largest shares' remainders.
            by_remainder = sorted(shares, key=lambda item: int(item[1]) - item[1])
            for site, _ in by_remainder[: missing - given]:
                counts[(code, site)] += 1

    def _trend(self, latest: Snapshot) -> Snapshot:
        window = list(self.history)[-(self.growth_samples + 1) :]
        if len(window) < self.growth_samples + 1:
            return latest
        piling: list[str] = []
        for group in latest.groups:
            series = [_count(s, group.key) for s in window]
            steps = [b - a for a, b in itertools.pairwise(series)]
            # Never shrinking, growing more than once, by enough: a pile, not a burst.
            rising = min(steps) >= 0 and sum(1 for step in steps if step > 0) >= 2
            if rising and series[-1] - series[0] >= self.min_growth:
                piling.append(group.key)
                if group.key not in self._flagged:
                    self._flagged.add(group.key)
                    self.emit(_pile_up_notice(group, series, self.interval))
        self._flagged.intersection_update(piling)
        latest = Snapshot(latest.at, latest.total, latest.groups, latest.oldest, tuple(piling))
        self.history[-1] = latest
        return latest

    def tasks(self, limit: int = 200) -> dict[str, Any]:
        """Pending tasks with their await chains, oldest first, at most ``limit`` (on the loop)."""
        assert self._loop is not None
        now = time.monotonic()
        listed = []
        for task in asyncio.all_tasks(self._loop):
            site, created = self.creation.get(task)
            if created is None:  # not sampled: the latest site sampled for its coroutine
                seen = self.creation.by_code.get(getattr(task.get_coro(), "cr_code", None))
                site = seen[1] if seen is not None else None
            listed.append((created if created is not None else 0.0, task, site))
        listed.sort(key=lambda t: t[0])
        entries = []
        for created, task, site in listed[:limit]:
            name, defined = coroutine_of(task)
            info = self.requests.for_task(task) if self.requests is not None else None
            entries.append(
                {
                    "name": task.get_name(),
                    "coroutine": name,
                    "defined_at": defined,
                    "created_at": site_text(site),
                    "age_s": round(now - created, 3) if created else None,
                    "request": info.describe() if info is not None else None,
                    "awaiting": await_chain(task),
                }
            )
        return {"total": len(listed), "shown": len(entries), "tasks": entries}


def _describe_code(code: Any) -> tuple[str, str]:
    if isinstance(code, CodeType):
        return code.co_qualname, f"{short_path(code.co_filename)}:{code.co_firstlineno}"
    return getattr(code, "__qualname__", "?"), "?"


def _count(snapshot: Snapshot, key: str) -> int:
    return sum(g.count for g in snapshot.groups if g.key == key)


def _pile_up_notice(group: Group, series: list[int], interval: float) -> Notice:
    def message() -> str:
        counts = " -> ".join(str(n) for n in series)
        return (
            f"tasks piling up: {group.count} pending {group.coroutine} "
            f"(defined at {group.defined_at}) created at {group.created_at or 'an unknown site'};"
            f" count over the last censuses, {interval:g} s apart: {counts}"
        )

    return Notice(f"tasks:{group.key}", message)


def snapshot_dict(snapshot: Snapshot | None) -> dict[str, Any] | None:
    """A census as JSON-ready data."""
    if snapshot is None:
        return None
    return {
        "age_s": round(time.monotonic() - snapshot.at, 3),
        "total": snapshot.total,
        "piling_up": list(snapshot.piling_up),
        "groups": [
            {
                "coroutine": g.coroutine,
                "defined_at": g.defined_at,
                "created_at": g.created_at,
                "count": g.count,
            }
            for g in snapshot.groups
        ],
        "oldest": list(snapshot.oldest),
    }
