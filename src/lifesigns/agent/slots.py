"""Heartbeat slots in shared memory: each worker's pulse, readable with no help from it.

The agent creates one file (``slots``) in its runtime folder and maps it; every worker maps
the same file and takes a slot by its pid. A slot is a fixed-size record:

========  =====  ==================================================================
offset    type   field
========  =====  ==================================================================
0         u32    ``seq``: even when stable, odd while the worker rewrites the record
4         i32    ``pid`` (0: free)
8         u32    ``generation``: bumped each time the slot is taken
12        u8     ``phase`` (see :data:`PHASES`)
13        u8     ``ready`` (0 or 1)
16        u64    ``beat_ns``: the latest loop heartbeat (``CLOCK_MONOTONIC``)
24        u64    ``taken_ns``: when the slot was taken
32        u64    ``stall_ns``: the worker's own view of the current stall's start (0: none)
40        u64    ``request_ns``: when the request in flight began (0: none)
48        u8     length of the request text that follows
49        127 B  the request in flight, ``METHOD /route`` in UTF-8, truncated
========  =====  ==================================================================

``CLOCK_MONOTONIC`` is one clock for the whole system on Linux, so the agent compares a
worker's beat with its own ``time.monotonic_ns()``. The beat is written alone, 8 aligned
bytes with one ``struct.pack_into`` (no lock, no sequence bump: a beat per tick must stay
cheap); every other field is written under the sequence counter and read with retries,
so a reader never mixes two versions of a request (a seqlock). Slots are taken and freed
under ``fcntl.flock`` on the file; a slot whose pid no longer exists is taken back.

Pure standard library: the agent imports this module, and nothing of the application.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from ..errors import LifesignsError

__all__ = [
    "PHASES",
    "SLOT_SIZE",
    "Slot",
    "SlotTable",
    "SlotView",
    "SlotsFull",
]

MAGIC = b"LSAG"
VERSION = 2
SLOT_SIZE = 176
HEADER_SIZE = 64
REQUEST_BYTES = 123

_HEADER = struct.Struct("<4sIII")  # magic, version, slots, slot size
_SEQ = struct.Struct("<I")
_BEAT = struct.Struct("<Q")
_BEAT_OFFSET = 16
# Everything but seq and beat, in two parts around the beat (pad bytes are written as
# zeros, so the beat must not sit inside a struct): pid, generation, phase, ready; then
# taken, stall, request start, request length, request text.
_HEAD = struct.Struct("<iIBB2x")
_HEAD_OFFSET = 4
_TAIL_BODY = struct.Struct("<QQQB123s")
_CRC = struct.Struct("<I")
_TAIL = struct.Struct("<QQQB123sI")  # ... and a CRC-32 of head and tail: a torn read never passes
_TAIL_OFFSET = 24
assert _HEAD_OFFSET + _HEAD.size == _BEAT_OFFSET
assert _TAIL_OFFSET + _TAIL.size == SLOT_SIZE

PHASES = ("unknown", "created", "starting", "ready", "draining", "stopped", "failed")
"""Phase codes in the slot, by index (the names of :class:`lifesigns.health.Phase`)."""


class SlotsFull(LifesignsError, RuntimeError):
    """Every slot is held by a live process."""


@dataclass(frozen=True, slots=True)
class SlotView:
    """One slot as read at one moment (all times are ``CLOCK_MONOTONIC`` nanoseconds)."""

    index: int
    pid: int
    generation: int
    phase: str
    ready: bool
    beat_ns: int
    taken_ns: int
    stall_ns: int
    request_ns: int
    request: str

    def age(self, now_ns: int | None = None) -> float:
        """Seconds since the latest heartbeat."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        return max(0, now - self.beat_ns) / 1e9


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A zombie still answers kill(0); it beats no more and frees nothing.
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


