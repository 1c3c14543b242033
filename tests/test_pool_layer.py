"""The db layer on a light host (issue 8): no ``Lifesigns`` is built here.

Real PostgreSQL (psycopg 3, sync engines, as the FastAPI template uses), the real request
tracker of the edge, and the host's own registries, runner and dumps.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy import exc as sa_exc

from lifesigns.db import attach_engine, engines_of
from lifesigns.db.bulkhead import bulkhead, bulkheads_of
from lifesigns.db.forensics import PoolForensics, attach, pools_of
from lifesigns.db.leaks import OWNER_GRACE
from lifesigns.db.saturation import PoolSaturated
from lifesigns.db.server_view import ServerView
from lifesigns.errors import ConfigError, Degraded
from lifesigns.health import Status
from lifesigns.host import Host
from lifesigns.http.requests import RequestInfo, RequestTracker
from tests.support import Postgres

DB_PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lifesigns" / "db"
# What the db layer may import of lifesigns: the host interface and the shared base.
ALLOWED = {"host", "_config", "_secrets", "_frames", "errors", "health", "metrics"}


@pytest.fixture
def engine(postgres: Postgres) -> Iterator[Engine]:
    engine = create_engine(
        postgres.url("postgresql+psycopg"), pool_size=1, max_overflow=0, pool_timeout=5
    )
    yield engine
    engine.dispose()


def test_the_db_layer_imports_neither_core_nor_another_layer():
    offenders = []
    for path in sorted(DB_PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                tops = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                offenders += [f"{path.name}: from ..{t}" for t in tops if t not in ALLOWED]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lifesigns"):
                offenders.append(f"{path.name}: from {node.module}")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{path.name}: import {a.name}" for a in node.names if "lifesigns" in a.name
                ]
        text = path.read_text()
        if "WeakKeyDictionary" in text or "_attached" in text:
            offenders.append(f"{path.name}: a module-level registry of instances")
    assert offenders == []


async def test_attach_engine_registers_check_dump_components_and_dependency(engine: Engine):
    host = Host()
    attached = attach_engine(host, engine)
    assert engines_of(host) == {"database": attached.watched}
    assert attached.wait is not None and attached.wait.name == "database"
    assert host.checks.get("database") is attached.check
    pool_check = host.checks.get("database-pool")
    assert pool_check is not None and not pool_check.critical  # pressure warns by default
    assert "pool" in host.dumps
    assert [c.name for c in host.components] == [
        "pool forensics database",
        "database probe database",
    ]
    try:
        result = await host.runner.run(attached.check)
        assert result.status is Status.PASS, result.error
        assert result.details is not None and result.details["checked_out"] == 0
        with pytest.raises(ConfigError, match="'database' is already watched"):
            attach_engine(host, engine)
    finally:
        await attached.watched.probe.close()
        host.runner.close()  # its check thread, else left idle for the rest of the run


async def test_database_check_answers_on_its_own_connection_while_checkouts_queue(
    engine: Engine,
):
    host = Host()
    attached = attach_engine(host, engine, timeout=1.0)
    held = engine.connect()  # the pool's only connection
    held.exec_driver_sql("SELECT 1")
    queued = threading.Thread(target=lambda: _checkout_and_fail(engine), daemon=True)
    queued.start()  # waits pool_timeout (5 s) in the pool's queue
    try:
        started = time.monotonic()
        result = await host.runner.run(attached.check)
        took = time.monotonic() - started
        assert took < 1.0, f"the check took {took:.2f} s"
        assert result.status is Status.WARN  # reachable: readiness holds
        assert "pool exhausted: 1 of 1 connections checked out" in (result.error or "")
        assert "answers on lifesigns' own connection" in (result.error or "")
    finally:
        held.close()
        queued.join(10)
        await attached.watched.probe.close()
        host.runner.close()


def _checkout_and_fail(engine: Engine) -> None:
    try:
        with engine.connect():
            pass
    except sa_exc.TimeoutError:
        pass


def test_same_settings_give_the_same_forensics_and_others_name_both(engine: Engine):
    host = Host()
    attached = attach_engine(host, engine, forensics=False)
    first = attach(host, attached.watched, leak_threshold=5)
    assert attach(host, attached.watched, leak_threshold=5) is first
    with pytest.raises(ConfigError) as caught:
        attach(host, attached.watched, leak_threshold=7)
    message = str(caught.value)
    assert "already attached" in message
    assert "leak_threshold=5.0" in message and "leak_threshold=7.0" in message
    assert pools_of(host) == [first]
    first.detach()


def test_bulkheads_live_on_their_host():
    one, two = Host(), Host()
    batch = bulkhead(one, "batch", 2)
    assert bulkhead(one, "batch", 2) is batch
    assert bulkheads_of(two) is None
    assert bulkhead(two, "batch", 3) is not batch  # another host, another bulkhead
    with pytest.raises(ConfigError, match="already exists"):
        bulkhead(one, "batch", 5)
    check = one.checks.get("bulkheads")
    assert check is not None and not check.critical


def _forensics(host: Host, engine: Engine, **options: object) -> PoolForensics:
    attached = attach_engine(host, engine, **options)  # type: ignore[arg-type]
    assert attached.forensics is not None
    return attached.forensics


def _begin(tracker: RequestTracker, scope: dict[str, Any]) -> RequestInfo:
    """A request arriving, as the middleware records it (no body, nothing sent yet)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    return tracker.begin(scope, receive, send)


