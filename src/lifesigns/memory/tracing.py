"""A time-boxed tracemalloc comparison: which lines' allocations grew, then tracing off.

tracemalloc costs about 3.3x in run time while it traces (python/cpython#151935), so it
is never left on: :meth:`Tracing.begin` starts it, :meth:`Tracing.finish` (due after the
time box) compares a snapshot taken then with one taken at the start, and stops
tracing again unless someone else had started it. Only allocations made during the box
and still alive at its end count, which is what a leak is.
"""

from __future__ import annotations

import datetime as dt
import linecache
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._frames import short_path

_IGNORED = (
    tracemalloc.__file__,
    "<frozen importlib._bootstrap>",
    "<frozen importlib._bootstrap_external>",
    "<unknown>",
    linecache.__file__,
)


@dataclass(frozen=True)
class GrowingLine:
    """A line whose live allocations grew during the box."""

    filename: str
    lineno: int
    size_diff: int
    count_diff: int
    size: int

    @property
    def source(self) -> str:
        """The line's source text, stripped."""
        return linecache.getline(self.filename, self.lineno).strip()

    @property
    def where(self) -> str:
        """``app/cache.py:42``, the path as :func:`lifesigns._frames.short_path` prints it."""
        return f"{short_path(self.filename)}:{self.lineno}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with sizes in KiB."""
        return {
            "where": self.where,
            "source": self.source,
            "grew_kib": round(self.size_diff / 1024, 1),
            "new_blocks": self.count_diff,
            "live_kib": round(self.size / 1024, 1),
        }


@dataclass(frozen=True)
class TraceReport:
    """The result of one box: the top growing lines, biggest first."""

    seconds: float
    finished_at: float
    lines: list[GrowingLine] = field(default_factory=list)
    total_growth: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "state": "done",
            "traced_s": round(self.seconds, 2),
            "finished_at": dt.datetime.fromtimestamp(self.finished_at, tz=dt.UTC)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z"),
            "total_growth_kib": round(self.total_growth / 1024, 1),
            "top": [line.as_dict() for line in self.lines],
        }


class Tracing:
    """One tracemalloc box at a time; thread-safe (dumps run on any thread)."""

    def __init__(self, seconds: float, top: int = 10, frames: int = 8) -> None:
        self.seconds = seconds
        self.top = top
        self.frames = frames
        self._lock = threading.Lock()
        self._began: float | None = None
        self._started_tracing = False
        self._baseline: tracemalloc.Snapshot | None = None
        self.report: TraceReport | None = None
        self._delivered = True

    @property
    def due(self) -> float | None:
        """``time.monotonic()`` at which the running box ends, or ``None``."""
        began = self._began
        return None if began is None else began + self.seconds

    @property
    def running(self) -> bool:
        """Whether a box is open."""
        return self._began is not None

    def begin(self) -> bool:
        """Open a box now (unasked: on leak suspicion); ``False`` if one is already open."""
        with self._lock:
            if self._began is not None:
                return False
            self._begin()
            self._delivered = True
        return True

    def request(self) -> dict[str, Any]:
        """Serve the on-demand dump: start a box, report progress, or hand over the result.

        The first call starts a box; calls during it say how long is left; the first call
        after it ends returns the comparison; the call after that starts a new box.
        """
        with self._lock:
            if self._began is not None:
                left = self._began + self.seconds - time.monotonic()
                return {"state": "tracing", "remaining_s": round(max(0.0, left), 2)}
            if self.report is not None and not self._delivered:
                self._delivered = True
                return self.report.as_dict()
            self._begin()
        return {
            "state": "tracing",
            "remaining_s": self.seconds,
            "note": f"tracemalloc is on for {self.seconds:g} s (the process runs slower); "
            "ask again afterwards for the lines whose allocations grew",
        }

    def _begin(self) -> None:
        self._started_tracing = not tracemalloc.is_tracing()
        if self._started_tracing:
            tracemalloc.start(self.frames)
        self._baseline = tracemalloc.take_snapshot()
        self._began = time.monotonic()

    def finish(self, while_tracing: Callable[[], object] | None = None) -> TraceReport | None:
        """End the running box if it is due: compare, stop tracing, keep the report.

        ``while_tracing`` runs after the last snapshot and before tracing stops, so it may
        ask tracemalloc where live objects were allocated. The snapshot and comparison
        run outside the lock, so a dump asking meanwhile gets "tracing" at once.
        """
        with self._lock:
            began, baseline = self._began, self._baseline
            if began is None or baseline is None or time.monotonic() < began + self.seconds:
                return None
            self._baseline = None
        try:
            snapshot = tracemalloc.take_snapshot()
            if while_tracing is not None:
                while_tracing()
        finally:
            if self._started_tracing:
                tracemalloc.stop()
        report = self._compare(baseline, snapshot, time.monotonic() - began)
        with self._lock:
            self.report, self._delivered, self._began = report, False, None
        return report

    def cancel(self) -> None:
        """Stop a running box without a report (at shutdown)."""
        with self._lock:
            if self._began is not None and self._started_tracing:
                tracemalloc.stop()
            self._began, self._baseline = None, None

    def _compare(
        self, baseline: tracemalloc.Snapshot, snapshot: tracemalloc.Snapshot, seconds: float
    ) -> TraceReport:
        filters = [tracemalloc.Filter(False, pattern) for pattern in _IGNORED]
        filters.append(tracemalloc.Filter(False, __file__))
        diffs = snapshot.filter_traces(filters).compare_to(
            baseline.filter_traces(filters), "lineno"
        )
        growing = [d for d in diffs if d.size_diff > 0]
        lines = [
            GrowingLine(
                d.traceback[0].filename, d.traceback[0].lineno, d.size_diff, d.count_diff, d.size
            )
            for d in growing[: self.top]
        ]
        return TraceReport(seconds, time.time(), lines, sum(d.size_diff for d in growing))
