"""``lifesigns run`` with real uvicorn and gunicorn workers: stalls named from outside.

One side port for every worker; a freeze in one worker is named (file:line, request) in
the agent's log while it lasts, even while C code holds the GIL; the side port answers
throughout; the other worker keeps serving; a worker frozen past ``live_fail_after`` is
replaced only after its incident file is written.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps.agent_harness import (
    AgentRun,
    ControlServer,
    ProbePoller,
    alive,
    gunicorn,
    marker_line,
    poll,
    uvicorn,
)

pytestmark = pytest.mark.slow

THRESHOLD = 0.25
# The requirement is threshold + 100 ms; this bound leaves room for a loaded test machine.
DETECTION_BOUND = THRESHOLD + 0.5
LIVEZ_P99 = 0.05
POLL_EVERY = 0.03


def _in_background(url: str, timeout: float = 60.0) -> threading.Thread:
    def call() -> None:
        # The worker may be killed under it: that is the point of some tests.
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=timeout)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def _stall_line(function: str, marker: str, route: str, gil: bool = False) -> str:
    line = marker_line(marker)
    holding = ", holding the GIL" if gil else ""
    return (
        rf"worker (?P<slot>\d+) \(pid (?P<pid>\d+)\) stalled (?P<seconds>[\d.]+) s in "
        rf"tests/apps/agent_service\.py:{line} in {function}{holding}, during GET {route}"
    )


def _other_worker_serves(agent: AgentRun, frozen_pid: int) -> None:
    answer = httpx.get(agent.app + "/pid", timeout=2.0)
    assert answer.status_code == 200
    assert answer.json()["pid"] != frozen_pid


def _freezes_are_named(agent: AgentRun) -> None:
    workers = agent.workers()
    assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2, workers
    with (
        ControlServer() as control_server,
        # Every 30 ms: some 250 answers, so that the p99 is not the one worst answer
        # (of ~75 polls at 0.1 s, index int(n * 0.99) was the maximum).
        ProbePoller(control_server.url, every=POLL_EVERY) as control,
        ProbePoller(agent.side + "/livez", every=POLL_EVERY) as livez,
    ):
        # A Python-level freeze: time.sleep, the GIL released.
        freeze = _in_background(agent.app + "/freeze/sleep/2.5")
        found = agent.wait_for_log(
            _stall_line("freeze_sleep", "sleep", r"/freeze/sleep/(?:2\.5|\{seconds\})"), 10
        )
        assert float(found["seconds"]) <= DETECTION_BOUND, found.group(0)
        sleep_detected = float(found["seconds"])
        frozen = int(found["pid"])
        _other_worker_serves(agent, frozen)
        during = agent.get(f"/debug/stalls?worker={found['slot']}").json()
        current = during["workers"][found["slot"]]["current"]
        assert current is not None and "freeze_sleep" in current["headline"], during
        assert any(f["app"] and f["function"] == "freeze_sleep" for f in current["stack"])
        freeze.join(30)
        agent.wait_for_log(rf"worker {found['slot']} \(pid {frozen}\) was stalled", 10)

        # C code holding the GIL: a catastrophic regular expression, seconds long.
        freeze = _in_background(agent.app + "/freeze/regex/27")
        found = agent.wait_for_log(
            _stall_line("freeze_regex", "regex", r"/freeze/(?:regex/27|regex/\{n\})", gil=True), 10
        )
        assert float(found["seconds"]) <= DETECTION_BOUND, found.group(0)
        regex_detected = float(found["seconds"])
        _other_worker_serves(agent, int(found["pid"]))
        verbose = agent.get("/livez?verbose").text
        assert "freeze_regex" in verbose and "holding the GIL" in verbose, verbose
        freeze.join(60)
    figures = (
        f"named after: sleep {sleep_detected:.2f} s, GIL-held regex {regex_detected:.2f} s; "
        f"side-port /livez: {len(livez.results)} polls, p99 {livez.p99() * 1000:.1f} ms; "
        f"a trivial HTTP server polled alongside: p99 {control.p99() * 1000:.1f} ms"
    )
    print(figures)
    statuses = [status for status, _ in livez.results]
    assert len(statuses) >= 20 and set(statuses) == {200}, statuses
    # 50 ms is the goal; when the machine itself is slower (the trivial server polled at
    # the same time says so), the agent must stay within twice what it allows.
    assert livez.p99() <= max(LIVEZ_P99, 2 * control.p99()), figures


def test_uvicorn_workers_share_one_side_port_and_their_freezes_are_named():
    with AgentRun(
        uvicorn, options=["--stall-threshold", str(THRESHOLD), "--live-fail-after", "60"]
    ) as agent:
        agent.start(workers=2)
        _freezes_are_named(agent)
        assert "Address already in use" not in agent.log()


def _incident(agent: AgentRun) -> dict[str, Any]:
    files = poll(lambda: sorted(agent.incident_dir.glob("incident-*.json")), 15, "an incident")
    assert Path(str(files[0]).removesuffix(".json") + ".txt").exists()
    loaded: dict[str, Any] = json.loads(files[0].read_text())
    return loaded


def test_gunicorn_worker_frozen_past_live_fail_after_is_replaced_after_its_evidence():
    with AgentRun(
        gunicorn,
        options=["--stall-threshold", str(THRESHOLD), "--live-fail-after", "2", "--cooldown", "0"],
    ) as agent:
        agent.start(workers=2)
        before = {w["pid"] for w in agent.workers()}
        freeze = _in_background(agent.app + "/freeze/holding/30")
        found = agent.wait_for_log(
            _stall_line("freeze_holding", "holding", r"/freeze/holding/(?:30|\{seconds\})"), 10
        )
        frozen = int(found["pid"])
        incident = _incident(agent)
        # The evidence was taken from the live process: its stacks, its request, its pool.
        assert incident["worker"]["pid"] == frozen
        assert incident["worker"]["request"].startswith("GET /freeze/holding/")
        main = next(t for t in incident["stacks"]["python"]["threads"] if t["native_id"] == frozen)
        assert any(f["app"] and f["line"] == marker_line("holding") for f in main["frames"]), main
        holders = incident["published"]["dumps"]["pool"]["engines"]["database"]["holders"]
        assert holders, incident["published"]["dumps"]["pool"]
        assert incident["stacks"]["native"]["threads"], incident["stacks"]["native"]
        assert TOKEN_NOT_IN(incident)
        # The worker's own watchdog (the GIL was free) named the same frame.
        assert incident["in_process"]["agrees"] is True, incident["in_process"]
        # Then the worker was made to dump its own traceback, and died.
        agent.wait_for_log(rf"worker pid {frozen}'s own traceback", 15)
        poll(lambda: not alive(frozen), 15, f"worker {frozen} gone")
        written = agent.incident_dir / incident["files"]["json"]
        updated = poll(
            lambda: (d := json.loads(written.read_text())).get("traceback_at_kill") and d,
            10,
            "the traceback added to the incident",
        )
        assert re.search(
            rf'agent_service\.py", line {marker_line("holding")} in freeze_holding',
            updated["traceback_at_kill"] or "",
        ), updated["traceback_at_kill"]
        # gunicorn replaced it, and the service answers again.
        after = poll(
            lambda: {w["pid"] for w in agent.ready_workers()} - before, 30, "a replacement"
        )
        assert frozen not in after
        assert httpx.get(agent.app + "/pid", timeout=5).status_code == 200
        assert agent.get("/livez", token=False).status_code == 200
        freeze.join(5)


def TOKEN_NOT_IN(incident: dict[str, Any]) -> bool:
    from tests.apps.agent_harness import TOKEN

    return TOKEN not in json.dumps(incident)


def test_gunicorn_workers_share_one_side_port_and_their_freezes_are_named():
    with AgentRun(
        gunicorn, options=["--stall-threshold", str(THRESHOLD), "--live-fail-after", "60"]
    ) as agent:
        agent.start(workers=2)
        _freezes_are_named(agent)


def _fastapi_run(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fastapi",
        "run",
        "tests/apps/agent_service.py",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
    ]


def test_fastapi_run_workers_as_in_the_dockerfile_are_watched_by_one_agent():
    with AgentRun(
        _fastapi_run, options=["--stall-threshold", str(THRESHOLD), "--live-fail-after", "60"]
    ) as agent:
        agent.start(workers=2)
        freeze = _in_background(agent.app + "/freeze/sleep/1.5")
        found = agent.wait_for_log(
            _stall_line("freeze_sleep", "sleep", r"/freeze/sleep/(?:1\.5|\{seconds\})"), 10
        )
        _other_worker_serves(agent, int(found["pid"]))
        freeze.join(30)
        assert "Address already in use" not in agent.log()
