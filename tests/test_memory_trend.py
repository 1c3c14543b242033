"""The leak verdict on synthetic samples: Python growth, native growth, a one-off jump."""

from __future__ import annotations

from lifesigns.memory.sampler import BLOCK_BYTES, MemorySample
from lifesigns.memory.trend import Trend

MB = 1024 * 1024


def _trend(rss_mb_per_min: float, heap_mb_per_min: float, jump_at: int | None = None) -> Trend:
    trend = Trend(window=60.0, interval=1.0, threshold_mb_per_min=5.0)
    for second in range(61):
        rss = 200 * MB + rss_mb_per_min * MB * second / 60
        if jump_at is not None and second >= jump_at:
            rss += 100 * MB
        blocks = 1_000_000 + int(heap_mb_per_min * MB * second / 60 / BLOCK_BYTES)
        trend.add(MemorySample(float(second), int(rss), blocks, (0, 0, 0), 0))
    return trend


def test_steady_growth_with_the_heap_is_a_python_leak() -> None:
    verdict = _trend(50, 40).verdict()
    assert verdict.suspected
    assert verdict.kind == "python"
    assert 49 < verdict.rss_mb_per_min < 51
    assert verdict.text.startswith("leak suspected: +50.0 MB/min RSS")
    assert "growth is Python objects" in verdict.text


def test_rss_growth_with_a_flat_heap_is_native_memory() -> None:
    verdict = _trend(50, 0).verdict()
    assert verdict.suspected
    assert verdict.kind == "native"
    assert "MALLOC_ARENA_MAX" in verdict.text


def test_flat_memory_and_a_single_jump_are_not_leaks() -> None:
    assert not _trend(0, 0).verdict().suspected
    assert not _trend(0, 0, jump_at=58).verdict().suspected  # a cache filling once


def test_growth_below_the_threshold_is_reported_but_not_suspected() -> None:
    verdict = _trend(2, 2).verdict()
    assert not verdict.suspected
    assert "+2.0 MB/min" in verdict.text


def test_window_is_a_bounded_ring() -> None:
    trend = Trend(window=10.0, interval=1.0, threshold_mb_per_min=1.0)
    for second in range(1000):
        trend.add(MemorySample(float(second), MB, 1, (0, 0, 0), 0))
    assert len(trend.samples) <= 12