def _leaked_connection(engine: Engine, kept: list[Connection]) -> None:
    conn = engine.connect()  # the checkout
    conn.exec_driver_sql("SELECT 1 AS left_behind")
    kept.append(conn)  # never closed: the request ends, the connection stays out


async def test_a_connection_its_finished_request_left_behind_is_a_leak_at_once(
    engine: Engine, caplog: pytest.LogCaptureFixture
):
    tracker = RequestTracker()
    host = Host(requests=tracker)
    forensics = _forensics(host, engine, leak_threshold=600)
    kept: list[Connection] = []
    info = _begin(tracker, {"type": "http", "method": "GET", "path": "/orders/7"})
    await asyncio.to_thread(_leaked_connection, engine, kept)  # as a sync endpoint does
    info.status = 404
    tracker.end(info)
    ended_at = time.monotonic()
    caplog.set_level(logging.WARNING, "lifesigns.pool")
    forensics.tick()  # within the grace: a checkin may still be on its way
    assert "connection leak suspected" not in caplog.text
    await asyncio.sleep(OWNER_GRACE + 0.05)
    forensics.tick()
    reported_after = time.monotonic() - ended_at
    assert reported_after < 1.0
    (record,) = [r for r in caplog.records if "connection leak suspected" in r.getMessage()]
    text = record.getMessage()
    assert "after its owner ended: GET /orders/7 (request" in text
    assert "ended with status 404" in text
    site = f"tests/test_pool_layer.py:{_line_of('# the checkout')} in _leaked_connection"
    assert f"checked out at {site}" in text
    assert "idle in transaction" in text  # PostgreSQL's view, never a negative age
    assert " -0.0 s" not in text and "for -" not in text
    dump = host.dumps["pool"]()["engines"]["database"]
    assert dump["leaks"]["reported"] == 1
    assert dump["leaks"]["recent"][0]["owner_ended"].endswith("ended with status 404")
    forensics.tick()
    assert caplog.text.count("connection leak suspected") == 1  # once
    for conn in kept:
        conn.close()
    engine.dispose()
    forensics.detach()


async def test_a_task_that_raised_with_a_connection_out_is_named_with_its_exception(
    engine: Engine, caplog: pytest.LogCaptureFixture
):
    host = Host()
    forensics = _forensics(host, engine, leak_threshold=600)
    kept: list[Connection] = []

    async def refresh_cache() -> None:
        _leaked_connection(engine, kept)
        raise KeyError("gone")

    task = asyncio.get_running_loop().create_task(refresh_cache(), name="refresh")
    with pytest.raises(KeyError):
        await task
    caplog.set_level(logging.WARNING, "lifesigns.pool")
    forensics.tick()  # first seen ended
    await asyncio.sleep(OWNER_GRACE + 0.05)
    forensics.tick()
    assert "its owner ended: task refresh raised KeyError" in caplog.text
    holders = host.dumps["pool"]()["engines"]["database"]["holders"]
    assert holders[0]["group"].startswith("task ") and "refresh_cache" in holders[0]["group"]
    for conn in kept:
        conn.close()
    engine.dispose()
    forensics.detach()


async def test_work_that_outlives_its_request_is_not_the_requests_leak(
    postgres: Postgres, caplog: pytest.LogCaptureFixture
):
    engine = create_engine(postgres.url("postgresql+psycopg"), pool_size=2, max_overflow=0)
    tracker = RequestTracker()
    host = Host(requests=tracker)
    forensics = _forensics(host, engine, leak_threshold=600)
    kept: list[Connection] = []
    release = asyncio.Event()

    async def background() -> None:
        _leaked_connection(engine, kept)  # taken while the request still runs
        await release.wait()
        kept.pop(0).close()

    async def serve() -> asyncio.Task[None]:
        info = _begin(tracker, {"type": "http", "method": "POST", "path": "/exports"})
        spawned = asyncio.get_running_loop().create_task(background())
        await asyncio.sleep(0.01)
        info.status = 202
        tracker.end(info)
        # A thread started after the end, in the request's copied context.
        await asyncio.to_thread(_leaked_connection, engine, kept)
        return spawned

    caplog.set_level(logging.WARNING, "lifesigns.pool")
    spawned = await asyncio.get_running_loop().create_task(serve())
    await asyncio.sleep(OWNER_GRACE + 0.05)
    forensics.tick()
    assert "connection leak suspected" not in caplog.text  # the task runs; the thread lives
    owners = sorted(h["owner"] for h in host.dumps["pool"]()["engines"]["database"]["holders"])
    assert owners[0].startswith("POST /exports (request") and owners[1].startswith("thread ")
    release.set()
    await spawned
    forensics.tick()
    assert "connection leak suspected" not in caplog.text
    for conn in kept:
        conn.close()
    forensics.detach()
    engine.dispose()


