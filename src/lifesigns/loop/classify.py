"""Why the loop stalled: code running, C holding the GIL, a blocking call, CPU starvation, GC.

A heartbeat that is late says *that* the loop froze, not *why*: the same lag comes from
code that spins, a call that sleeps in the kernel, a process the kernel will not
schedule, and the garbage collector (research note, pitfall 9). The watchdog gathers
evidence over the stall and :func:`classify` weighs it:

* the loop thread's CPU time against wall time (``pthread_getcpuclockid``): near zero
  means it waits in a system call with the GIL released (``time.sleep``, a socket, a lock);
* its run-queue delay (``/proc/self/task/<tid>/schedstat``) and the cgroup's throttled
  time (``cpu.stat``): a thread that wants a CPU and gets little of one is starved, not
  guilty;
* garbage-collection time inside the stall (``gc.callbacks``): a pause when one
  collection covers most of the stall, not when busy code collects often;
* whether the watchdog thread itself woke late while the faulthandler timer fired: then
  C code held the GIL, and only the C-level dump saw the frame;
* stack samples: the same frames each time (stuck) or different ones (busy, moving).
"""

from __future__ import annotations

import contextlib
import enum
import gc
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_CGROUP_STATS = ("/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/cpu/cpu.stat")


class StallClass(enum.StrEnum):
    """What the loop thread was doing while the loop did not beat."""

    PYTHON_STUCK = "python-stuck"
    PYTHON_MOVING = "python-moving"
    C_HOLDING_GIL = "c-holding-gil"
    SYSCALL = "syscall"
    CPU_STARVED = "cpu-starved"
    GC_PAUSE = "gc-pause"
    UNKNOWN = "unknown"

    @property
    def description(self) -> str:
        """A phrase for reports: ``blocked in a system call (GIL released)``."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    StallClass.PYTHON_STUCK: "Python code running, stuck on one frame",
    StallClass.PYTHON_MOVING: "Python code running, busy and moving",
    StallClass.C_HOLDING_GIL: "C code holding the GIL",
    StallClass.SYSCALL: "blocked in a system call (GIL released)",
    StallClass.CPU_STARVED: "process starved of CPU",
    StallClass.GC_PAUSE: "garbage-collection pause",
    StallClass.UNKNOWN: "cause unknown",
}


@dataclass(frozen=True)
class CpuSample:
    """CPU counters of the loop thread and the process at one instant (seconds)."""

    at: float
    thread_cpu: float | None
    run_delay: float | None
    throttled: float | None
    process_cpu: float


class CpuMeter:
    """Reads the loop thread's CPU time and run-queue delay, and cgroup throttling.

    Built on the loop thread's ids; read from the watchdog thread. Each counter that
    cannot be read here (another OS, a locked-down ``/proc``) reads as ``None``.
    """

    def __init__(self, thread_ident: int, native_id: int) -> None:
        self._clock: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self._clock = time.pthread_getcpuclockid(thread_ident)
        self._schedstat: str | None = f"/proc/self/task/{native_id}/schedstat"
        self._cgroup = next((p for p in _CGROUP_STATS if os.access(p, os.R_OK)), None)

    def sample(self) -> CpuSample:
        """The counters now."""
        return CpuSample(
            at=time.monotonic(),
            thread_cpu=self._thread_cpu(),
            run_delay=self._run_delay(),
            throttled=self._throttled(),
            process_cpu=time.process_time(),
        )

    def _thread_cpu(self) -> float | None:
        if self._clock is None:
            return None
        try:
            return time.clock_gettime(self._clock)
        except OSError:  # the thread is gone
            self._clock = None
            return None

    def _run_delay(self) -> float | None:
        if self._schedstat is None:
            return None
        try:
            with open(self._schedstat, "rb") as f:
                return int(f.read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            self._schedstat = None
            return None

    def _throttled(self) -> float | None:
        if self._cgroup is None:
            return None
        try:
            with open(self._cgroup, "rb") as f:
                for line in f:
                    key, _, value = line.partition(b" ")
                    if key == b"throttled_usec":
                        return int(value) / 1e6
                    if key == b"throttled_time":
                        return int(value) / 1e9
        except (OSError, ValueError):
            self._cgroup = None
        return None


class GcClock:
    """Times garbage collections through ``gc.callbacks``; a bounded history of pauses."""

    def __init__(self, history: int = 256) -> None:
        self.running_since: float | None = None
        self.pauses: deque[tuple[float, float]] = deque(maxlen=history)
        self._installed = False

    def install(self) -> None:
        """Start timing collections."""
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        """Stop timing collections."""
        if self._installed:
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(self._callback)
            self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.running_since = time.monotonic()
        elif self.running_since is not None:
            now = time.monotonic()
            self.pauses.append((now, now - self.running_since))
            self.running_since = None

    def longest_between(self, start: float, end: float) -> float:
        """The longest single collection's overlap with ``[start, end]`` (seconds)."""
        longest = 0.0
        for ended, duration in list(self.pauses):
            began = ended - duration
            longest = max(longest, min(ended, end) - max(began, start))
        running = self.running_since
        if running is not None:
            longest = max(longest, end - max(running, start))
        return max(0.0, longest)

    def seconds_between(self, start: float, end: float) -> float:
        """Seconds of collection that overlapped ``[start, end]``."""
        total = 0.0
        for ended, duration in list(self.pauses):
            began = ended - duration
            total += max(0.0, min(ended, end) - max(began, start))
        running = self.running_since
        if running is not None:
            total += max(0.0, end - max(running, start))
        return total


