"""``lifesigns run`` as a process: signals reach the server, no orphans, a lean agent, a budget.

Real uvicorn servers with two workers under a real agent, driven over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.apps.agent_harness import AgentRun, alive, gunicorn, poll, uvicorn

pytestmark = pytest.mark.slow

FRAMEWORKS = ("fastapi", "starlette", "uvicorn", "gunicorn", "sqlalchemy", "prometheus_client")


async def _many(url: str, count: int) -> list[int]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one() -> int:
            try:
                return (await client.get(url)).status_code
            except httpx.HTTPError:
                return 0

        return list(await asyncio.gather(*(one() for _ in range(count))))


def _in_flight(agent: AgentRun) -> int:
    total = 0
    for worker in agent.workers():
        answer = agent.get(f"/debug/published?worker={worker['slot']}")
        if answer.status_code == 200:
            total += answer.json()["dumps"]["requests"]["in_flight"]
    return total


def test_sigterm_to_the_agent_drains_200_requests_and_exits_as_the_server_did():
    with AgentRun(uvicorn) as agent:
        agent.start(workers=2)
        process = agent.process
        assert process is not None

        async def scenario() -> list[int]:
            requests = asyncio.ensure_future(_many(agent.app + "/slow/4", 200))
            await asyncio.to_thread(poll, lambda: _in_flight(agent) >= 200, 30, "200 in flight")
            process.send_signal(signal.SIGTERM)
            return await requests

        statuses = asyncio.run(scenario())
        assert statuses.count(200) == 200, sorted(set(statuses))
        returncode = process.wait(30)
        server_status = agent.wait_for_log(r"the server exited with (-?\d+)", 5)
        assert returncode == int(server_status[1])  # uvicorn's supervisor exits 0 on SIGTERM


@pytest.mark.parametrize("server", [uvicorn, gunicorn], ids=["uvicorn", "gunicorn"])
def test_sigkill_to_the_agent_leaves_no_server_process(server):
    with AgentRun(server) as agent:
        agent.start(workers=2)
        pids = {agent.server_pid(), *(w["pid"] for w in agent.workers())}
        assert len(pids) == 3 and all(alive(p) for p in pids)
        assert agent.process is not None
        agent.process.kill()
        agent.process.wait(10)
        poll(lambda: not any(alive(p) for p in pids), 15, f"no process left of {sorted(pids)}")


LEAN = textwrap.dedent(
    """
    import os, sys, threading, time

    def record():  # what the agent has imported, every 0.2 s
        out = os.environ["AGENT_MODULES"]
        while True:
            time.sleep(0.2)
            with open(out + ".tmp", "w") as f:
                f.write("\\n".join(sorted(sys.modules)))
            os.replace(out + ".tmp", out)

    threading.Thread(target=record, daemon=True).start()
    from lifesigns.cli import main
    main(sys.argv[1:])
    """
)


def test_the_agent_imports_neither_the_app_nor_any_web_framework(tmp_path: Path):
    modules = tmp_path / "modules.txt"
    with AgentRun(
        uvicorn,
        python=[sys.executable, "-c", LEAN],
        env={"AGENT_MODULES": str(modules), "LIFESIGNS_LOG_FORMAT": "json"},
        options=["--live-fail-after", "60"],
    ) as agent:
        agent.start(workers=2)
        # Make it do everything it does on a stall (sample, report, serve the dumps).
        try:
            httpx.get(agent.app + "/freeze/sleep/1", timeout=10)
        finally:
            agent.wait_for_log(r"stalled [\d.]+ s in tests/apps/agent_service\.py", 10)
        agent.get("/debug/stalls").raise_for_status()
        # Logs for shippers: one JSON object per line, the stall's fields structured.
        stall_line = next(line for line in agent.log().splitlines() if '"event": "stall"' in line)
        fields = json.loads(stall_line)["lifesigns"]
        assert fields["seen_by"] == "agent" and fields["function"] == "freeze_sleep"
        assert fields["site"].startswith("tests/apps/agent_service.py:")
        since = time.time()
        poll(lambda: modules.exists() and modules.stat().st_mtime > since, 5, "a fresh list")
        loaded = set(modules.read_text().split())
        assert "lifesigns.agent.monitor" in loaded and "lifesigns.agent.sampler" in loaded
        heavy = sorted(m for m in loaded if m.split(".")[0] in FRAMEWORKS)
        assert heavy == [], heavy
        assert not any(m.startswith("tests.apps.agent_service") for m in loaded)


def test_the_restart_budget_stops_a_crash_loop_then_liveness_fails():
    with AgentRun(
        uvicorn,
        options=[
            "--stall-threshold",
            "0.25",
            "--live-fail-after",
            "1",
            "--max-restarts",
            "1",
            "--cooldown",
            "0",
        ],
    ) as agent:
        agent.start(workers=2)
        first = _freeze_and_wait(agent, "/freeze/sleep/30", "replaced")
        poll(lambda: first not in {w["pid"] for w in agent.ready_workers()}, 30, "replaced")
        poll(lambda: len(agent.ready_workers()) == 2, 30, "two ready workers again")
        second = _freeze_and_wait(agent, "/freeze/sleep/6", "not replaced")
        assert alive(second)
        assert "gave up after 1 restarts" in agent.log()
        livez = agent.get("/livez", token=False)  # as the in-process port: reasons by token
        assert livez.status_code == 503 and "[-]restarts failed: reason withheld" in livez.text
        livez = agent.get("/livez")
        assert livez.status_code == 503 and "[-]restarts failed: gave up" in livez.text, livez.text
        assert len(list(agent.incident_dir.glob("incident-*.json"))) == 2


def _freeze_and_wait(agent: AgentRun, path: str, action: str) -> int:
    import threading

    since = len(agent.log())  # each freeze is its own: look only at what follows

    def call() -> None:
        with contextlib.suppress(httpx.HTTPError):  # killed under it, on purpose
            httpx.get(agent.app + path, timeout=60)

    threading.Thread(target=call, daemon=True).start()
    found = agent.wait_for_log(
        rf"worker \d+ \(pid (\d+)\) frozen [\d.]+ s, past live_fail_after=1 s; "
        rf"incident \S+; {action}",
        15,
        since=since,
    )
    return int(found[1])


def test_a_bad_option_is_named_with_what_is_allowed():
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "lifesigns", "run", "--stall-threshold", "soon", "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert done.returncode == 2
    assert "--stall-threshold='soon' is not a number of seconds" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "lifesigns", "run", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "no server command" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "lifesigns", "run", "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "LIFESIGNS_MAX_RESTARTS": "many"},
    )
    assert done.returncode == 2
    assert "LIFESIGNS_MAX_RESTARTS='many' is not an integer" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "lifesigns", "run", "--port", "0", "--", "no-such-server-here"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 127 and "cannot start 'no-such-server-here'" in done.stderr


def test_one_scrape_has_every_workers_metrics_labelled_by_slot():
    import shutil
    import subprocess

    with AgentRun(uvicorn) as agent:
        agent.start(workers=2)
        slots = sorted(w["slot"] for w in agent.workers())

        def scraped() -> str | None:
            text = agent.get("/metrics", token=False).text
            labelled = all(f'lifesigns_service_info{{worker="{slot}",' in text for slot in slots)
            return text if labelled else None

        text = poll(scraped, 15, "both workers' metrics on the agent's port")
        assert text.count("# TYPE lifesigns_service_info ") == 1
        assert 'lifesigns_agent_heartbeat_age_seconds{worker="' in text
        assert "lifesigns_agent_workers 2" in text
        promtool = shutil.which("promtool")
        if promtool is not None:
            checked = subprocess.run(
                [promtool, "check", "metrics"],
                input=text,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_server_without_a_supervisor_is_never_killed_and_fails_liveness_instead():
    with AgentRun(
        lambda port: uvicorn(port, workers=1),
        options=["--stall-threshold", "0.25", "--live-fail-after", "1"],
    ) as agent:
        agent.start(workers=1)
        (worker,) = agent.workers()
        assert worker["pid"] == agent.server_pid()
        since = len(agent.log())

        def call() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(agent.app + "/freeze/sleep/4", timeout=30)

        import threading

        threading.Thread(target=call, daemon=True).start()
        agent.wait_for_log(r"not replaced: the worker is the server itself", 15, since=since)
        livez = agent.get("/livez", token=False)
        assert livez.status_code == 503 and "reason withheld" in livez.text, livez.text
        livez = agent.get("/livez")
        assert livez.status_code == 503 and "cannot be replaced" in livez.text, livez.text
        assert alive(worker["pid"])
        # Once it beats again, the service is alive again.
        poll(lambda: agent.get("/livez", token=False).status_code == 200, 15, "alive again")


def test_the_agent_exits_with_the_servers_code_and_names_a_taken_port():
    import socket
    import subprocess

    quick = [sys.executable, "-c", "raise SystemExit(3)"]
    done = subprocess.run(
        [sys.executable, "-m", "lifesigns", "run", "--port", "0", "--", *quick],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 3 and "the server exited with 3" in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "lifesigns", "run", "--port", str(port), "--", *quick],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 2
    assert f"cannot bind the side port 127.0.0.1:{port}" in done.stderr
