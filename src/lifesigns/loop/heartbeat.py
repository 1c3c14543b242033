"""The heartbeat: a timer callback the event loop runs every few tens of milliseconds.

Each beat stamps ``time.monotonic()``; a thread that reads the stamp knows how long the
loop has gone without running a callback, which is the definition of a stall. The beat
is scheduled with ``loop.call_later``, so it works on asyncio's loop and on uvloop
alike, with nothing patched (uvloop's handles never call ``asyncio.events.Handle._run``).

Cost: one callback per interval (20 per second at the default threshold), a clock read
and a few attribute stores, plus whatever ``on_beat`` does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable


def interval_for(threshold: float) -> float:
    """The beat interval for a stall threshold: a fifth of it, within 10 to 100 ms.

    A fifth keeps detection within ``threshold + interval`` of the stall's start while
    costing a handful of callbacks a second.
    """
    return min(0.1, max(0.01, threshold / 5))


class Heartbeat:
    """Beats on one event loop; readable from any thread without locks.

    ``late_after`` marks beats whose gap from the previous one exceeds it: they are kept
    in :attr:`late` (a bounded ring) so that a watchdog that could not run during a
    stall (C code held the GIL) still learns of it afterwards.
    """

    def __init__(
        self,
        interval: float,
        *,
        late_after: float,
        on_beat: Callable[[float, float], None] | None = None,
    ) -> None:
        self.interval = interval
        self.late_after = late_after
        self.last = 0.0
        """Monotonic time of the latest beat (0 before the first)."""
        self.late: deque[tuple[float, float]] = deque(maxlen=64)
        """``(beat time, gap)`` of beats that came later than ``late_after``."""
        self.late_count = 0
        self.thread_id = 0
        self.native_id = 0
        self._on_beat = on_beat
        self.publish: Callable[[float], None] | None = None
        """Also given each beat's time: the agent's shared-memory slot (``lifesigns run``)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def running(self) -> bool:
        """Whether the heartbeat is scheduled."""
        return self._handle is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start beating; call it on the loop's own thread, which it records."""
        self.thread_id = threading.get_ident()
        self.native_id = threading.get_native_id()
        self._loop = loop
        now = time.monotonic()
        self.last = now
        self._due = now + self.interval
        self._handle = loop.call_later(self.interval, self._beat)

    def stop(self) -> None:
        """Stop beating (on the loop thread)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def age(self, now: float | None = None) -> float:
        """Seconds since the latest beat (0 when not running)."""
        if self._handle is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self.last

    def _beat(self) -> None:
        now = time.monotonic()
        gap = now - self.last
        lag = max(0.0, now - self._due)
        if gap > self.late_after:
            self.late.append((now, gap))
            self.late_count += 1
        self.last = now
        if self.publish is not None:
            self.publish(now)
        if self._on_beat is not None:
            self._on_beat(now, lag)
        self._due = now + self.interval
        if self._loop is not None and self._handle is not None:
            self._handle = self._loop.call_later(self.interval, self._beat)
