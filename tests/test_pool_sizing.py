"""Sizing advice and attach() options (issue 4), in process against the real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import create_engine

from lifesigns import Lifesigns
from lifesigns.db.forensics import attach
from lifesigns.errors import ConfigError, Degraded
from tests.support import Postgres


def test_sizing_advice_checks_the_fleet_against_max_connections(postgres: Postgres):
    engine = create_engine(postgres.url("postgresql+psycopg"), pool_size=5, max_overflow=5)
    try:
        signs = Lifesigns(service="orders")
        forensics = attach(signs, signs.watch_engine(engine, forensics=False), replicas=100)
        for _ in range(50):
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        forensics.tick()  # what the forensics thread does: reads max_connections
        advice = forensics.sizing.advice()
        server = advice["server"]
        assert server["known"] is True
        assert server["max_connections"] > 0
        assert server["fleet_capacity"] == 1000
        assert server["fits"] is False
        assert advice["capacity"] == 10
        assert advice["peak_checked_out"] == 1
        assert advice["hold_p95_s"] is not None
        check = signs.checks.get("database-pool-sizing")
        assert check is not None
        assert not check.critical
        with pytest.raises(Degraded, match="100 replicas x 10 connections = 1000"):
            asyncio.run(check.func())  # type: ignore[arg-type]
        dump = signs.dumps["pool"]()
        assert postgres.password not in str(dump)
        assert dump["engines"]["database"]["pool"]["checkouts"] >= 50
    finally:
        engine.dispose()


def test_attach_refuses_bad_options_and_reads_the_environment(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
):
    engine = create_engine(postgres.url("postgresql+psycopg"))
    signs = Lifesigns(service="orders")
    watched = signs.watch_engine(engine, forensics=False)
    with pytest.raises(ConfigError, match=r"leak_threshold=1 is below the minimum.*>= 2"):
        attach(signs, watched, leak_threshold=1)
    with pytest.raises(ConfigError, match="on_saturation='explode'"):
        attach(signs, watched, on_saturation="explode")
    with pytest.raises(ConfigError, match="low_water"):
        attach(signs, watched, high_water=0.5, low_water=0.6)
    monkeypatch.setenv("LIFESIGNS_LEAK_THRESHOLD", "7.5")
    monkeypatch.setenv("LIFESIGNS_ON_SATURATION", "degrade")
    forensics = attach(signs, watched, saturated_after=3)
    assert forensics.settings.leak_threshold == 7.5
    assert forensics.settings.on_saturation == "degrade"
    assert forensics.settings.saturated_after == 3
    assert forensics.settings.scan_interval == pytest.approx(7.5 / 4)
    with pytest.raises(ConfigError, match="already attached"):
        attach(signs, watched)
    forensics.detach()
