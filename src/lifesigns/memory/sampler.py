"""One cheap reading of the process's memory: RSS and the Python heap.

* RSS (resident set size, from psutil): everything the process holds in RAM, Python
  objects or not.
* Python heap: ``sys.getallocatedblocks()``, the blocks pymalloc has handed out, which
  is where small Python objects (ints, strings, dicts, lists, instances) live. It is an
  O(1) read, unlike walking ``gc.get_objects()``.
* gc: objects waiting in each generation and collections so far.

If RSS grows and the heap does not, the growth is native memory: C extensions, large
buffers (``bytes``, arrays, which pymalloc passes to ``malloc``), or glibc arena
fragmentation (``MALLOC_ARENA_MAX=2`` is the usual cure). The time-boxed tracemalloc
comparison tells these apart line by line.
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import dataclass

import psutil

BLOCK_BYTES = 64
"""A typical pymalloc block size in bytes, to express heap growth in MB (an estimate:
blocks range from 16 to 512 bytes; most objects of a leak are small containers and
strings)."""


@dataclass(frozen=True)
class MemorySample:
    """One reading: when (monotonic), RSS bytes, heap blocks, gc state."""

    at: float
    rss: int
    heap_blocks: int
    gc_counts: tuple[int, int, int]
    gc_collections: int

    @property
    def heap_estimate(self) -> int:
        """Heap blocks as an estimate in bytes (see :data:`BLOCK_BYTES`)."""
        return self.heap_blocks * BLOCK_BYTES


class Sampler:
    """Takes :class:`MemorySample` readings of this process; safe from any thread."""

    def __init__(self) -> None:
        self._process = psutil.Process()

    def sample(self) -> MemorySample:
        """Read memory now (a few tens of microseconds)."""
        counts = gc.get_count()
        return MemorySample(
            at=time.monotonic(),
            rss=self._process.memory_info().rss,
            heap_blocks=sys.getallocatedblocks(),
            gc_counts=(counts[0], counts[1], counts[2]),
            gc_collections=sum(s.get("collections", 0) for s in gc.get_stats()),
        )
