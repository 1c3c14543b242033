"""Thread-pool saturation: anyio's default limiter, and who holds its tokens.

Sync endpoints, sync dependencies, ``FileResponse`` and ``UploadFile`` all run on
anyio's default thread limiter: 40 tokens per event loop. When all 40 are borrowed,
every further sync call waits, and the service hangs with the loop perfectly healthy
(fastapi/fastapi#3205). :class:`LimiterWatch` reads the limiter's statistics from the
watchdog thread; when it stays full for ``threshold`` seconds it reports it once, with
the stacks of the worker threads that hold the tokens grouped by where they are, and
once more when it drains.

The default ``threshold`` of 5 s: a limiter full for a moment is normal under a burst;
five seconds of every sync call queueing is an incident a user notices.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .report import Notice
from .stacks import Stack, all_stacks, describe_stack, first_app_frame

if TYPE_CHECKING:
    from ..host import RequestsView  # a protocol: the edge's RequestTracker is one

Emit = Callable[[object], None]


@dataclass(frozen=True)
class LimiterStats:
    """The default limiter's numbers at one instant."""

    borrowed: int
    total: float
    waiting: int
    borrowers: tuple[object, ...] = ()

    @property
    def full(self) -> bool:
        """Whether every token is borrowed."""
        return self.total > 0 and self.borrowed >= self.total


@dataclass(frozen=True)
class Holder:
    """Worker threads that hold tokens, grouped by their stack."""

    count: int
    stack: Stack
    threads: tuple[str, ...]


def is_worker_thread(thread: threading.Thread) -> bool:
    """Whether ``thread`` is one of anyio's worker threads (by class, else by name)."""
    cls = type(thread)
    if cls.__name__ == "WorkerThread" and cls.__module__.startswith("anyio."):
        return True
    return thread.name.startswith("AnyIO worker thread")


def _idle(stack: Stack) -> bool:
    # An idle worker waits in queue.get() called from its run(); a busy one runs a function.
    for i, frame in enumerate(stack):
        if frame.name == "run" and frame.filename.endswith(("_asyncio.py", "_trio.py")):
            return i == 0 or (
                stack[i - 1].name == "get" and stack[i - 1].filename.endswith("queue.py")
            )
    return False


def busy_workers() -> list[Holder]:
    """anyio worker threads that are running something, grouped by stack, most first."""
    threads = {t.ident: t for t in threading.enumerate() if is_worker_thread(t)}
    stacks = all_stacks()
    groups: dict[Stack, list[str]] = collections.defaultdict(list)
    for ident, thread in threads.items():
        stack = stacks.get(ident or -1, ())
        if stack and not _idle(stack):
            groups[stack].append(thread.name)
    holders = [Holder(len(names), stack, tuple(names)) for stack, names in groups.items()]
    holders.sort(key=lambda h: -h.count)
    return holders


class LimiterWatch:
    """Watches anyio's default thread limiter of one event loop."""

    def __init__(
        self,
        threshold: float,
        emit: Emit,
        requests: RequestsView | None = None,
    ) -> None:
        self.threshold = threshold
        self.emit = emit
        self.requests = requests
        self.full_since: float | None = None
        self.reported = False
        self.longest = 0.0
        self.saturations = 0
        self.last_holders: list[Holder] = []
        self._limiter: Any = None

    def bind(self) -> None:
        """Find the running loop's default limiter: call it on the event loop."""
        try:
            from anyio.to_thread import current_default_thread_limiter

            self._limiter = current_default_thread_limiter()
        except Exception:  # anyio missing, or no anyio-compatible loop
            self._limiter = None

    def stats(self) -> LimiterStats | None:
        """The limiter's numbers now (from any thread), or ``None`` when there is none."""
        limiter = self._limiter
        if limiter is None:
            return None
        for _ in range(3):
            try:
                s = limiter.statistics()
            except RuntimeError:  # its set of borrowers changed while being copied
                continue
            return LimiterStats(
                int(s.borrowed_tokens), float(s.total_tokens), int(s.tasks_waiting), s.borrowers
            )
        return None

    def tick(self, now: float) -> None:
        """Check once (the watchdog calls it on every healthy wake-up)."""
        stats = self.stats()
        if stats is None:
            return
        if stats.full:
            if self.full_since is None:
                self.full_since = now
            elif not self.reported and now - self.full_since >= self.threshold:
                self.reported = True
                self.saturations += 1
                self.last_holders = busy_workers()
                self.emit(self._saturated(stats, now - self.full_since, self.last_holders))
        elif self.full_since is not None:
            lasted = now - self.full_since
            self.longest = max(self.longest, lasted)
            if self.reported:
                self.emit(
                    Notice(
                        "thread-pool-drained",
                        lambda: f"thread pool no longer saturated after {lasted:.1f} s",
                    )
                )
            self.full_since = None
            self.reported = False

    def _saturated(self, stats: LimiterStats, lasted: float, holders: list[Holder]) -> Notice:
        requests = []
        if self.requests is not None:
            for borrower in stats.borrowers[:100]:
                info = self.requests.for_task(borrower)  # type: ignore[arg-type]
                if info is not None:
                    requests.append(f"{info.method} {info.route}")
        routes = collections.Counter(requests).most_common(5)

        def message() -> str:
            lines = [
                f"thread pool saturated for {lasted:.1f} s: {stats.borrowed} of "
                f"{stats.total:g} tokens of anyio's default limiter borrowed, "
                f"{stats.waiting} waiting"
            ]
            if routes:
                lines[0] += "; held by " + ", ".join(f"{n} x {r}" for r, n in routes)
            for holder in holders[:5]:
                app = first_app_frame(holder.stack)
                top = app.site if app else (holder.stack[0].site if holder.stack else "?")
                lines.append(f"  {holder.count} worker thread(s) at {top}:")
                lines.extend(f"    {line}" for line in describe_stack(holder.stack, limit=12))
            return "\n".join(lines)

        return Notice("thread-pool-saturated", message)

    def dump(self) -> dict[str, Any]:
        """The limiter and its busy workers as JSON-ready data."""
        stats = self.stats()
        now = time.monotonic()
        holders = busy_workers()
        return {
            "limiter": None
            if stats is None
            else {"borrowed": stats.borrowed, "total": stats.total, "waiting": stats.waiting},
            "full_for_s": None if self.full_since is None else round(now - self.full_since, 3),
            "saturations": self.saturations,
            "longest_s": round(self.longest, 3),
            "busy_workers": [
                {
                    "count": h.count,
                    "threads": list(h.threads[:10]),
                    "stack": [f.site + (" [app]" if f.app else "") for f in h.stack[:30]],
                }
                for h in holders
            ],
        }
