"""A pytest plugin that fails an async test whose event loop stalls, naming the frame.

Opt in with ``-p lifesigns.pytest_plugin`` (or ``pytest_plugins = ["lifesigns.pytest_plugin"]``
in a root ``conftest.py``), then either give every async test a limit::

    pytest -p lifesigns.pytest_plugin --lifesigns-stall=0.2

or mark the tests that must never block::

    @pytest.mark.lifesigns_stall(0.1)
    async def test_checkout_does_not_block() -> None: ...

It runs the same heartbeat and watchdog as production (:mod:`lifesigns.loop`) on the
loop that runs the test (pytest-asyncio's or anyio's), so a test that calls
``time.sleep`` or spins in ``async def`` fails with the stall's file, line and call::

    event loop stalled 0.61 s (limit 0.2 s) in tests/test_orders.py:12 test_checkout,
    time.sleep; class: blocked in a system call (GIL released)

The C-level faulthandler path is used only when pytest's own ``faulthandler_timeout``
is off (they share one timer). Sync tests are not watched.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Generator
from typing import Any

import pytest

from .loop.faulthandler_guard import GilGuard, available
from .loop.heartbeat import Heartbeat, interval_for
from .loop.report import StallBegan, StallEnded, StallReport, format_began
from .loop.watchdog import Watchdog


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--lifesigns-stall``."""
    group = parser.getgroup("lifesigns")
    group.addoption(
        "--lifesigns-stall",
        type=float,
        default=None,
        metavar="SECONDS",
        help="fail async tests whose event loop stalls longer than SECONDS",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``lifesigns_stall`` marker."""
    config.addinivalue_line(
        "markers",
        "lifesigns_stall(seconds): fail the test if its event loop stalls longer than seconds",
    )


class StallGuard:
    """The production detector, scoped to one test: collects the stalls it sees."""

    def __init__(self, threshold: float, *, gil_guard: bool) -> None:
        self.threshold = threshold
        self.events: list[object] = []
        self._lock = threading.Lock()
        margin = min(0.1, max(0.03, threshold * 0.4))
        self.gil = GilGuard(threshold + margin, margin / 2) if gil_guard and available() else None
        self.heartbeat = Heartbeat(
            interval_for(threshold), late_after=threshold, on_beat=self._on_beat
        )
        self.watchdog = Watchdog(
            self.heartbeat, threshold=threshold, emit=self._emit, gil_guard=self.gil
        )

    def _emit(self, event: object) -> None:
        with self._lock:  # only the watchdog and the test's thread take it
            self.events.append(event)

    def _on_beat(self, now: float, lag: float) -> None:
        if self.gil is not None:
            self.gil.arm(now)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start watching ``loop`` (call it on the loop)."""
        if self.gil is not None:
            self.gil.open()
        self.heartbeat.start(loop)
        self.watchdog.start(loop)

    def stop(self) -> None:
        """Stop watching (on the loop); waits briefly for the watchdog thread."""
        self.watchdog.stop(timeout=1.0)
        self.heartbeat.stop()
        if self.gil is not None:
            self.gil.close()

    def worst(self) -> StallReport | None:
        """The longest stall seen, ended or not."""
        with self._lock:
            events = list(self.events)
        reports: dict[int, StallReport] = {}
        for event in events:
            if isinstance(event, StallBegan | StallEnded):
                reports[event.report.number] = event.report
        if not reports:
            return None
        return max(reports.values(), key=lambda r: r.stalled_for())


def _limit(item: pytest.Item) -> float | None:
    marker = item.get_closest_marker("lifesigns_stall")
    if marker is not None:
        seconds = marker.args[0] if marker.args else marker.kwargs.get("seconds")
        return float(seconds) if seconds is not None else None
    chosen = item.config.getoption("--lifesigns-stall")
    return None if chosen is None else float(chosen)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """Run an async test under the stall guard; fail it if its loop stalled too long."""
    threshold = _limit(item)
    function = getattr(item, "obj", None)
    if threshold is None or function is None or not inspect.iscoroutinefunction(function):
        return (yield)
    faulthandler_timeout = float(item.config.getini("faulthandler_timeout") or 0)
    guard = StallGuard(threshold, gil_guard=faulthandler_timeout <= 0)

    @functools.wraps(function)
    async def watched(*args: Any, **kwargs: Any) -> Any:
        guard.start(asyncio.get_running_loop())
        try:
            return await function(*args, **kwargs)
        finally:
            guard.stop()

    item.obj = watched  # type: ignore[attr-defined]
    try:
        result = yield
    finally:
        item.obj = function  # type: ignore[attr-defined]
    worst = guard.worst()
    if worst is not None:
        text = format_began(worst).replace("loop stalled", "event loop stalled", 1)
        text = text.replace(" so far", "").replace(" in all", "")
        lead, _, rest = text.partition(" in ")
        lines = f"{lead} (limit {threshold:g} s) in {rest}".splitlines()
        shown = lines[:16] + (["    ..."] if len(lines) > 16 else [])
        pytest.fail("\n".join(shown), pytrace=False)
    return result
