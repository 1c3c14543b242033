"""Stall reports: what the watchdog hands over, and the thread that formats and logs it.

The watchdog never formats, reads source or logs: a logging handler may hold a lock the
frozen loop thread took (a network handler blocked mid-``emit``), and the watchdog would
freeze with it (research note, pitfall 6). It puts immutable events on a
``queue.SimpleQueue``, which needs no lock a user thread could hold, and the
:class:`Reporter` thread turns them into log records on logger ``lifesigns.loop``,
updates the history and the metrics, and rate-limits repeats:

* one report when a stall is detected, while it lasts;
* re-samples at growing intervals, at ``DEBUG``;
* exactly one "stall ended" record with the total duration, for every report logged;
* a site that stalls again and again is logged at most ``burst`` times per ``window``
  seconds; the next record logged for it says how many were left out.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .classify import StallClass
from .stacks import (
    Blocker,
    Stack,
    call_at,
    call_in_line,
    describe_stack,
    first_app_frame,
    signature,
)

logger = logging.getLogger("lifesigns.loop")


@dataclass(frozen=True)
class StallSample:
    """One look at the loop thread during a stall."""

    at: float
    stack: Stack
    blocker: Blocker | None = None
    source: str = "watchdog"
    """``watchdog`` (sampled by the Python thread) or ``faulthandler`` (the C timer)."""


@dataclass(frozen=True)
class StallReport:
    """One stall of the event loop, as known so far.

    Times are ``time.monotonic()`` seconds; ``began`` is the last beat before the stall.
    """

    number: int
    began: float
    began_wall: float
    detected: float
    samples: tuple[StallSample, ...]
    stall_class: StallClass
    request: dict[str, Any] | None = None
    task: str | None = None
    ended: float | None = None
    late: bool = False
    """The watchdog could not run during the stall and learned of it afterwards."""

    @property
    def first(self) -> StallSample | None:
        """The first sample: the frame the loop was frozen in when the stall was seen."""
        return self.samples[0] if self.samples else None

    @property
    def stack(self) -> Stack:
        """The stack of the first sample."""
        return self.samples[0].stack if self.samples else ()

    @property
    def duration(self) -> float | None:
        """Total seconds without a beat, once ended."""
        return None if self.ended is None else self.ended - self.began

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds without a beat: the total once ended, else so far."""
        end = self.ended if self.ended is not None else (now or time.monotonic())
        return end - self.began

    @property
    def site_key(self) -> str:
        """What groups repeated stalls: the innermost application frame (else the innermost)."""
        frame = first_app_frame(self.stack) or (self.stack[0] if self.stack else None)
        return "unknown" if frame is None else f"{frame.filename}:{frame.lineno} {frame.name}"

    def with_sample(self, sample: StallSample, keep: int) -> StallReport:
        """A copy with ``sample`` added; the first sample and the latest ``keep - 1`` stay."""
        samples = (*self.samples, sample)
        if len(samples) > keep:
            samples = (samples[0], *samples[-(keep - 1) :])
        return replace(self, samples=samples)


# -- wording (on the reporter or a server thread, never the watchdog) ---------------


def short_site(report: StallReport) -> str:
    """The grouping site with a readable path: ``tests/apps/stalls.py:40 sleepy``."""
    frame = first_app_frame(report.stack) or (report.stack[0] if report.stack else None)
    return "unknown" if frame is None else frame.site


def where(report: StallReport) -> str:
    """``tests/apps/stalls.py:40 sleepy, time.sleep``: the app frame and what it called."""
    sample = report.first
    if sample is None or not sample.stack:
        return "an unknown frame"
    frame = first_app_frame(sample.stack)
    if frame is None:
        return sample.stack[0].site
    called = None
    if sample.blocker is not None:
        called = call_at(sample.blocker.code, sample.blocker.lasti)
    if called is None:
        called = call_in_line(frame.filename, frame.lineno)
    return f"{frame.site}, {called}" if called else frame.site


def during(report: StallReport) -> str:
    """``during GET /reports/{id} (request 7)``, or ``in task Task-3``, or nothing."""
    if report.request:
        r = report.request
        return f" during {r['method']} {r['route']} (request {r['request_id']})"
    if report.task:
        return f" in task {report.task}"
    return ""