class SlotTable:
    """The mapped slots file. Build with :meth:`create` (the agent) or :meth:`open`."""

    def __init__(self, path: Path, fd: int, buffer: mmap.mmap, count: int) -> None:
        self.path = path
        self.count = count
        self._fd = fd
        self._last_good: dict[int, tuple[Any, ...]] = {}
        self._map = buffer

    def __repr__(self) -> str:
        return f"<SlotTable {self.path} slots={self.count}>"

    @classmethod
    def create(cls, path: Path | str, count: int = 64) -> Self:
        """Create (or truncate) the file at ``path`` with ``count`` free slots."""
        if not 1 <= count <= 4096:
            raise ValueError(f"count={count!r} is out of range; allowed: 1 to 4096 slots")
        target = Path(path)
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, HEADER_SIZE + count * SLOT_SIZE)
            buffer = mmap.mmap(fd, HEADER_SIZE + count * SLOT_SIZE)
        except BaseException:
            os.close(fd)
            raise
        _HEADER.pack_into(buffer, 0, MAGIC, VERSION, count, SLOT_SIZE)
        return cls(target, fd, buffer, count)

    @classmethod
    def open(cls, path: Path | str) -> Self:
        """Map the file an agent created; ``ValueError`` if it is not a slots file."""
        target = Path(path)
        fd = os.open(target, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise ValueError(f"{target} is not a lifesigns slots file ({size} bytes)")
            buffer = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        magic, version, count, slot_size = _HEADER.unpack_from(buffer, 0)
        if magic != MAGIC or version != VERSION or slot_size != SLOT_SIZE:
            buffer.close()
            os.close(fd)
            raise ValueError(
                f"{target} is not a version-{VERSION} lifesigns slots file "
                f"(magic {magic!r}, version {version}, slot size {slot_size})"
            )
        if size < HEADER_SIZE + count * SLOT_SIZE:
            buffer.close()
            os.close(fd)
            raise ValueError(f"{target} is truncated: {size} bytes for {count} slots")
        return cls(target, fd, buffer, count)

    def close(self) -> None:
        """Unmap and close (slots held stay held: call :meth:`Slot.free` first)."""
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)

    # -- allocation, under the file lock --------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def take(self, pid: int | None = None) -> Slot:
        """Take a slot for ``pid`` (default: this process) and return it.

        A slot the pid already holds is given back as it is; otherwise the first free
        slot, or one whose process has died. Raises :class:`SlotsFull` when every slot
        belongs to a live process.
        """
        owner = os.getpid() if pid is None else pid
        with self._locked():
            free = None
            for index in range(self.count):
                holder = self._pid(index)
                if holder == owner:
                    return Slot(self, index, owner)
                if free is None and (holder == 0 or not _pid_alive(holder)):
                    free = index
            if free is None:
                raise SlotsFull(f"all {self.count} slots of {self.path} are held by live processes")
            generation = self._generation(free) + 1
            now = time.monotonic_ns()
            self._write(free, owner, generation, 0, False, now, 0, 0, "")
            _BEAT.pack_into(self._map, self._offset(free) + _BEAT_OFFSET, now)
            return Slot(self, free, owner)

    def free(self, index: int, pid: int) -> bool:
        """Free slot ``index`` if ``pid`` still holds it; returns whether it did."""
        with self._locked():
            if self._pid(index) != pid:
                return False
            self._write(index, 0, self._generation(index), 0, False, 0, 0, 0, "")
            return True

    def reclaim(self) -> list[int]:
        """Free every slot whose process has died; returns their indexes."""
        freed = []
        with self._locked():
            for index in range(self.count):
                holder = self._pid(index)
                if holder and not _pid_alive(holder):
                    self._write(index, 0, self._generation(index), 0, False, 0, 0, 0, "")
                    freed.append(index)
        return freed

    # -- reading -----------------------------------------------------------------------

    def read(self, index: int) -> SlotView | None:
        """Slot ``index`` as one consistent version, or ``None`` when free.

        Retries while the worker rewrites it, for up to 250 ms (a writer descheduled in the
        middle of a rewrite comes back within a few scheduler ticks); past that (a writer
        that died mid-write) the last consistent version read of that slot is returned, or,
        if there never was one, its identity and times with the request left empty: never
        half of one request and half of another.
        """
        base = self._offset(index)
        body: tuple[Any, ...] = ()
        consistent = False
        give_up = time.monotonic() + 0.25
        attempt = 0
        while True:
            (before,) = _SEQ.unpack_from(self._map, base)
            head = bytes(self._map[base + _HEAD_OFFSET : base + _HEAD_OFFSET + _HEAD.size])
            tail = bytes(self._map[base + _TAIL_OFFSET : base + _TAIL_OFFSET + _TAIL.size])
            (after,) = _SEQ.unpack_from(self._map, base)
            body = _HEAD.unpack(head) + _TAIL_BODY.unpack(tail[: _TAIL_BODY.size])
            (crc,) = _CRC.unpack(tail[_TAIL_BODY.size :])
            never_written = crc == 0 and not any(head) and not any(tail)
            checked = never_written or crc == zlib.crc32(head + tail[:-4])
            if before == after and not before & 1 and checked:
                consistent = True
                break
            attempt += 1
            if attempt % 16 == 0:
                if time.monotonic() > give_up:
                    break
                os.sched_yield()  # let a writer on this core finish its rewrite
        if consistent:
            self._last_good[index] = body
        elif index in self._last_good:
            body = self._last_good[index]
        else:
            body = (*body[:6], 0, 0, b"")  # the request fields are the torn ones
        (beat,) = _BEAT.unpack_from(self._map, base + _BEAT_OFFSET)
        pid, generation, phase, ready, taken, stall, req_ns, length, text = body
        if pid == 0:
            return None
        return SlotView(
            index=index,
            pid=pid,
            generation=generation,
            phase=PHASES[phase] if phase < len(PHASES) else "unknown",
            ready=bool(ready),
            beat_ns=beat,
            taken_ns=taken,
            stall_ns=stall,
            request_ns=req_ns,
            request=text[: min(length, REQUEST_BYTES)].decode("utf-8", "replace"),
        )

    def held(self) -> list[SlotView]:
        """Every slot in use, by index."""
        views = (self.read(i) for i in range(self.count))
        return [v for v in views if v is not None]

    # -- raw access ----------------------------------------------------------------------

    def _offset(self, index: int) -> int:
        if not 0 <= index < self.count:
            raise IndexError(f"slot {index} is out of range; the table has {self.count}")
        return HEADER_SIZE + index * SLOT_SIZE

    def _pid(self, index: int) -> int:
        value: int = struct.unpack_from("<i", self._map, self._offset(index) + 4)[0]
        return value

    def _generation(self, index: int) -> int:
        value: int = struct.unpack_from("<I", self._map, self._offset(index) + 8)[0]
        return value

    def _write(
        self,
        index: int,
        pid: int,
        generation: int,
        phase: int,
        ready: bool,
        taken: int,
        stall: int,
        request_ns: int,
        request: str,
    ) -> None:
        base = self._offset(index)
        (seq,) = _SEQ.unpack_from(self._map, base)
        seq |= 1  # odd: a reader that sees it retries (a dead writer may have left it odd)
        _SEQ.pack_into(self._map, base, seq)
        text = request.encode("utf-8", "replace")[:REQUEST_BYTES]
        head = _HEAD.pack(pid, generation & 0xFFFFFFFF, phase, int(ready))
        tail = _TAIL_BODY.pack(taken, stall, request_ns, len(text), text)
        self._map[base + _HEAD_OFFSET : base + _HEAD_OFFSET + _HEAD.size] = head
        end = base + _TAIL_OFFSET + _TAIL_BODY.size
        self._map[base + _TAIL_OFFSET : end] = tail
        _CRC.pack_into(self._map, end, zlib.crc32(head + tail))
        _SEQ.pack_into(self._map, base, (seq + 1) & 0xFFFFFFFF)


