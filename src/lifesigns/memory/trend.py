"""The slope of memory over a window, and whether it looks like a leak.

A least-squares line through the samples of the window gives MB per minute for RSS and
for the Python heap. Growth is suspected to be a leak when RSS rises faster than a
threshold *and* steadily (the line explains most of the variation, r² >= 0.5), so a
one-off jump (a cache filling, a big request) does not cry wolf.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .sampler import BLOCK_BYTES, MemorySample

_MB = 1024 * 1024
MIN_SAMPLES = 5


@dataclass(frozen=True)
class Verdict:
    """What the window says: slopes, steadiness, and where the growth is."""

    samples: int
    span_s: float
    rss_mb: float
    rss_mb_per_min: float
    heap_mb_per_min: float
    heap_blocks_per_min: float
    steadiness: float
    suspected: bool
    kind: str
    """``python`` (heap grows with RSS), ``native`` (RSS grows, heap flat), ``mixed``,
    or ``none``."""

    @property
    def text(self) -> str:
        """``leak suspected: +48.1 MB/min RSS ... growth is Python objects``."""
        if self.samples < MIN_SAMPLES:
            return f"memory: {self.rss_mb:.0f} MB RSS; not enough samples yet"
        head = (
            f"leak suspected: +{self.rss_mb_per_min:.1f} MB/min RSS"
            if self.suspected
            else f"memory: {self.rss_mb:.0f} MB RSS, {self.rss_mb_per_min:+.1f} MB/min"
        )
        heap = (
            f"Python heap {self.heap_blocks_per_min:+,.0f} blocks/min "
            f"(about {self.heap_mb_per_min:+.1f} MB/min)"
        )
        where = {
            "python": "growth is Python objects (the heap grows with RSS)",
            "native": "growth is native memory: C extensions, large buffers or malloc "
            "fragmentation, not small Python objects (try MALLOC_ARENA_MAX=2)",
            "mixed": "growth is partly Python objects, partly native memory",
        }.get(self.kind)
        tail = f"; {where}" if self.suspected and where else ""
        return f"{head} over {self.span_s:.0f} s; {heap}{tail}"

    def as_dict(self) -> dict[str, Any]:
        """The verdict as JSON-ready data."""
        return {
            "text": self.text,
            "leak_suspected": self.suspected,
            "growth_kind": self.kind,
            "rss_mb": round(self.rss_mb, 1),
            "rss_mb_per_min": round(self.rss_mb_per_min, 2),
            "heap_mb_per_min_estimate": round(self.heap_mb_per_min, 2),
            "heap_blocks_per_min": round(self.heap_blocks_per_min),
            "steadiness_r2": round(self.steadiness, 3),
            "samples": self.samples,
            "span_s": round(self.span_s, 1),
        }


def _fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Slope of the least-squares line, and r²."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    if sxx == 0:
        return 0.0, 0.0
    slope = sxy / sxx
    r2 = (sxy * sxy) / (sxx * syy) if syy else 0.0
    return slope, r2


class Trend:
    """The samples of the last ``window`` seconds (a bounded ring) and their verdict."""

    def __init__(self, window: float, interval: float, threshold_mb_per_min: float) -> None:
        self.window = window
        self.threshold = threshold_mb_per_min
        self._samples: deque[MemorySample] = deque(maxlen=min(10_000, int(window / interval) + 2))

    def add(self, sample: MemorySample) -> None:
        """Record a sample, forgetting those older than the window."""
        self._samples.append(sample)
        while self._samples and self._samples[0].at < sample.at - self.window:
            self._samples.popleft()

    @property
    def samples(self) -> list[MemorySample]:
        """The samples in the window, oldest first."""
        return list(self._samples)

    def verdict(self) -> Verdict:
        """Slopes and the leak verdict for the current window."""
        samples = list(self._samples)
        rss_mb = samples[-1].rss / _MB if samples else 0.0
        if len(samples) < MIN_SAMPLES:
            return Verdict(len(samples), 0.0, rss_mb, 0.0, 0.0, 0.0, 0.0, False, "none")
        minutes = [(s.at - samples[0].at) / 60.0 for s in samples]
        rss_slope, r2 = _fit(minutes, [s.rss / _MB for s in samples])
        blocks_slope, _ = _fit(minutes, [float(s.heap_blocks) for s in samples])
        heap_slope = blocks_slope * BLOCK_BYTES / _MB
        span = samples[-1].at - samples[0].at
        suspected = span >= min(self.window / 2, 60.0) and rss_slope >= self.threshold and r2 >= 0.5
        kind = "none"
        if rss_slope > 0:
            share = heap_slope / rss_slope
            kind = "python" if share >= 0.25 else "native" if share < 0.08 else "mixed"
        return Verdict(
            len(samples), span, rss_mb, rss_slope, heap_slope, blocks_slope, r2, suspected, kind
        )