def _line_of(marker: str) -> int:
    for number, line in enumerate(Path(__file__).read_text().splitlines(), 1):
        if line.rstrip().endswith(marker):
            return number
    raise AssertionError(marker)


async def test_pressure_warns_with_its_figures_and_fails_readiness_only_when_asked(
    postgres: Postgres,
):
    engine = create_engine(
        postgres.url("postgresql+psycopg"), pool_size=1, max_overflow=0, pool_timeout=0.3
    )
    try:
        host = Host()
        forensics = _forensics(host, engine, on_saturation="warn")
        check = host.checks.get("database-pool")
        assert check is not None
        assert (await host.runner.run(check)).status is Status.PASS
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            await asyncio.to_thread(_checkout_and_fail, engine)  # waits 0.3 s, fails
            with pytest.raises(Degraded) as caught:
                await forensics.saturation()
        message = str(caught.value)
        assert message.startswith("pool under pressure: ")
        assert "1 of 1 connections checked out" in message
        assert "1 timed out" in message
        figures = forensics.saturation.figures()
        assert figures["timeouts_in_window"] == 1
        assert figures["pool_timeout_s"] == 0.3
        assert figures["checked_out"] <= figures["capacity"]
        ready = await host.probes.readiness()
        assert "database-pool" not in [r.name for r in ready.checks]  # not in readiness
        forensics.detach()
    finally:
        engine.dispose()


async def test_on_saturation_fail_turns_readiness_once_checkouts_fail_long_enough(
    postgres: Postgres,
):
    engine = create_engine(
        postgres.url("postgresql+psycopg"), pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    try:
        host = Host()
        forensics = _forensics(host, engine, on_saturation="fail", saturated_after=0.5)
        check = host.checks.get("database-pool")
        assert check is not None and check.critical
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            # Every connection out, nobody waiting: busy, not under pressure.
            assert (await forensics.saturation())["checked_out"] == 1
            await asyncio.to_thread(_checkout_and_fail, engine)
            deadline = time.monotonic() + 5
            while forensics.saturation.saturated_for() < 0.5:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            with pytest.raises(PoolSaturated, match=r"pool saturated for .* checkouts fail"):
                await forensics.saturation()
        with pytest.raises(Degraded):  # free again; the recent timeout still warns
            await forensics.saturation()
        forensics.detach()
    finally:
        engine.dispose()


def test_no_sizing_advice_from_a_handful_of_checkouts(engine: Engine):
    host = Host()
    forensics = _forensics(host, engine)
    for _ in range(3):
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    forensics.tick()
    forensics.tick()
    advice = forensics.sizing.advice()
    assert advice["suggested_capacity"] is None
    assert any(n.startswith("no sizing advice yet: 3 checkouts") for n in advice["notes"])
    assert not any("would do" in n for n in advice["notes"])
    forensics.detach()


def test_server_ages_are_never_negative(engine: Engine):
    view = ServerView(engine, timeout=2.0, redactor=Host().redactor)
    conns = [engine.connect()]
    try:
        conns[0].exec_driver_sql("SELECT 1")
        pid = conns[0].connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        for _ in range(5):
            backend = view.backends([pid])[pid]
            assert backend.state_age is not None and backend.state_age >= 0
            assert backend.xact_age is None or backend.xact_age >= 0
    finally:
        for conn in conns:
            conn.close()


def test_sizing_never_suggests_fewer_connections_than_queued_checkouts_had(postgres: Postgres):
    engine = create_engine(
        postgres.url("postgresql+psycopg"), pool_size=3, max_overflow=0, pool_timeout=10
    )
    try:
        host = Host()
        forensics = _forensics(host, engine)
        advisor = forensics.sizing
        advisor.sample(time.monotonic() - 61)  # as if watched for a minute already

        def worker() -> None:
            for _ in range(40):
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT pg_sleep(0.02)")

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        advisor.sample(time.monotonic())
        advice = advisor.advice()
        assert advice["checkouts"] >= 200
        assert advice["peak_checked_out"] == 3
        # Six threads queued for three connections (QueuePool is not fair: some waited
        # while others took the connection back at once).
        assert max(w for _, w in forensics.holders.recent_waits) >= 0.1
        # Little's law alone says 2 (about 4 checkouts/s x 20 ms); all 3 were in use.
        assert advice["suggested_capacity"] is not None and advice["suggested_capacity"] >= 3
        assert not any("would do" in note for note in advice["notes"])
        forensics.detach()
    finally:
        engine.dispose()