class Slot:
    """One slot, held by one process: the writer's side.

    Not thread-safe for the fields under the sequence counter: callers serialise
    :meth:`publish` themselves. :meth:`beat` may be called from any one thread at any
    time.
    """

    def __init__(self, table: SlotTable, index: int, pid: int) -> None:
        self.table = table
        self.index = index
        self.pid = pid
        self._beat_at = table._offset(index) + _BEAT_OFFSET
        view = table.read(index)
        self.generation = view.generation if view is not None else 0
        self._taken = view.taken_ns if view is not None else time.monotonic_ns()
        self._map = table._map

    def __repr__(self) -> str:
        return f"<Slot {self.index} pid={self.pid} generation={self.generation}>"

    def beat(self, now_ns: int) -> None:
        """Record a heartbeat at ``now_ns`` (``CLOCK_MONOTONIC``): one aligned store."""
        _BEAT.pack_into(self._map, self._beat_at, now_ns)

    def publish(
        self,
        *,
        phase: str,
        ready: bool,
        stall_ns: int = 0,
        request: str = "",
        request_ns: int = 0,
    ) -> None:
        """Rewrite the state fields under the sequence counter."""
        code = PHASES.index(phase) if phase in PHASES else 0
        self.table._write(
            self.index,
            self.pid,
            self.generation,
            code,
            ready,
            self._taken,
            stall_ns,
            request_ns,
            request,
        )

    def free(self) -> bool:
        """Give the slot back (only if this process still holds it)."""
        return self.table.free(self.index, self.pid)
