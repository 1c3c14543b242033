"""The loop layer's pieces, in process: stacks, classes, the GIL guard, reports, census."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

import lifesigns.loop
from lifesigns import Lifesigns
from lifesigns.errors import ConfigError
from lifesigns.host import Host
from lifesigns.loop import LoopSettings, attach
from lifesigns.loop.census import TaskCensus, creator_site
from lifesigns.loop.classify import Evidence, StallClass, classify
from lifesigns.loop.faulthandler_guard import GilGuard, parse_dump
from lifesigns.loop.report import (
    Reporter,
    SiteLimiter,
    StallBegan,
    StallEnded,
    StallHistory,
    StallReport,
    StallSample,
    headline,
)
from lifesigns.loop.stacks import callee, capture, is_library, short_path
from tests.support.servers import REPO_ROOT

HERE = __file__


def test_library_frames_are_told_apart_from_application_frames() -> None:
    assert is_library(asyncio.__file__)
    assert is_library(httpx.__file__)
    assert is_library(os.path.join(os.path.dirname(lifesigns.loop.__file__), "x.py"))
    assert is_library("<frozen runpy>")
    assert not is_library(HERE)


def test_capture_walks_innermost_first_and_names_the_call() -> None:
    stack, blocker = capture(sys._getframe())
    assert stack[0].name == "test_capture_walks_innermost_first_and_names_the_call"
    assert stack[0].app and stack[0].filename == HERE
    assert short_path(HERE) == "tests/test_loop_units.py"
    assert blocker is not None and blocker.code is sys._getframe().f_code
    assert callee("time.sleep(5)") == "time.sleep"
    assert callee("_compile(pattern, flags).search(string)") == "_compile(pattern, flags).search"
    assert callee("x + 1") is None


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        (Evidence(wall=1.0, thread_cpu=0.01), StallClass.SYSCALL),
        (Evidence(wall=1.0, thread_cpu=0.95, signatures=["a", "a", "a"]), StallClass.PYTHON_STUCK),
        (Evidence(wall=1.0, thread_cpu=0.95, signatures=["a", "b", "a"]), StallClass.PYTHON_MOVING),
        (
            Evidence(wall=1.0, thread_cpu=0.9, watchdog_late=0.8, gil_dump=True),
            StallClass.C_HOLDING_GIL,
        ),
        (Evidence(wall=1.0, thread_cpu=0.1, run_delay=0.8), StallClass.CPU_STARVED),
        (Evidence(wall=1.0, thread_cpu=0.2, throttled=0.7), StallClass.CPU_STARVED),
        (
            Evidence(wall=1.0, thread_cpu=0.5, run_delay=0.5, signatures=["a", "b"]),
            StallClass.PYTHON_MOVING,
        ),
        (Evidence(wall=1.0, thread_cpu=0.9, gc_seconds=0.7), StallClass.GC_PAUSE),
    ],
)
def test_stall_classes_follow_the_evidence(evidence: Evidence, expected: StallClass) -> None:
    assert classify(evidence, gil_margin=0.1) is expected


def test_gil_guard_dumps_the_frame_from_c_and_parses_it() -> None:
    guard = GilGuard(timeout=0.05, rearm_every=0.0)
    guard.open()
    try:
        assert guard.take() is None
        guard.arm(time.monotonic())
        time.sleep(0.3)  # the timer fires while this thread waits
        stacks = guard.take()
        assert stacks is not None
        import threading

        mine = stacks[threading.get_ident()]
        assert mine[0].name == "test_gil_guard_dumps_the_frame_from_c_and_parses_it"
        assert mine[0].app
        assert guard.take() is None  # read once, then the file is empty again
    finally:
        guard.close()
    text = (
        "Timeout (0:00:00.1)!\n"
        "Thread 0x00000000000000ff (most recent call first):\n"
        '  File "/app/x.py", line 12 in f\n'
    )
    assert parse_dump(text)[255][0][:3] == ("/app/x.py", 12, "f")


def _report(number: int = 1, ended: float | None = None) -> StallReport:
    stack, blocker = capture(sys._getframe())
    return StallReport(
        number=number,
        began=100.0,
        began_wall=time.time(),
        detected=100.3,
        samples=(StallSample(100.3, stack, blocker),),
        stall_class=StallClass.SYSCALL,
        request={"method": "GET", "route": "/x/{id}", "path": "/x/1", "request_id": "7"},
        ended=ended,
    )


def test_reporter_logs_one_report_and_one_end_and_rate_limits_a_site(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reporter = Reporter(StallHistory(), SiteLimiter(burst=2, window=600))
    caplog.set_level(logging.INFO, logger="lifesigns.loop")
    for number in range(1, 6):
        report = _report(number)
        reporter.handle(StallBegan(report))
        reporter.handle(StallEnded(_report(number, ended=101.5)))
    began = [r for r in caplog.records if "loop stalled" in r.getMessage()]
    ended = [r for r in caplog.records if "stall ended after 1.50 s" in r.getMessage()]
    assert len(began) == 2 and len(ended) == 2
    assert "during GET /x/{id} (request 7)" in began[0].getMessage()
    recent, sites = reporter.history.snapshot()
    assert len(recent) == 5 and sites[0].count == 5
    assert "in tests/test_loop_units.py:" in headline(_report())


def test_settings_refuse_bad_values() -> None:
    host = Host()  # a light host: no Lifesigns needed to test the loop's settings
    with pytest.raises(ConfigError, match="live_fail_after"):
        attach(host, stall_threshold=1.0, live_fail_after=0.5)
    with pytest.raises(ConfigError, match="side_port"):
        Lifesigns(watchdog=False, side_port=70000)  # the side port is no longer the loop's
    assert LoopSettings.build(host.settings).stall_threshold == 0.25
    assert "live_fail_after=10.0" in repr(LoopSettings())


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_watch_detects_a_stall_in_process_and_serves_it_on_the_side_port(loop_kind: str) -> None:
    async def scenario() -> tuple[dict[str, object], int, int, str]:
        signs = Lifesigns(token="unit-test-token-0123456789", watchdog=False, side_port=0)
        watch = attach(signs, stall_threshold=0.1, live_fail_after=0.3)
        await signs.start()
        try:
            port = signs.side_port.port if signs.side_port else None
            assert port and port > 0
            time.sleep(0.6)  # stall: unit
            await asyncio.sleep(0.2)
            await asyncio.to_thread(watch.reporter.queue.qsize)
            dump = await asyncio.to_thread(watch.stalls_dump)
            url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=url) as client:
                live = (await client.get("/livez")).status_code
                refused = (await client.get("/debug/stalls")).status_code
            text = watch.metrics.stalls._name
            return dump, live, refused, text
        finally:
            await signs.stop()

    if loop_kind == "uvloop":
        import uvloop

        dump, live, refused, _ = uvloop.run(scenario())
    else:
        dump, live, refused, _ = asyncio.run(scenario())
    assert live == 200 and refused == 401
    deadline = time.monotonic() + 2
    while not dump["recent"] and time.monotonic() < deadline:  # reporter thread catching up
        time.sleep(0.05)
    recent = dump["recent"]
    assert isinstance(recent, list) and recent, dump
    assert recent[0]["class"] == "syscall"
    assert "test_loop_units.py" in recent[0]["headline"] and "time.sleep" in recent[0]["headline"]


def test_census_names_the_creation_site_and_flags_a_pile_up() -> None:
    notices: list[object] = []

    async def forever() -> None:
        await asyncio.sleep(3600)

    async def scenario() -> tuple[str | None, list[str]]:
        census = TaskCensus(notices.append, interval=3600, growth_samples=3, min_growth=50)
        census.start(asyncio.get_running_loop())
        kept = []
        try:
            for _ in range(4):
                kept += [asyncio.create_task(forever()) for _ in range(40)]  # leak site
                census.take()
            latest = census.latest
            assert latest is not None
            top = latest.groups[0]
            assert top.count == 160 and top.coroutine.endswith("forever")
            return top.created_at, list(latest.piling_up)
        finally:
            census.stop()
            for task in kept:
                task.cancel()

    created, piling = asyncio.run(scenario())
    assert created is not None and created.startswith("tests/test_loop_units.py:")
    assert piling and notices
    assert creator_site(1) is not None


def test_pytest_plugin_fails_a_test_whose_loop_stalls_and_names_the_frame(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(
        textwrap.dedent(
            """
            import asyncio, time
            import pytest

            async def test_blocks():
                time.sleep(0.5)

            async def test_fine():
                await asyncio.sleep(0.3)

            @pytest.mark.lifesigns_stall(0.1)
            async def test_marked():
                time.sleep(0.3)
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "lifesigns.pytest_plugin",
            "--lifesigns-stall=0.2",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            "test_sample.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "2 failed, 1 passed" in out
    assert (
        "event loop stalled 0.5" in out
        and "(limit 0.2 s) in test_sample.py:6 test_blocks, time.sleep" in out
    )
    assert "(limit 0.1 s) in test_sample.py:13 test_marked, time.sleep" in out