def headline(report: StallReport, now: float | None = None) -> str:
    """``loop stalled 12.4 s in app/reports.py:88 build_report, time.sleep, during GET ...``."""
    return f"loop stalled {report.stalled_for(now):.1f} s in {where(report)}{during(report)}"


def format_began(report: StallReport, suppressed: int = 0) -> str:
    """The stall report logged when a stall is detected."""
    lead = "loop stalled" if not report.late else "loop was stalled"
    so_far = "so far" if report.ended is None else "in all"
    lines = [
        f"{lead} {report.stalled_for():.2f} s {so_far} in {where(report)}{during(report)}; "
        f"class: {report.stall_class.description}"
    ]
    if report.late:
        lines[0] += "; the watchdog could not run during it"
    if suppressed:
        lines[0] += f"; {suppressed} earlier stall(s) at this site were not logged"
    sample = report.first
    if sample is not None:
        lines.append(f"  stack from {sample.source}, innermost first (* = application code):")
        lines.extend(f"  {line}" for line in describe_stack(sample.stack))
    return "\n".join(lines)


def format_ended(report: StallReport) -> str:
    """The one "stall ended" record, with the total duration."""
    shapes = {signature(s.stack) for s in report.samples}
    moved = "stuck on one frame" if len(shapes) <= 1 else f"{len(shapes)} different stacks"
    return (
        f"loop stall ended after {report.duration or 0.0:.2f} s: {where(report)}"
        f"{during(report)}; class: {report.stall_class.description}; "
        f"{len(report.samples)} sample(s), {moved}"
    )


# -- events ------------------------------------------------------------------------


@dataclass(frozen=True)
class StallBegan:
    """The watchdog detected a stall (or learned of one it could not see)."""

    report: StallReport


@dataclass(frozen=True)
class StallContinues:
    """A re-sample during a stall."""

    report: StallReport


@dataclass(frozen=True)
class StallEnded:
    """The loop beat again."""

    report: StallReport


@dataclass(frozen=True)
class Notice:
    """Anything else to log from a thread that must not log: ``message`` at ``level``."""

    key: str
    message: Callable[[], str]
    level: int = logging.WARNING


# -- rate limiting and history -----------------------------------------------------


class SiteLimiter:
    """Allows ``burst`` records per site per ``window`` seconds; counts what it refuses.

    At most ``max_sites`` sites are remembered (the least recently seen is forgotten).
    """

    def __init__(self, burst: int = 3, window: float = 600.0, max_sites: int = 256) -> None:
        self.burst = burst
        self.window = window
        self.max_sites = max_sites
        self._sites: collections.OrderedDict[str, tuple[collections.deque[float], int]] = (
            collections.OrderedDict()
        )

    def allow(self, site: str, now: float) -> tuple[bool, int]:
        """Whether to log for ``site`` now, and how many were refused since the last one."""
        times, refused = self._sites.pop(site, (collections.deque(maxlen=self.burst), 0))
        while times and now - times[0] >= self.window:
            times.popleft()
        if len(times) < self.burst:
            times.append(now)
            self._sites[site] = (times, 0)
            allowed, count = True, refused
        else:
            self._sites[site] = (times, refused + 1)
            allowed, count = False, refused + 1
        while len(self._sites) > self.max_sites:
            self._sites.popitem(last=False)
        return allowed, count


@dataclass
class SiteStats:
    """Repeated stalls at one site."""

    site: str
    count: int = 0
    total_seconds: float = 0.0
    longest: float = 0.0
    last_at: float = 0.0
    classes: collections.Counter[str] = field(default_factory=collections.Counter)


