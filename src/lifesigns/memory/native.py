"""The figures that tell native growth from Python growth.

When RSS grows and the Python heap does not, the memory is native: a C extension's
buffers, memory obtained with ``malloc`` outside Python, or glibc arenas that fragment
under many threads. glibc's ``mallinfo2()`` (2.33 and later, read through ``ctypes``)
says how much of the C heap is in use, free inside arenas, or mapped directly; the thread
count says whether per-thread arenas are the suspect. memray is the tool for the next
step (``memray attach PID``), named in the report.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["MallocStats", "malloc_stats"]


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        ("arena", ctypes.c_size_t),
        ("ordblks", ctypes.c_size_t),
        ("smblks", ctypes.c_size_t),
        ("hblks", ctypes.c_size_t),
        ("hblkhd", ctypes.c_size_t),
        ("usmblks", ctypes.c_size_t),
        ("fsmblks", ctypes.c_size_t),
        ("uordblks", ctypes.c_size_t),
        ("fordblks", ctypes.c_size_t),
        ("keepcost", ctypes.c_size_t),
    ]


@dataclass(frozen=True)
class MallocStats:
    """glibc's view of the C heap, in bytes (``None`` fields where unavailable)."""

    in_use: int
    """Bytes handed out by malloc and not freed (arenas plus direct mappings)."""
    free_in_arenas: int
    """Bytes free inside the arenas: fragmentation when large next to ``in_use``."""
    mapped: int
    """Bytes in blocks malloc mapped directly (large allocations)."""
    arena: int
    """Bytes of the main arena obtained with sbrk."""
    threads: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, in MB."""
        mb = 1048576
        return {
            "malloc_in_use_mb": round(self.in_use / mb, 1),
            "malloc_free_in_arenas_mb": round(self.free_in_arenas / mb, 1),
            "malloc_mapped_mb": round(self.mapped / mb, 1),
            "malloc_arena_mb": round(self.arena / mb, 1),
            "threads": self.threads,
        }


@functools.cache
def _mallinfo2() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        function = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _Mallinfo2
    function.argtypes = []
    return function


def malloc_stats() -> MallocStats | None:
    """Read glibc's malloc statistics now, or ``None`` where glibc has no ``mallinfo2``.

    ``mallinfo2`` walks the arenas under their locks: microseconds for a service's heap.
    """
    function = _mallinfo2()
    if function is None:
        return None
    info = function()
    return MallocStats(
        in_use=int(info.uordblks + info.hblkhd),
        free_in_arenas=int(info.fordblks),
        mapped=int(info.hblkhd),
        arena=int(info.arena),
        threads=threading.active_count(),
    )
