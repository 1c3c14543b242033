"""Supervised tasks in a real uvicorn: failures, back-off, restart intensity, overruns.

Seed 001: a cleanup loop created at import time, looping for ever with no timeout, that
"could freeze everything" and was never seen failing. Here a task that fails is retried
with back-off and given up visibly; one that hangs is cancelled at its timeout with the
line it was stuck on; one created outside supervision is named at start-up.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Postgres, StartUvicorn

pytestmark = pytest.mark.slow

TOKEN = "lifecycle-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
APP = "tests.apps.lifecycle_app:app"
APP_FILE = Path(__file__).parent / "apps" / "lifecycle_app.py"


def marker_line(marker: str) -> int:
    """The line number of ``# <marker>`` in the test app."""
    for number, line in enumerate(APP_FILE.read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# {marker}"):
            return number
    raise AssertionError(f"no {marker} in {APP_FILE}")


def log_times(log: str, pattern: str) -> list[float]:
    """Timestamps (seconds) of the log records matching ``pattern``."""
    stamps = re.findall(rf"^(\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d\d\d) .*{pattern}", log, re.M)
    return [dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f").timestamp() for s in stamps]


def task_state(client: httpx.Client, name: str) -> dict[str, Any]:
    tasks = client.get("/debug/supervised", headers=AUTH).json()["tasks"]
    return next(t for t in tasks if t["name"] == name)


def env_for(postgres: Postgres, tasks: str, **extra: str) -> dict[str, str]:
    return {
        "LIFECYCLE_DB_URL": postgres.url(),
        "LIFECYCLE_TASKS": tasks,
        "LIFESIGNS_TOKEN": TOKEN,
        "LIFESIGNS_DRAIN_DELAY": "0",
        **extra,
    }


def test_failing_task_backs_off_then_is_reported_failed_while_service_stays_ready(
    postgres: Postgres, uvicorn_process: StartUvicorn
) -> None:
    server = uvicorn_process(APP, env=env_for(postgres, "failing", LIFECYCLE_ORPHAN="1"))
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        deadline = time.monotonic() + 20.0
        while task_state(client, "failing")["phase"] != "failed":
            assert time.monotonic() < deadline, task_state(client, "failing")
            assert client.get("/livez").status_code == 200
            time.sleep(0.1)
        state = task_state(client, "failing")
        # max_restarts=4: the fifth failure within 30 s is one too many.
        assert state["failures"] == 5
        assert state["runs"] == 5
        assert "RuntimeError: the payments API said no" in str(state["last_error"])
        assert "more than 4 restarts within 30 s" in str(state["failed_reason"])
        # Not critical: the service stays live and ready; health warns and names the task.
        assert client.get("/livez").status_code == 200
        assert client.get("/readyz").status_code == 200
        health = client.get("/health", headers=AUTH).json()
        assert health["status"] == "warn"
        entry = health["checks"]["task.failing:responseTime"][0]
        assert entry["status"] == "fail"
        assert "more than 4 restarts" in entry["output"]
        metrics = client.get("/metrics").text
        assert 'lifesigns_task_runs_total{outcome="failure",task="failing"} 5.0' in metrics
        assert 'lifesigns_task_failed{task="failing"} 1.0' in metrics

    log = server.log_text()
    assert "Traceback (most recent call last)" in log
    assert 'raise RuntimeError("the payments API said no")' in log
    # Back-off: retries after about 0.2, 0.4, 0.8, 1.6 s (each give or take 10 %).
    runs = log_times(log, r"task failing failed(?: \(\d+ in a row\)|$)")
    assert len(runs) == 5, log
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert 0.1 <= gaps[0] <= 0.45, gaps
    for shorter, longer in itertools.pairwise(gaps):
        assert 1.4 <= longer / shorter <= 2.8, gaps
    assert "task failing failed and will not be restarted (health warns)" in log
    # The seed-001 pattern is named at start-up, with its coroutine and line. uvicorn
    # imports the app before its loop runs, so this task sits on a loop that never runs.
    assert re.search(
        r"WARNING lifesigns.tasks: task 'rate-limit-cleanup' \(_periodic_cleanup\(\) at "
        r"\S*lifecycle_app\.py:\d+ in _periodic_cleanup.*\) is pending on an event loop "
        r"that is not running .*: it will never run",
        log,
    ), log


def test_hanging_task_is_cancelled_at_its_timeout_naming_the_stuck_line(
    postgres: Postgres, uvicorn_process: StartUvicorn
) -> None:
    server = uvicorn_process(APP, env=env_for(postgres, "hanging"))
    line = marker_line("HANG-LINE")
    server.wait_for_log(
        rf"task hanging timed out after 0\.4 s and was cancelled; it was stuck at "
        rf"\S*lifecycle_app\.py:{line} in _wait_for_a_reply_that_never_comes: "
        r"await asyncio\.Event\(\)\.wait\(\)",
        timeout=15.0,
    )
    deadline = time.monotonic() + 15.0
    while len(log_times(server.log_text(), "task hanging timed out")) < 3:
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.1)
    # Runs are due every 1 s and each is cut at 0.4 s: the next run keeps its slot.
    overruns = log_times(server.log_text(), "task hanging timed out")
    gaps = [b - a for a, b in itertools.pairwise(overruns)]
    assert all(0.85 <= gap <= 1.15 for gap in gaps), gaps
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        state = task_state(client, "hanging")
        assert state["overruns"] >= 3
        assert state["failures"] == 0
        assert f"lifecycle_app.py:{line} in _wait_for_a_reply_that_never_comes" in str(
            state["stuck_at"]
        )
        assert client.get("/livez").status_code == 200
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics").text
        assert re.search(
            r'lifesigns_task_runs_total\{outcome="overrun",task="hanging"\} ([3-9]|\d\d)', metrics
        )
