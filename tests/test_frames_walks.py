"""Walking what a task awaits and what a greenlet was switched from (issue 8, item 4)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import greenlet_spawn

from lifesigns._frames import (
    Frame,
    FrameClassifier,
    FrameKind,
    Wait,
    await_chain,
    frames_of,
    parent_greenlet,
    stack_of,
)
from lifesigns.db.sites import SiteCapture, format_frame, resolve
from lifesigns.loop.census import await_chain as census_chain
from lifesigns.tasks.stack import innermost_own_frame

HERE = "tests/test_frames_walks.py"


def names(links: list[Frame | Wait]) -> list[str]:
    return [link.name if isinstance(link, Frame) else f"<{link.what}>" for link in links]


async def test_the_chain_goes_down_coroutines_into_the_future_they_wait_on() -> None:
    async def inner() -> None:
        await asyncio.Event().wait()

    async def outer() -> None:
        await inner()

    task = asyncio.create_task(outer())
    await asyncio.sleep(0)
    try:
        chain = await_chain(task)
        assert names(chain)[:3] == ["outer", "inner", "wait"]
        assert chain[-1] == Wait("future (pending)")
        frames = frames_of(chain)
        assert frames[0].kind is FrameKind.APPLICATION and frames[0].path == HERE
        assert frames[2].kind is FrameKind.STDLIB and frames[2].path == "asyncio/locks.py"
        stuck = innermost_own_frame(frames)
        assert stuck is not None and stuck.name == "inner"
        assert "await asyncio.Event().wait()" in str(stuck)
    finally:
        task.cancel()


async def test_awaiting_another_task_follows_it_through_fut_waiter() -> None:
    async def worker() -> None:
        await asyncio.sleep(30)

    async def boss(job: asyncio.Task[None]) -> None:
        await job

    job = asyncio.create_task(worker(), name="the-worker")
    waiting = asyncio.create_task(boss(job))
    await asyncio.sleep(0.01)
    try:
        chain = names(await_chain(waiting))
        assert chain[:3] == ["boss", "<task the-worker>", "worker"], chain
        assert "sleep" in chain
        assert census_chain(waiting)[0].startswith(f"{HERE}:")  # the census's rendering
        assert "task the-worker" in census_chain(waiting)
    finally:
        job.cancel()
        waiting.cancel()


async def test_gather_is_followed_into_its_first_pending_child() -> None:
    async def quick() -> None:
        return None

    async def slow() -> None:
        await asyncio.sleep(30)

    async def both() -> None:
        await asyncio.gather(quick(), slow())

    task = asyncio.create_task(both())
    await asyncio.sleep(0.01)
    try:
        chain = names(await_chain(task))
        assert chain[0] == "both"
        assert "<gather (1 of 2 pending)>" in chain, chain
        assert chain.index("slow") > chain.index("<gather (1 of 2 pending)>"), chain
    finally:
        task.cancel()


async def test_an_async_generator_is_walked_by_its_own_frame() -> None:
    gate = asyncio.Event()

    async def ticks() -> AsyncGenerator[int, None]:
        await gate.wait()
        yield 1

    generator = ticks()
    step = asyncio.ensure_future(generator.__anext__())
    await asyncio.sleep(0)
    try:
        chain = names(await_chain(generator))
        assert chain[:2] == ["ticks", "wait"], chain
    finally:
        gate.set()
        await step
        await generator.aclose()


async def test_a_finished_task_has_an_empty_chain() -> None:
    async def done() -> int:
        return 1

    task = asyncio.create_task(done())
    await task
    from lifesigns.tasks.stack import await_chain as task_chain

    assert task_chain(task) == []


async def test_the_greenlet_walk_reaches_the_coroutine_that_awaited_sync_code() -> None:
    seen: dict[str, Any] = {}

    def sync_part() -> None:
        parent, frame = parent_greenlet()
        seen["parent"], seen["parent_frame"] = parent, frame
        seen["stack"] = stack_of(sys._getframe(), greenlets=True)
        seen["own_thread_only"] = stack_of(sys._getframe(), greenlets=False)

    async def endpoint() -> None:
        await greenlet_spawn(sync_part)

    await endpoint()
    assert seen["parent"] is not None and seen["parent_frame"] is not None
    walked = [f.name for f in seen["stack"]]
    assert walked[0] == "sync_part" and "endpoint" in walked, walked
    assert "endpoint" not in [f.name for f in seen["own_thread_only"]]
    assert parent_greenlet() == (None, None)  # the main greenlet has no parent


async def test_a_checkout_site_is_the_application_line_across_the_greenlet(
    tmp_path: Path,
) -> None:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        poolclass=AsyncAdaptedQueuePool,
        pool_size=1,
    )
    capture = SiteCapture(depth=4, full_stacks=1.0, classifier=FrameClassifier(inferred=()))
    sites: list[Any] = []

    @event.listens_for(engine.sync_engine, "checkout")
    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        sites.append((capture.capture(1), capture.capture_full(1)))

    async def list_orders() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))  # the checkout line

    try:
        await list_orders()
    finally:
        await engine.dispose()
    (site, full) = sites[0]
    resolved = [resolve(raw) for raw in site]
    assert resolved and all(f[0] == __file__ for f in resolved), resolved
    assert resolved[0][1] == "list_orders"
    assert format_frame(site[0]).startswith(f"{HERE}:")
    full_names = [resolve(raw)[1] for raw in full]
    assert "greenlet_spawn" in full_names and "list_orders" in full_names, full_names


def test_site_capture_classifies_each_file_once(monkeypatch: pytest.MonkeyPatch) -> None:
    classifier = FrameClassifier(inferred=())
    capture = SiteCapture(classifier=classifier)
    first = capture.capture(0)
    assert first and resolve(first[0])[1] == "test_site_capture_classifies_each_file_once"

    def classify_again(filename: str) -> FrameKind:
        raise AssertionError(f"{filename} classified twice")

    monkeypatch.setattr(classifier, "_classify", classify_again)
    assert [resolve(f)[:2] for f in capture.capture(0)] == [resolve(f)[:2] for f in first]
