"""One stall of a chosen class, made by real code and watched by the loop layer's parts.

``python -m tests.apps.stall_classes CASE`` wires a heartbeat, the watchdog, the GC clock
and the GIL guard as :class:`lifesigns.loop.LoopWatch` does (threshold 0.1 s), stalls
its event loop once, and prints one JSON line per report: ``{"event": "began" | "ended",
"class": ..., "source": ..., "headline": ...}``. The cases (issue 10, item 7):

* ``python``: CPU-bound Python that allocates (the garbage collector runs now and then);
* ``gc``: a full collection of three million objects (``gc.collect()``);
* ``syscall``: ``time.sleep`` (the GIL released in the kernel);
* ``gil``: a catastrophic regular expression (C code that keeps the GIL);
* ``starved``: a short computation while a CPU hog takes the loop thread's CPU (the loop
  thread pinned beside the hog at the lowest priority; the watchdog on another CPU).

The process raises its own priority where it may (real-time round robin as root), so
that the machine's other load does not starve the cases that are not about starvation.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from lifesigns.loop.classify import GcClock
from lifesigns.loop.faulthandler_guard import GilGuard, available
from lifesigns.loop.heartbeat import Heartbeat, interval_for
from lifesigns.loop.report import StallBegan, StallEnded, headline
from lifesigns.loop.watchdog import Watchdog

THRESHOLD = 0.1
_garbage: list[object] = []


def python_cpu() -> None:
    """1.5 s of Python that allocates containers, some of which survive."""
    end = time.monotonic() + 1.5
    kept: list[dict[str, object]] = []
    while time.monotonic() < end:
        kept.append({"n": len(kept), "tags": [1, 2, 3]})
        if len(kept) > 200_000:
            kept = kept[100_000:]


def prepare_gc() -> None:
    """Three million tracked objects for a collection to walk, built and moved to the
    oldest generation before the loop is watched. Automatic collections stay off, so
    that the one pause is the one this case makes."""
    gc.disable()
    _garbage.extend([i] for i in range(3_000_000))
    gc.collect()


def gc_pause() -> None:
    """A full collection over the prepared objects."""
    gc.collect()


def syscall() -> None:
    """A blocking system call with the GIL released."""
    time.sleep(0.6)


def gil() -> None:
    """Backtracking in C, holding the GIL: a second or two here."""
    re.search(r"(a+)+$", "a" * 23 + "b")


_hog: list[subprocess.Popen[bytes]] = []


def prepare_starved() -> None:
    """Start a CPU hog pinned to the CPU the loop thread will share with it."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print(json.dumps({"event": "skip", "why": f"needs 2 CPUs, has {cpus}"}), flush=True)
        sys.exit(0)
    code = (
        f"import os\nos.sched_setaffinity(0, {{{cpus[0]}}})\nprint('spinning', flush=True)\n"
        "while True: pass\n"
    )
    hog = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    _hog.append(hog)
    assert hog.stdout is not None and hog.stdout.readline() == b"spinning\n"


def starved() -> None:
    """30 ms of computing, which takes the starved loop thread seconds (2 at most)."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[0]})  # this (the loop) thread only, beside the hog
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    start, end = time.thread_time(), time.monotonic() + 2.0
    try:
        while time.thread_time() - start < 0.03 and time.monotonic() < end:
            pass
    finally:
        for hog in _hog:
            hog.kill()


CASES: dict[str, tuple[Callable[[], None] | None, Callable[[], None]]] = {
    "python": (None, python_cpu),
    "gc": (prepare_gc, gc_pause),
    "syscall": (None, syscall),
    "gil": (None, gil),
    "starved": (prepare_starved, starved),
}


def _boost() -> None:
    """Round-robin real-time priority where allowed (root), else a better nice value:
    the other load of a shared machine must not starve the cases about something else.
    Threads started later inherit it; the watchdog's is raised one step above it, so
    that it preempts the loop thread it watches as it would on an idle machine."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, -10)


async def run(case: str) -> None:
    """Watch the loop, stall it once with ``case``, and print the reports."""
    prepare, stall = CASES[case]
    margin = min(0.1, max(0.03, THRESHOLD * 0.4))
    guard = GilGuard(THRESHOLD + margin, rearm_every=margin / 2) if available() else None
    clock = GcClock()
    events: list[object] = []

    def on_beat(now: float, lag: float) -> None:
        if guard is not None:
            guard.arm(now)

    beat = Heartbeat(interval_for(THRESHOLD), late_after=THRESHOLD, on_beat=on_beat)
    dog = Watchdog(beat, threshold=THRESHOLD, emit=events.append, gil_guard=guard, gc_clock=clock)
    if prepare is not None:
        prepare()
    loop = asyncio.get_running_loop()
    clock.install()
    if guard is not None:
        guard.open()
    beat.start(loop)
    dog.start(loop)
    thread = dog._thread
    assert thread is not None and thread.native_id is not None
    with contextlib.suppress(OSError, AttributeError):  # above the loop thread, when root
        os.sched_setscheduler(thread.native_id, os.SCHED_RR, os.sched_param(2))
    if case == "starved":
        os.sched_setaffinity(thread.native_id, set(sorted(os.sched_getaffinity(0))[1:]))
    try:
        await asyncio.sleep(0.6)  # healthy beats first
        stall()
        deadline = time.monotonic() + 10
        while not any(isinstance(e, StallEnded) for e in events):
            assert time.monotonic() < deadline, "the stall never ended"
            await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(dog.stop)
        beat.stop()
        if guard is not None:
            guard.close()
        clock.uninstall()
    for event in events:
        if isinstance(event, StallBegan | StallEnded):
            report = event.report
            first = report.first
            print(
                json.dumps(
                    {
                        "event": "began" if isinstance(event, StallBegan) else "ended",
                        "class": report.stall_class.value,
                        "source": first.source if first else None,
                        "late": report.late,
                        "headline": headline(report),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    _boost()
    asyncio.run(run(sys.argv[1]))
