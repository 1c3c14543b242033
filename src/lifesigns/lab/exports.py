"""Exports: CSV files written under one lock (incident ``thread-starvation``).

Sync ``def`` endpoints run in anyio's thread pool, 40 threads by default. Here each
export takes a process-wide lock that a slow export holds: 40 requests are enough to
block every worker thread, and every other sync endpoint queues behind them.
"""

from __future__ import annotations

import threading
import time

_export_lock = threading.Lock()


def write_orders_csv(rows: int = 100) -> str:
    """The CSV of the last ``rows`` orders (simulated), one export at a time."""
    with _export_lock:  # the incident: every worker thread waits here
        return "id,item,quantity\n" + "".join(f"{n},item-{n},1\n" for n in range(rows))


def hold_the_lock(seconds: float) -> None:
    """A slow export that keeps the lock for ``seconds`` (the lab's trigger)."""

    def slow() -> None:
        with _export_lock:
            time.sleep(seconds)

    threading.Thread(target=slow, name="slow-export", daemon=True).start()
