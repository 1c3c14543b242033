"""Bulkheads on their own (issue 4): limits, waits, the error, the decorator, the sync form."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lifesigns import Lifesigns
from lifesigns.db.bulkhead import Bulkhead, BulkheadFull, current_bulkhead
from lifesigns.errors import ConfigError, Degraded
from lifesigns.metrics.core import render


async def test_async_bulkhead_admits_at_most_its_limit_in_arrival_order():
    batch = Bulkhead("batch", 3, timeout=5)
    inside, peak, order = 0, 0, []

    async def unit(number: int) -> None:
        nonlocal inside, peak
        async with batch:
            assert current_bulkhead.get() == "batch"
            inside += 1
            peak = max(peak, inside)
            order.append(number)
            await asyncio.sleep(0.02)
            inside -= 1

    await asyncio.gather(*(unit(n) for n in range(10)))
    assert peak == 3
    assert order == list(range(10))
    assert current_bulkhead.get() is None
    assert batch.state()["acquired"] == 10
    assert batch.in_use == 0


async def test_waiting_past_the_timeout_names_the_bulkhead_its_limit_and_the_wait():
    batch = Bulkhead("batch", 1, timeout=0.2)
    async with batch:
        started = time.monotonic()
        with pytest.raises(BulkheadFull) as caught:
            await batch.acquire()
        waited = time.monotonic() - started
    assert 0.18 <= waited < 1.0
    message = str(caught.value)
    assert "bulkhead 'batch' is full: 1 of 1 connections in use" in message
    assert "timeout 0.2 s" in message
    assert isinstance(caught.value, TimeoutError)
    assert batch.rejected == 1
    assert batch.in_use == 0
    async with batch:  # the slot is free again
        pass


async def test_a_cancelled_waiter_gives_no_slot_away():
    batch = Bulkhead("batch", 1, timeout=5)
    await batch.acquire()
    waiter = asyncio.create_task(batch.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    batch.release()
    assert batch.in_use == 0
    assert batch.waiting == 0


def test_sync_bulkhead_limits_threads_and_refuses_the_event_loop():
    batch = Bulkhead("reports", 2, timeout=5)
    inside, peak = 0, 0
    lock = threading.Lock()

    @batch
    def unit() -> str:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        time.sleep(0.02)
        with lock:
            inside -= 1
        return "done"

    threads = [threading.Thread(target=unit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert peak == 2
    assert unit() == "done"

    async def on_the_loop() -> None:
        with batch:
            pass

    with pytest.raises(RuntimeError, match="would block the event loop"):
        asyncio.run(on_the_loop())


async def test_decorated_async_function_runs_inside_the_bulkhead():
    batch = Bulkhead("batch", 1, timeout=5)

    @batch
    async def unit(x: int) -> tuple[int, str | None]:
        return x * 2, current_bulkhead.get()

    assert await unit(21) == (42, "batch")


async def test_sync_and_async_waiters_share_one_limit():
    batch = Bulkhead("mixed", 1, timeout=5)
    await batch.acquire()
    entered = threading.Event()

    def thread_unit() -> None:
        with batch:
            entered.set()

    thread = threading.Thread(target=thread_unit)
    thread.start()
    await asyncio.sleep(0.05)
    assert not entered.is_set()
    batch.release()
    await asyncio.to_thread(thread.join, 5)
    assert entered.is_set()
    assert batch.in_use == 0


async def test_lifesigns_bulkhead_shows_in_health_and_metrics():
    signs = Lifesigns(service="orders")
    batch = signs.bulkhead("batch", max_connections=2, timeout=0.05)
    assert signs.bulkhead("batch", max_connections=2, timeout=0.05) is batch
    with pytest.raises(ConfigError, match="already exists"):
        signs.bulkhead("batch", max_connections=5)
    with pytest.raises(ConfigError, match="max_connections=0"):
        signs.bulkhead("other", max_connections=0)

    check = signs.checks.get("bulkheads")
    assert check is not None
    assert not check.critical
    assert (await check.func())["batch"]["limit"] == 2
    await batch.acquire()
    await batch.acquire()
    with pytest.raises(BulkheadFull):
        await batch.acquire()
    with pytest.raises(Degraded, match="bulkhead 'batch' \\(limit 2\\) turned work away"):
        await check.func()
    text = render(signs.registry).decode()
    assert 'lifesigns_bulkhead_limit{bulkhead="batch"} 2.0' in text
    assert 'lifesigns_bulkhead_in_use{bulkhead="batch"} 2.0' in text
    assert 'lifesigns_bulkhead_rejections_total{bulkhead="batch"} 1.0' in text
    assert "lifesigns_bulkhead_wait_seconds_bucket" in text