class StallHistory:
    """Recent stalls (a ring) and counts by site (bounded); safe to read from any thread."""

    def __init__(self, recent: int = 64, max_sites: int = 128) -> None:
        self._lock = threading.Lock()  # only lifesigns' own threads ever take it
        self.recent: collections.deque[StallReport] = collections.deque(maxlen=recent)
        self._sites: collections.OrderedDict[str, SiteStats] = collections.OrderedDict()
        self._max_sites = max_sites
        self.longest = 0.0
        self.total = 0

    def record(self, report: StallReport) -> None:
        """Add an ended stall."""
        duration = report.duration or 0.0
        with self._lock:
            self.recent.append(report)
            self.total += 1
            self.longest = max(self.longest, duration)
            stats = self._sites.pop(report.site_key, None) or SiteStats(report.site_key)
            stats.count += 1
            stats.total_seconds += duration
            stats.longest = max(stats.longest, duration)
            stats.last_at = report.began_wall
            stats.classes[report.stall_class.value] += 1
            self._sites[report.site_key] = stats
            while len(self._sites) > self._max_sites:
                self._sites.popitem(last=False)

    def snapshot(self) -> tuple[list[StallReport], list[SiteStats]]:
        """Copies of the recent stalls and the site counts (most stalls first)."""
        with self._lock:
            recent = list(self.recent)
            sites = [
                replace(s, classes=collections.Counter(s.classes)) for s in self._sites.values()
            ]
        sites.sort(key=lambda s: (-s.count, -s.longest))
        return recent, sites


def report_dict(report: StallReport, now: float | None = None) -> dict[str, Any]:
    """A stall as JSON-ready data (for ``/debug/stalls``)."""
    return {
        "number": report.number,
        "headline": headline(report, now),
        "class": report.stall_class.value,
        "class_description": report.stall_class.description,
        "began_at": _iso(report.began_wall),
        "stalled_s": round(report.stalled_for(now), 3),
        "ongoing": report.ended is None,
        "detected_after_s": round(report.detected - report.began, 3),
        "late": report.late,
        "request": report.request,
        "task": report.task,
        "stack": [f.site + (" [app]" if f.app else "") for f in report.stack[:40]],
        "samples": [
            {
                "after_s": round(s.at - report.began, 3),
                "source": s.source,
                "top": s.stack[0].site if s.stack else None,
            }
            for s in report.samples
        ],
    }


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"


# -- the reporter thread ------------------------------------------------------------


Listener = Callable[[object], None]


class Reporter:
    """Drains the event queue on its own thread: logs, records history, feeds listeners."""

    def __init__(
        self,
        history: StallHistory,
        limiter: SiteLimiter,
        listeners: list[Listener] | None = None,
        log: logging.Logger = logger,
    ) -> None:
        self.queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.history = history
        self.limiter = limiter
        self.listeners = list(listeners or [])
        self.log = log
        self._logged: collections.deque[int] = collections.deque(maxlen=256)
        self._thread: threading.Thread | None = None

    def put(self, event: object) -> None:
        """Hand over an event; never blocks, takes no lock a user thread could hold."""
        self.queue.put(event)

    def start(self) -> None:
        """Start the reporter thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="lifesigns-loop-reporter", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Log what is queued, then end the thread (waits up to ``timeout`` seconds)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self.queue.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                return
            try:
                self.handle(event)
            except Exception:  # a reporter that dies would silence every later stall
                self.log.exception("lifesigns could not report %r", type(event).__name__)

    def handle(self, event: object) -> None:
        """Handle one event (public so tests can drive it without the thread)."""
        now = time.monotonic()
        if isinstance(event, StallBegan):
            report = event.report
            allowed, refused = self.limiter.allow(report.site_key, now)
            if allowed:
                self._logged.append(report.number)
                self.log.warning("%s", format_began(report, suppressed=refused))
        elif isinstance(event, StallContinues):
            if event.report.number in self._logged and self.log.isEnabledFor(logging.DEBUG):
                self.log.debug("%s (still stalled)", headline(event.report))
        elif isinstance(event, StallEnded):
            self.history.record(event.report)
            if event.report.number in self._logged:
                self.log.warning("%s", format_ended(event.report))
        elif isinstance(event, Notice):
            allowed, refused = self.limiter.allow(event.key, now)
            if allowed:
                extra = f" ({refused} similar not logged)" if refused else ""
                self.log.log(event.level, "%s%s", event.message(), extra)
        for listener in self.listeners:
            listener(event)
