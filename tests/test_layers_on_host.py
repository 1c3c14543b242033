"""Each layer alone on a light ``Host``: what it registers, attaching twice, start and stop.

No ``Lifesigns`` is built here except where the test is about the assembler itself (the
attach-twice bugs of issue 8: metrics registered twice, options silently dropped, the
side port doing nothing without the watchdog).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from lifesigns import Lifesigns, drain, loop, memory, tasks
from lifesigns._config import Settings
from lifesigns.db.engine import WatchedEngine
from lifesigns.errors import ConfigError
from lifesigns.health import Phase
from lifesigns.health.status import Status
from lifesigns.host import Host, as_host
from lifesigns.http import deadline, inflight
from lifesigns.http.deadline import DeadlineMiddleware
from lifesigns.http.requests import RequestTracker

TOKEN = "layers-test-token-0123456789"


def _metric_names(host: Host) -> set[str]:
    return {metric.name for metric in host.registry.collect()}


def _check_names(host: Host) -> set[str]:
    return {check.name for check in host.checks.all()}


def _component_names(host: Host) -> list[str]:
    return [component.name for component in host.components]


async def _wait_for(predicate: Any, seconds: float = 10.0) -> None:
    deadline_at = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline_at:
            raise AssertionError(f"not true within {seconds} s: {predicate}")
        await asyncio.sleep(0.02)


# -- the loop layer ----------------------------------------------------------------------


def test_loop_alone_registers_its_dumps_component_and_metrics() -> None:
    host = Host()
    watch = loop.attach(host)
    assert set(host.dumps) == {"stalls", "threads", "tasks", "limiter"}
    assert _component_names(host) == ["loop-watch"]
    assert {"lifesigns_loop_lag_seconds", "lifesigns_loop_stalls"} <= _metric_names(host)
    assert watch.host is host and watch.settings.stall_threshold == 0.25
    assert host.probes.liveness().status is Status.PASS  # not started: nothing to fail


def test_loop_attached_twice_same_settings_same_layer_other_settings_refused() -> None:
    host = Host()
    first = loop.attach(host, stall_threshold=0.1)
    assert loop.attach(host, stall_threshold=0.1) is first
    with pytest.raises(ConfigError) as caught:
        loop.attach(host, stall_threshold=0.2)
    message = str(caught.value)
    assert "stall_threshold=0.1" in message and "stall_threshold=0.2" in message
    assert _component_names(host) == ["loop-watch"]  # nothing half-registered


def test_loop_attach_after_lifesigns_returns_its_layer_and_registers_nothing_twice() -> None:
    # Issue 8: `loop.attach(signs)` after `Lifesigns()` registered the metrics again.
    signs = Lifesigns()
    built = signs.host.find_layer("loop")
    assert built is not None
    assert loop.attach(signs) is built
    assert _component_names(signs.host).count("loop-watch") == 1
    with pytest.raises(ConfigError, match="already attached"):
        loop.attach(signs, census_interval=1.0)


def test_loop_liveness_fails_while_the_loop_is_frozen_past_live_fail_after() -> None:
    host = Host()
    watch = loop.attach(host, stall_threshold=0.05, live_fail_after=0.2, gil_guard=False)
    seen: list[Any] = []

    def probe_from_a_thread() -> None:
        seen.append(host.probes.liveness())

    async def scenario() -> None:
        await watch.start()
        try:
            await asyncio.sleep(0.2)  # a few beats first
            timer = threading.Timer(0.8, probe_from_a_thread)
            timer.start()
            time.sleep(1.5)  # stall: the loop frozen while the timer probes
            timer.join(5)
        finally:
            await watch.stop()

    asyncio.run(scenario())
    assert seen, "the probe thread did not run"
    assert seen[0].status is Status.FAIL
    assert seen[0].notes == ("event-loop",)


# -- tasks -------------------------------------------------------------------------------


def test_tasks_alone_register_the_supervisor_its_dump_and_each_tasks_check() -> None:
    host = Host()
    supervisor = tasks.attach(host)
    assert tasks.attach(host) is supervisor
    assert _component_names(host) == ["supervised tasks"]
    assert set(host.dumps) == {"supervised"}

    @supervisor.periodic(every=60)
    async def sweep() -> None:
        return None

    assert "task.sweep" in _check_names(host)
    assert "lifesigns_task_runs" in _metric_names(host)


async def test_tasks_run_once_the_host_is_ready_and_stop_with_it() -> None:
    host = Host()
    supervisor = tasks.attach(host)
    runs: list[float] = []

    @supervisor.periodic(every=0.05, initial_delay=0)
    async def tick() -> None:
        runs.append(time.monotonic())

    host.lifecycle.begin()
    await supervisor.start()
    await asyncio.sleep(0.2)
    assert runs == []  # waits for readiness
    host.lifecycle.move_to(Phase.READY)
    await _wait_for(lambda: len(runs) >= 2)
    await supervisor.stop()
    assert supervisor.states["tick"].phase.value == "stopped"


# -- drain -------------------------------------------------------------------------------


async def test_drain_alone_fails_readiness_then_stops_what_the_assembler_gave_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = Host(requests=RequestTracker())
    supervisor = tasks.attach(host)
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    watched = WatchedEngine("cache-db", engine, timeout=1.0)
    the_drain = drain.attach(
        host, supervisor=lambda: supervisor, engines=lambda: {"cache-db": watched}
    )
    assert drain.attach(host) is the_drain  # same settings: the same drain
    assert _component_names(host) == ["supervised tasks", "graceful drain"]

    before = signal.getsignal(signal.SIGTERM)
    caplog.set_level(logging.INFO, "lifesigns.drain")
    host.lifecycle.begin()
    host.lifecycle.move_to(Phase.READY)
    await supervisor.start()
    await the_drain.start()
    assert signal.getsignal(signal.SIGTERM) != before  # hooked (we run in the main thread)
    the_drain.begin("test says so")
    assert host.lifecycle.phase is Phase.DRAINING
    assert (await host.probes.readiness()).status is Status.FAIL
    await the_drain.stop()
    assert signal.getsignal(signal.SIGTERM) == before
    assert "engine cache-db disposed (no connection held)" in caplog.text


def test_drain_settings_are_the_hosts() -> None:
    host = Host(Settings().override(drain_delay=0, grace=1))
    assert "drain_delay=0" in repr(drain.attach(host))


# -- memory ------------------------------------------------------------------------------


async def test_memory_alone_registers_check_dumps_metrics_and_samples() -> None:
    host = Host()
    monitor = memory.attach(host, interval=0.05, window=1.0)
    assert memory.attach(host, interval=0.05, window=1.0) is monitor
    assert set(host.dumps) == {"memory", "memory-trace"}
    assert "memory" in _check_names(host)
    assert "lifesigns_memory_rss_bytes" in _metric_names(host)
    assert _component_names(host) == ["memory monitor"]
    await monitor.start()
    try:
        await _wait_for(lambda: len(monitor.dump()["samples"]) >= 2)
    finally:
        await monitor.stop()
    rss = host.registry.get_sample_value("lifesigns_memory_rss_bytes")
    assert rss is not None and rss > 1_000_000


def test_memory_options_after_lifesigns_attached_it_are_refused_not_dropped() -> None:
    # Issue 8: `memory.attach(signs, interval=...)` silently dropped the options.
    signs = Lifesigns()
    assert memory.attach(signs) is signs.host.find_layer("memory")
    with pytest.raises(ConfigError) as caught:
        memory.attach(signs, interval=5)
    assert "'memory_interval': 10.0" in str(caught.value)
    assert "'memory_interval': 5.0" in str(caught.value)


def test_memory_options_go_through_the_tables_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"memory_window=0.5 must be longer than memory_interval"):
        memory.attach(Host(), interval=1, window=0.5)
    with pytest.raises(ConfigError, match=r"memory_interval=-1 is out of range"):
        memory.attach(Host(), interval=-1)
    monkeypatch.setenv("LIFESIGNS_MEMORY_INTERVAL", "2.5")
    signs = Lifesigns()
    monitor = signs.host.find_layer("memory")
    assert isinstance(monitor, memory.MemoryMonitor) and monitor.interval == 2.5


# -- requests in flight and deadlines ----------------------------------------------------


async def test_inflight_alone_counts_and_lists_the_hosts_requests() -> None:
    tracker = RequestTracker()
    host = Host(requests=tracker)
    layer = inflight.attach(host)
    assert inflight.attach(host) is layer
    assert set(host.dumps) == {"requests"}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        return None

    info = tracker.begin({"method": "GET", "path": "/orders/7", "headers": []}, receive, send)
    try:
        assert host.registry.get_sample_value("lifesigns_requests_in_flight") == 1
        listed = host.dumps["requests"]()
        assert listed["in_flight"] == 1 and listed["requests"][0]["path"] == "/orders/7"
    finally:
        tracker.end(info)
    assert host.registry.get_sample_value("lifesigns_requests_in_flight") == 0


async def test_deadline_middlewares_on_one_host_count_into_one_counter() -> None:
    host = Host()
    assert deadline.expiries(host) is deadline.expiries(host)

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(5)

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    for _ in range(2):
        app = DeadlineMiddleware(slow, signs=host, default=0.05)
        await app({"type": "http", "path": "/slow", "method": "GET"}, receive, send)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [504, 504]
    counted = host.registry.get_sample_value(
        "lifesigns_request_deadlines_exceeded_total", {"route": "(unrouted)"}
    )
    assert counted == 2


def test_deadline_values_have_the_deadline_options_limits() -> None:
    with pytest.raises(ConfigError, match=r"default=7200 is out of range.*<= 3600"):
        DeadlineMiddleware(lambda *a: None, default=7200)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"routes\['/x'\]=7200 is out of range"):
        DeadlineMiddleware(lambda *a: None, routes={"/x": 7200})  # type: ignore[arg-type]


# -- the host itself and the assembler ----------------------------------------------------


def test_as_host_takes_a_host_or_a_lifesigns_and_refuses_anything_else() -> None:
    host = Host()
    signs = Lifesigns(watchdog=False, memory=False)
    assert as_host(host) is host
    assert as_host(signs) is signs.host
    with pytest.raises(TypeError, match="expected a lifesigns Host or Lifesigns, got str"):
        as_host("signs")  # type: ignore[arg-type]


def test_layers_on_one_host_register_side_by_side() -> None:
    host = Host()
    loop.attach(host)
    tasks.attach(host)
    drain.attach(host)
    memory.attach(host)
    inflight.attach(host)
    assert _component_names(host) == [
        "loop-watch",
        "supervised tasks",
        "graceful drain",
        "memory monitor",
    ]
    assert len(host.dumps) == 4 + 1 + 2 + 1


async def test_side_port_answers_when_the_watchdog_is_off() -> None:
    # Issue 8: `side_port` did nothing with `watchdog=False`.
    signs = Lifesigns(token=TOKEN, watchdog=False, memory=False, side_port=0, drain_delay=0)
    await signs.start()
    try:
        (side,) = [c for c in signs.host.components if c.name == "side-port"]
        port = getattr(side, "port", None)
        assert port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            live = await client.get("/livez")
            dumps = await client.get("/debug/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert live.status_code == 200
        assert "requests" in dumps.json()["dumps"]
    finally:
        await signs.stop()
