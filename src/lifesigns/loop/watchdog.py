"""The watchdog thread: sees the loop stall while it is frozen, and samples the frame.

It sleeps on ``Event.wait`` until the moment the loop would count as stalled (the last
beat plus the threshold), so a healthy service costs it a few wake-ups a second and no
stack walk at all. When the loop has not beaten in time it samples the loop thread only
(``sys._current_frames()`` and a raw frame walk, no source read), classifies the stall,
and hands a :class:`~lifesigns.loop.report.StallReport` to ``emit``; while the stall lasts
it samples again at growing intervals (threshold x 2, 4, 8..., at most ``max_interval``
apart, at most ``max_samples`` kept); when the loop beats again it emits one
:class:`~lifesigns.loop.report.StallEnded`.

Rules it keeps (research note, section (e)): it never logs, formats or reads source; it
never calls a loop API (only the loop's ``call_soon_threadsafe`` is thread-safe, and it
does not need even that); it takes no lock the loop thread may hold; the GIL-held case
is covered by :class:`~lifesigns.loop.faulthandler_guard.GilGuard`.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._frames import FrameClassifier
from .classify import CpuMeter, CpuSample, Evidence, GcClock, StallClass, classify
from .faulthandler_guard import GilGuard
from .heartbeat import Heartbeat
from .report import StallBegan, StallContinues, StallEnded, StallReport, StallSample
from .stacks import Stack, signature, thread_stack

if TYPE_CHECKING:
    from ..host import RequestsView  # a protocol: the edge's RequestTracker is one

Emit = Callable[[object], None]
Tick = Callable[[float], None]

_QUICK_SAMPLES = 3
_QUICK_GAP = 0.01


class Watchdog:
    """Watches one :class:`Heartbeat` from a daemon thread.

    ``threshold``: seconds without a beat that make a stall. ``gil_margin``: how late
    its own wake-up may be before that lateness counts as the GIL being held.
    ``ticks`` run on every healthy wake-up (the thread-pool saturation check).
    """

    def __init__(
        self,
        heartbeat: Heartbeat,
        *,
        threshold: float,
        emit: Emit,
        gil_guard: GilGuard | None = None,
        gc_clock: GcClock | None = None,
        requests: RequestsView | None = None,
        ticks: list[Tick] | None = None,
        max_samples: int = 12,
        max_interval: float = 30.0,
        classifier: FrameClassifier | None = None,
    ) -> None:
        self.heartbeat = heartbeat
        self.classifier = classifier
        self.threshold = threshold
        self.emit = emit
        self.gil_guard = gil_guard
        self.gc_clock = gc_clock
        self.requests = requests
        self.ticks = list(ticks or [])
        self.max_samples = max_samples
        self.max_interval = max_interval
        self.gil_margin = min(0.1, max(0.03, threshold * 0.4))
        self.poll = min(0.1, max(0.01, threshold / 5))
        self.current: StallReport | None = None
        """The stall in progress, as last sampled (``None`` while the loop beats)."""
        self.stalls = 0
        self._numbers = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._meter: CpuMeter | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # State of the stall in progress, touched by the watchdog thread only.
        self._evidence_start: CpuSample | None = None
        self._late = 0.0
        self._gil = False
        self._interval = threshold
        self._due = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the thread; the heartbeat must already beat (its thread ids are known)."""
        if self._thread is not None:
            return
        self._loop = loop
        self._meter = CpuMeter(self.heartbeat.thread_id, self.heartbeat.native_id)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lifesigns-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and wait for it up to ``timeout`` seconds."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread ----------------------------------------------------------------

    def _run(self) -> None:
        assert self._meter is not None
        hb = self.heartbeat
        seen_late = hb.late_count
        baseline = self._meter.sample()
        planned = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            late = max(0.0, now - planned)
            stall = self.current
            if stall is None:
                if hb.late_count != seen_late:
                    self._missed(hb.late_count - seen_late, late)
                    seen_late = hb.late_count
                last = hb.last
                if now - last >= self.threshold:
                    stall = self._begin(last, now, late, baseline)
                    planned = self._next_sample(stall, now)
                else:
                    baseline = self._meter.sample()
                    for tick in self.ticks:
                        tick(now)
                    planned = last + self.threshold
            elif hb.last != stall.began:
                self._end(stall, hb.last)
                seen_late = hb.late_count
                baseline = self._meter.sample()
                planned = hb.last + self.threshold
            else:
                if now >= self._due:
                    self._resample(stall, now)
                planned = min(self._due, now + self.poll)
            self._stop.wait(max(0.001, planned - time.monotonic()))

    def _begin(self, last: float, now: float, late: float, baseline: CpuSample) -> StallReport:
        assert self._meter is not None
        # A collection holds the GIL too: lateness it explains says nothing of C code. A
        # long one is the stall itself (the C dump saw where); short ones inside busy
        # Python leave the Python path to see the frame.
        gc_pause = self._gc_longest(last, now) >= 0.5 * (now - last)
        woke_late, late = late, max(0.0, late - self._gc(now - late, now))
        gil_stacks = None
        if late < self.gil_margin and not gc_pause and self.gil_guard is not None:
            self.gil_guard.disarm()  # we can run: the Python path sees the frame
        elif self.gil_guard is not None:
            gil_stacks = self.gil_guard.take()
        samples: list[StallSample] = []
        if gil_stacks is not None:
            dumped = gil_stacks.get(self.heartbeat.thread_id, ())
            if dumped:
                samples.append(StallSample(now, dumped, None, "faulthandler"))
        first_cpu = self._meter.sample()
        for i in range(_QUICK_SAMPLES):
            if i and (self._stop.wait(_QUICK_GAP) or self.heartbeat.last != last):
                break
            stack, blocker = thread_stack(self.heartbeat.thread_id, classifier=self.classifier)
            if gil_stacks is None or not samples:
                samples.append(StallSample(time.monotonic(), stack, blocker))
        after = self._meter.sample()
        # Measure CPU inside the stall when we can; when we woke late (the GIL was held)
        # the stall is over by now and only the window since the last healthy look holds it.
        inside = self.heartbeat.last == last and woke_late < self.gil_margin
        start = first_cpu if inside and after.at - first_cpu.at > 0.005 else baseline
        task, request = self._attribution()
        evidence = self._evidence(start, after, last, late, gil_stacks, samples)
        # Run-queue waits are judged over the longer window: 20 ms of them is noise.
        longer = Evidence.between(baseline, after)
        evidence = replace(evidence, run_delay=None, throttled=None)
        if longer.run_delay is not None or longer.throttled is not None:
            scale = evidence.wall / longer.wall
            evidence = replace(
                evidence,
                run_delay=None if longer.run_delay is None else longer.run_delay * scale,
                throttled=None if longer.throttled is None else longer.throttled * scale,
            )
        self.stalls += 1
        report = StallReport(
            number=next(self._numbers),
            began=last,
            began_wall=time.time() - (now - last),
            detected=now,
            samples=tuple(samples),
            stall_class=classify(evidence, self.gil_margin),
            request=request,
            task=task,
            late=woke_late >= self.gil_margin and gil_stacks is not None,
        )
        self._evidence_start = start
        self._late = late
        self._gil = gil_stacks is not None
        self._interval = self.threshold
        self._due = now + self.threshold
        self.current = report
        self.emit(StallBegan(report))
        return report

    def _next_sample(self, stall: StallReport, now: float) -> float:
        return min(self._due, now + self.poll)

    def _resample(self, stall: StallReport, now: float) -> None:
        assert self._meter is not None
        stack, blocker = thread_stack(self.heartbeat.thread_id, classifier=self.classifier)
        if self.heartbeat.last != stall.began:
            return  # the loop moved on while we looked: the sample would mislead
        report = stall.with_sample(StallSample(now, stack, blocker), self.max_samples)
        report = self._reclassify(report, self._meter.sample())
        self._interval = min(self._interval * 2, self.max_interval)
        self._due = now + self._interval
        self.current = report
        self.emit(StallContinues(report))

    def _end(self, stall: StallReport, beat: float) -> None:
        assert self._meter is not None
        report = self._reclassify(stall, self._meter.sample())
        report = replace(report, ended=beat)
        if self.gil_guard is not None:
            self.gil_guard.take()  # discard a dump of a stall we saw ourselves
        self.current = None
        self.emit(StallEnded(report))

    def _reclassify(self, report: StallReport, now_cpu: CpuSample) -> StallReport:
        if report.stall_class is StallClass.C_HOLDING_GIL:
            return report  # only the C dump saw the stall: later samples are after it
        sigs: list[Stack] = [s.stack for s in report.samples if s.source == "watchdog"]
        evidence = Evidence.between(
            self._evidence_start or now_cpu,
            now_cpu,
            span=now_cpu.at - report.began,
            gc_seconds=self._gc(report.began, now_cpu.at),
            gc_longest=self._gc_longest(report.began, now_cpu.at),
            watchdog_late=self._late,
            gil_dump=self._gil,
            signatures=[signature(s) for s in sigs],
        )
        return replace(report, stall_class=classify(evidence, self.gil_margin))

    def _missed(self, count: int, late: float) -> None:
        """Report stalls that began and ended while this thread could not run."""
        hb = self.heartbeat
        dumped = self.gil_guard.take() if self.gil_guard is not None else None
        stack = dumped.get(hb.thread_id, ()) if dumped else ()
        entries = list(hb.late)[-min(count, len(hb.late)) :] if count else []
        for beat, gap in entries:
            if gap < self.threshold:
                continue
            began = beat - gap
            samples: tuple[StallSample, ...] = ()
            if stack:
                samples = (StallSample(began + self.threshold, stack, None, "faulthandler"),)
            # The collector holds the GIL too: its own clock tells a GC pause apart.
            if self._gc_longest(began, beat) >= 0.5 * gap:
                stall_class = StallClass.GC_PAUSE
            elif stack or late >= self.gil_margin:
                stall_class = StallClass.C_HOLDING_GIL
            else:
                stall_class = StallClass.UNKNOWN
            report = StallReport(
                number=next(self._numbers),
                began=began,
                began_wall=time.time() - (time.monotonic() - began),
                detected=time.monotonic(),
                samples=samples,
                stall_class=stall_class,
                ended=beat,
                late=True,
            )
            stack = ()  # one dump describes one stall
            self.stalls += 1
            self.emit(StallBegan(report))
            self.emit(StallEnded(report))

    # -- evidence ------------------------------------------------------------------

    def _gc(self, start: float, end: float) -> float:
        return 0.0 if self.gc_clock is None else self.gc_clock.seconds_between(start, end)

    def _gc_longest(self, start: float, end: float) -> float:
        return 0.0 if self.gc_clock is None else self.gc_clock.longest_between(start, end)

    def _evidence(
        self,
        before: CpuSample,
        after: CpuSample,
        began: float,
        late: float,
        gil_stacks: dict[int, Stack] | None,
        samples: list[StallSample],
    ) -> Evidence:
        return Evidence.between(
            before,
            after,
            span=after.at - began,
            gc_seconds=self._gc(began, after.at),
            gc_longest=self._gc_longest(began, after.at),
            watchdog_late=late,
            gil_dump=gil_stacks is not None,
            signatures=[signature(s.stack) for s in samples if s.source == "watchdog"],
        )

    def _attribution(self) -> tuple[str | None, dict[str, Any] | None]:
        loop = self._loop
        if loop is None:
            return None, None
        try:
            task = asyncio.current_task(loop)
        except RuntimeError:
            return None, None
        if task is None:
            return None, None
        coro = task.get_coro()
        name = f"{task.get_name()} ({getattr(coro, '__qualname__', type(coro).__name__)})"
        info = self.requests.for_task(task) if self.requests is not None else None
        request = None
        if info is not None:
            request = {
                "method": info.method,
                "route": info.route,
                "path": info.path,
                "request_id": info.request_id,
            }
        return name, request