@dataclass(frozen=True)
class Evidence:
    """What the watchdog saw over one window of a stall."""

    wall: float
    thread_cpu: float | None = None
    run_delay: float | None = None
    throttled: float | None = None
    gc_seconds: float = 0.0
    watchdog_late: float = 0.0
    gil_dump: bool = False
    signatures: Sequence[object] = ()
    span: float | None = None
    """Seconds from the stall's start (the last beat) to the end of the window: what
    ``gc_seconds`` is measured over, which may be longer than the CPU window ``wall``."""
    gc_longest: float | None = None
    """The longest single collection inside the stall (``None``: judge ``gc_seconds``)."""

    @classmethod
    def between(
        cls,
        before: CpuSample,
        after: CpuSample,
        **known: Any,
    ) -> Evidence:
        """Evidence from two CPU samples, plus whatever else is ``known``."""

        def delta(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else max(0.0, b - a)

        return cls(
            wall=max(after.at - before.at, 1e-9),
            thread_cpu=delta(before.thread_cpu, after.thread_cpu),
            run_delay=delta(before.run_delay, after.run_delay),
            throttled=delta(before.throttled, after.throttled),
            **known,
        )

    @property
    def cpu_ratio(self) -> float | None:
        """Share of the window the loop thread spent on a CPU."""
        return None if self.thread_cpu is None else self.thread_cpu / self.wall


def classify(evidence: Evidence, gil_margin: float) -> StallClass:
    """The most likely class of a stall, from the strongest evidence down.

    ``gil_margin`` is how late the watchdog may wake before its lateness means that
    something held the GIL it needed.
    """
    e = evidence
    if e.wall <= 0:
        return StallClass.UNKNOWN
    # A pause is one collection that froze the loop for most of the stall, judged against
    # the whole stall (not the shorter CPU window): the many short collections of code
    # that allocates while it computes are that code's stall, not the collector's.
    collected = e.gc_seconds if e.gc_longest is None else e.gc_longest
    if collected >= 0.5 * max(e.span or 0.0, e.wall):
        return StallClass.GC_PAUSE
    ratio = e.cpu_ratio
    throttled = (e.throttled or 0.0) >= 0.5 * e.wall
    waiting = (e.run_delay or 0.0) + (e.throttled or 0.0)
    if waiting >= 0.7 * e.wall and ratio is not None and ratio < 0.2:
        # Hardly on a CPU and queued for one nearly all the time: starved, even when the
        # watchdog woke late (the starved thread held the GIL while it waited).
        return StallClass.CPU_STARVED
    if e.gil_dump and e.watchdog_late >= gil_margin and not throttled:
        # No Python thread ran (the watchdog woke late) while the C timer could: the GIL
        # was held. A thread that also waited for a CPU still held it meanwhile.
        return StallClass.C_HOLDING_GIL
    # Starved only when waiting for a CPU dominates and the loop thread got little of one:
    # code that ran for half the stall on a busy machine is still the code's stall.
    if throttled or (waiting >= 0.5 * e.wall and (ratio is None or ratio < 0.35)):
        return StallClass.CPU_STARVED
    if ratio is not None and ratio < 0.3:
        return StallClass.SYSCALL
    if len(e.signatures) >= 2:
        first = e.signatures[0]
        if all(s == first for s in e.signatures[1:]):
            return StallClass.PYTHON_STUCK
        return StallClass.PYTHON_MOVING
    if e.watchdog_late >= gil_margin:
        return StallClass.C_HOLDING_GIL
    return StallClass.PYTHON_STUCK if e.signatures else StallClass.UNKNOWN


def current_thread_ids() -> tuple[int, int]:
    """``(ident, native_id)`` of the calling thread: call it on the loop thread."""
    return threading.get_ident(), threading.get_native_id()
