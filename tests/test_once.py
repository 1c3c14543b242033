"""``@signs.periodic(once=...)``: one run per period across processes, with fail-over.

Real processes: two uvicorn services on one real PostgreSQL (``once="cluster"``, an
advisory lock), and ``lifesigns run -- uvicorn --workers 2`` (``once="container"``, a lock
file in the agent's folder). Each run appends ``<pid> <time>`` to a file.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lifesigns import Lifesigns
from lifesigns.errors import ConfigError
from tests.apps.agent_harness import TOKEN, AgentRun, poll
from tests.support.postgres import require_control
from tests.support.servers import UvicornProcess

pytestmark = pytest.mark.timeout(180)

APP = "tests.apps.once_service:app"
EVERY = 0.5


def _runs(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        pid, at = line.split()
        found.append((int(pid), float(at)))
    return found


def _supervised(base: str) -> dict[str, Any]:
    reply = httpx.get(
        base + "/debug/supervised", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    reply.raise_for_status()
    (task,) = [t for t in reply.json()["tasks"] if t["name"] == "tick"]
    return task


def _one_run_per_period(runs: list[tuple[int, float]]) -> str:
    """Runs of a steady window: one process, about one per period, never two at once."""
    times = sorted(at for _, at in runs)
    window = times[-1] - times[0]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    figures = f"{len(times)} runs in {window:.2f} s, smallest gap {min(gaps):.3f} s"
    assert len({pid for pid, _ in runs}) == 1, (figures, runs)
    assert len(times) <= window / EVERY + 2, figures
    assert min(gaps) >= EVERY * 0.5, figures
    return figures


def test_an_unknown_once_is_named_with_what_is_allowed():
    signs = Lifesigns(service="once-bad")
    with pytest.raises(ConfigError, match=r"once='twice'; allowed: worker, container, cluster"):

        @signs.periodic(every=1, once="twice")
        async def nothing() -> None: ...


def test_once_cluster_runs_once_per_period_across_two_services_and_fails_over(postgres, tmp_path):
    runs = tmp_path / "runs.txt"
    env = {
        "DATABASE_URL": postgres.url(),
        "ONCE_RUNS": str(runs),
        "ONCE_SCOPE": "cluster",
        "ONCE_EVERY": str(EVERY),
        "LIFESIGNS_TOKEN": TOKEN,
        "LIFESIGNS_EXPOSE": "all",  # /debug/supervised on the application port
    }
    with UvicornProcess(APP, env=env) as first, UvicornProcess(APP, env=env) as second:
        first.wait_ready(timeout=30)
        second.wait_ready(timeout=30)
        poll(lambda: len(_runs(runs)) >= 3, 30, "three runs")
        start = len(_runs(runs))
        poll(lambda: len(_runs(runs)) >= start + 8, 30, "eight more runs")
        steady = _runs(runs)[start:]
        figures = _one_run_per_period(steady)
        leader_pid = steady[0][0]
        by_pid = {first.pid: first, second.pid: second}
        leader, follower = (first, second) if leader_pid == first.pid else (second, first)
        assert leader_pid in by_pid, (leader_pid, by_pid)
        # The holder shows in /debug/supervised on both services.
        led = _supervised(leader.url)["leader"]
        followed = _supervised(follower.url)["leader"]
        assert led["scope"] == "cluster" and led["leading"] is True, led
        assert followed["leading"] is False, followed
        assert f"pid {leader_pid}" in followed["holder"]["application_name"], followed
        assert followed["holder"]["backend_pid"] == led["holder"]["backend_pid"]
        assert _supervised(follower.url)["not_leading"] >= 1
        # The leader dies without a word: the other service takes over.
        killed_at = time.time()
        os.kill(leader_pid, signal.SIGKILL)
        poll(
            lambda: any(pid == follower.pid and at > killed_at for pid, at in _runs(runs)),
            30,
            "the follower running the task",
        )
        print(f"once=cluster: {figures}; took over after the leader was killed")


def test_once_container_runs_in_one_worker_under_the_agent_and_fails_over(tmp_path):
    runs = tmp_path / "runs.txt"
    env = {
        "ONCE_RUNS": str(runs),
        "ONCE_SCOPE": "container",
        "ONCE_EVERY": str(EVERY),
        "LIFESIGNS_EXPOSE": "all",
    }

    def server(port: int) -> list[str]:
        from tests.apps.agent_harness import uvicorn

        command = uvicorn(port, workers=2)
        command[command.index("tests.apps.agent_service:app")] = APP
        return command

    with AgentRun(server, env=env) as agent:
        agent.start(workers=2)
        poll(lambda: len(_runs(runs)) >= 3, 30, "three runs")
        start = len(_runs(runs))
        poll(lambda: len(_runs(runs)) >= start + 8, 30, "eight more runs")
        steady = _runs(runs)[start:]
        figures = _one_run_per_period(steady)
        leader_pid = steady[0][0]
        workers = {w["pid"] for w in agent.ready_workers()}
        assert leader_pid in workers, (leader_pid, workers)
        task = poll(
            lambda: (t := _supervised(agent.app))["leader"]["holder_pid"] and t, 10, "a dump"
        )
        assert task["leader"]["scope"] == "container"
        assert task["leader"]["holder_pid"] == leader_pid, task
        killed_at = time.time()
        os.kill(leader_pid, signal.SIGKILL)
        poll(
            lambda: any(pid != leader_pid and at > killed_at for pid, at in _runs(runs)),
            30,
            "another worker running the task",
        )
        poll(lambda: len([r for r in _runs(runs) if r[1] > killed_at]) >= 6, 30, "more runs")
        after = [r for r in _runs(runs) if r[1] > killed_at + 2 * EVERY]
        assert len({pid for pid, _ in after}) == 1, after
        print(f"once=container: {figures}; another worker took over after SIGKILL")


def test_once_cluster_survives_a_database_restart_with_one_leader(postgres, tmp_path):
    server = require_control(postgres)
    runs = tmp_path / "runs.txt"
    env = {
        "DATABASE_URL": postgres.url(),
        "ONCE_RUNS": str(runs),
        "ONCE_SCOPE": "cluster",
        "ONCE_EVERY": str(EVERY),
    }
    with UvicornProcess(APP, env=env) as first, UvicornProcess(APP, env=env) as second:
        first.wait_ready(timeout=30)
        second.wait_ready(timeout=30)
        poll(lambda: len(_runs(runs)) >= 3, 30, "three runs")
        server.restart()  # every session ends: the lock goes with the leader's
        restarted = time.time()
        # The lead is lost with the connection and taken again on a new one, by one process.
        poll(
            lambda: len([r for r in _runs(runs) if r[1] > restarted + 2 * EVERY]) >= 6,
            40,
            "six runs after the restart",
        )
        after = [r for r in _runs(runs) if r[1] > restarted + 2 * EVERY]
        _one_run_per_period(after)
        assert {pid for pid, _ in after} <= {first.pid, second.pid}
