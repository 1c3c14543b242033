"""Pieces of supervision on their own: restart intensity, back-off, await chains, stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from lifesigns import Lifesigns
from lifesigns.errors import ConfigError
from lifesigns.health import Phase
from lifesigns.host import Host
from lifesigns.tasks import attach
from lifesigns.tasks.stack import await_chain, innermost_own_frame
from lifesigns.tasks.state import RestartIntensity, TaskSpec


async def _job() -> None:
    return None


def test_restart_intensity_allows_r_restarts_in_t_seconds() -> None:
    intensity = RestartIntensity(max_restarts=2, within=10.0)
    assert intensity.allow(0.0)
    assert intensity.allow(1.0)
    assert not intensity.allow(2.0)  # the third within 10 s
    fresh = RestartIntensity(max_restarts=2, within=10.0)
    assert all(fresh.allow(t) for t in (0.0, 6.0, 12.0, 18.0))  # never two in a window


def test_backoff_doubles_up_to_its_cap() -> None:
    spec = TaskSpec("job", _job, every=1.0, backoff=0.5, max_backoff=3.0)
    delays = [spec.backoff_delay(n) for n in range(1, 6)]
    for delay, expected in zip(delays, [0.5, 1.0, 2.0, 3.0, 3.0], strict=True):
        assert expected * 0.9 <= delay <= expected * 1.1


def test_bad_registrations_are_refused() -> None:
    tasks = attach(Host())  # a light host: no Lifesigns needed to test the supervisor
    with pytest.raises(ConfigError, match="every"):
        tasks.periodic(every=0)
    with pytest.raises(ConfigError, match="restart="):
        tasks.supervised(restart="sometimes")
    with pytest.raises(ConfigError, match="task name"):
        TaskSpec("bad name!", _job)
    tasks.periodic(every=1)(_job)
    with pytest.raises(ConfigError, match="already registered"):
        tasks.periodic(every=1)(_job)


async def test_await_chain_reaches_the_innermost_line() -> None:
    async def inner() -> None:
        await asyncio.Event().wait()

    async def outer() -> None:
        await inner()

    task = asyncio.create_task(outer())
    await asyncio.sleep(0)
    chain = await_chain(task)
    task.cancel()
    assert [line.function for line in chain][:2] == ["outer", "inner"]
    stuck = innermost_own_frame(chain)
    assert stuck is not None and stuck.function == "inner"
    assert "asyncio.Event().wait()" in str(stuck)


async def test_lifespan_starts_tasks_when_ready_and_stop_cancels_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signs = Lifesigns(service="units", grace=2.0)
    runs: list[float] = []
    started = asyncio.Event()

    @signs.periodic(every=0.05, initial_delay=0)
    async def tick() -> None:
        runs.append(asyncio.get_running_loop().time())

    @signs.supervised()
    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    assert runs == [] and not started.is_set()  # registration starts nothing
    caplog.set_level(logging.INFO, "lifesigns.tasks")
    await signs.start()
    await asyncio.wait_for(started.wait(), 5.0)
    while len(runs) < 3:
        await asyncio.sleep(0.01)
    assert signs.lifecycle.phase is Phase.READY
    await signs.stop()
    assert "supervised tasks cancelled: tick, forever (cancelled while running" in caplog.text
    count = len(runs)
    await asyncio.sleep(0.15)
    assert len(runs) == count
    assert attach(signs).states["forever"].phase.value == "stopped"
