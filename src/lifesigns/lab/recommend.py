"""Recommendations: similar orders, scored in pure Python (incident ``cpu-bound``)."""

from __future__ import annotations

import time


def _score(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    common = sum(1 for x, y in zip(a, b, strict=False) if x == y)
    return common / max(1, len(a))


async def similar_orders(order_id: int, seconds: float = 2.0) -> list[int]:
    """Orders most like ``order_id``: every pair scored on the event loop (the incident)."""
    catalogue = [tuple((i * 7 + j) % 13 for j in range(24)) for i in range(400)]
    mine = catalogue[order_id % len(catalogue)]
    best: list[tuple[float, int]] = []
    ends = time.perf_counter() + seconds
    while time.perf_counter() < ends:  # a bound, so the lab's incident ends by itself
        best = sorted(
            ((_score(mine, other), n) for n, other in enumerate(catalogue)), reverse=True
        )[:5]
    return [n for _, n in best]
