"""The GIL-held path: a C-level timer that dumps the stacks when no Python thread can.

A watchdog written in Python needs the GIL to run. While C code holds it (a
catastrophic regular expression, a C extension that never releases it) the watchdog
cannot wake, and wakes only after the stall is over, sampling a frame that has moved on.
``faulthandler.dump_traceback_later`` runs a C thread that needs no GIL: re-armed from
the heartbeat (at most every ``rearm_every`` seconds, as each re-arming starts a thread),
it fires only once the loop has missed beats for long enough,
and writes every thread's stack to a pre-opened, unlinked temporary file. The watchdog
reads and parses that file when it next runs, and reports the frame as it was during
the stall.

Hazards (research note, pitfall 2), and what this module does about them:

* faulthandler reads other threads' frames without the GIL; there are rare crash reports.
  The watchdog cancels the timer as soon as it detects a stall itself (it could run, so
  nothing holds the GIL and the Python path sees the frame), so the C dump happens only
  when it is the only way, while C code holds the GIL and no Python runs.
* there is one such timer per process: an application or plugin that uses it conflicts.
  Turn the guard off (``gil_guard=False``) in that case.
* output is ASCII text, at most 100 frames and 100 threads: :func:`parse_dump` reads it.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import re
import sys
import tempfile
from typing import IO

from .._frames import Frame, default_classifier
from .stacks import Stack

_THREAD = re.compile(r"^(?:Current thread|Thread) (0x[0-9a-fA-F]+)")
_FRAME = re.compile(r'^\s+File "(.*)", line (\d+|\?\?\?) in (.*)$')

MAX_DUMP = 1 << 20
"""Largest dump read back (bytes); faulthandler's own limits keep real dumps far smaller."""


def parse_dump(text: str) -> dict[int, Stack]:
    """Stacks by thread id from faulthandler's text, innermost frame first."""
    stacks: dict[int, list[Frame]] = {}
    current: list[Frame] | None = None
    for line in text.splitlines():
        thread = _THREAD.match(line)
        if thread:
            current = stacks.setdefault(int(thread.group(1), 16), [])
            continue
        frame = _FRAME.match(line)
        if frame and current is not None:
            filename, lineno, name = frame.groups()
            number = int(lineno) if lineno.isdigit() else 0
            current.append(default_classifier().frame(filename, number, name))
    return {tid: tuple(frames) for tid, frames in stacks.items()}


def available() -> bool:
    """Whether the guard can run here (not on free-threaded builds, where it races)."""
    gil_enabled = getattr(sys, "_is_gil_enabled", None)
    return gil_enabled is None or bool(gil_enabled())


class GilGuard:
    """Arms ``faulthandler.dump_traceback_later`` from the heartbeat; reads what it wrote.

    ``timeout`` is how long the loop may miss beats before the C timer dumps; set it a
    little above the stall threshold, so the Python watchdog normally gets there first.
    Re-arming starts a C thread (about 90 µs here), so it is done at most every
    ``rearm_every`` seconds; the timer then fires between ``timeout - rearm_every`` and
    ``timeout`` after the loop's last beat.
    """

    def __init__(self, timeout: float, rearm_every: float) -> None:
        self.timeout = timeout
        self.rearm_every = rearm_every
        self._file: IO[bytes] | None = None
        self._armed_at = -1e9
        self.fired = 0

    @property
    def active(self) -> bool:
        """Whether the guard holds its file and may arm the timer."""
        return self._file is not None

    def open(self) -> None:
        """Create the dump file (call at start, on the loop)."""
        if self._file is None:
            # Kept open for the lifespan: faulthandler writes to its descriptor.
            self._file = tempfile.TemporaryFile(prefix="lifesigns-gil-")  # noqa: SIM115

    def arm(self, now: float) -> None:
        """(Re-)arm the timer: called by the heartbeat on the loop thread."""
        if self._file is None or now - self._armed_at < self.rearm_every:
            return
        faulthandler.dump_traceback_later(self.timeout, repeat=False, file=self._file, exit=False)
        self._armed_at = now

    def disarm(self) -> None:
        """Cancel the timer (the watchdog saw the stall itself; no C dump is needed)."""
        if self._file is not None:
            faulthandler.cancel_dump_traceback_later()
            self._armed_at = -1e9

    def take(self) -> dict[int, Stack] | None:
        """The stacks the timer dumped since the last call, or ``None`` if it did not fire."""
        if self._file is None:
            return None
        fd = self._file.fileno()
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                return None
            data = os.pread(fd, min(size, MAX_DUMP), 0)
            os.ftruncate(fd, 0)
            # faulthandler writes at the descriptor's offset: rewind it with the truncation.
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError:
            return None
        self.fired += 1
        return parse_dump(data.decode("ascii", "replace"))

    def close(self) -> None:
        """Cancel the timer and drop the file (at stop, on the loop)."""
        if self._file is not None:
            faulthandler.cancel_dump_traceback_later()
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
