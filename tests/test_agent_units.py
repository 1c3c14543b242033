"""The agent's parts, each on its own: sampler, monitor, router, incidents, restart budget.

Real processes and real py-spy; no server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lifesigns._config import Settings
from lifesigns._secrets import SecretRedactor
from lifesigns.agent.incidents import IncidentWriter
from lifesigns.agent.monitor import AgentSettings, Monitor
from lifesigns.agent.restarts import RestartBudget
from lifesigns.agent.sampler import is_application_frame, py_spy, sample
from lifesigns.agent.server import AgentHost, AgentSidePort
from lifesigns.agent.slots import SlotTable

SRC = str(Path(__file__).resolve().parents[1] / "src")
TOKEN = "unit-token-0123456789abcdef"

FROZEN = textwrap.dedent(
    """
    import re, sys, time
    from lifesigns.agent.slots import SlotTable

    def frozen_in_regex():
        while True:
            re.match(r"^(a+)+$", "a" * 22 + "!")  # holds the GIL, over and over

    slot = SlotTable.open(sys.argv[1]).take()
    slot.publish(phase="ready", ready=True, request="GET /reports/{id}", request_ns=1)
    print(slot.index, flush=True)
    frozen_in_regex()
    """
)

needs_py_spy = pytest.mark.skipif(py_spy() is None, reason="py-spy is not installed")


class Port:
    """The agent's side port on a free port, asked through its router (no socket needed)."""

    def __init__(self, monitor: Monitor, token: str | None, incidents=None) -> None:
        host = AgentHost(monitor, Settings(token=token), incidents=incidents)
        self.side = AgentSidePort(host, "127.0.0.1", 0)
        self.side.start()

    def route(self, method: str, target: str, headers: dict[str, str]):
        path, _, query = target.partition("?")
        reply = self.side.router.handle(method, path, query, headers)
        return reply.status, reply.content_type, reply.body

    def __enter__(self) -> Port:
        return self

    def __exit__(self, *exc: object) -> None:
        self.side.stop()


@pytest.fixture
def frozen_worker(tmp_path):
    """A process that takes a slot, never beats, and spins in a regex."""
    script = tmp_path / "frozen_app.py"
    script.write_text(FROZEN)
    table = SlotTable.create(tmp_path / "slots", 4)
    process = subprocess.Popen(
        [sys.executable, str(script), str(table.path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert process.stdout is not None
    index = int(process.stdout.readline())
    yield table, process, index, script
    process.kill()
    process.wait(10)
    table.close()


@needs_py_spy
def test_a_sample_names_the_thread_holding_the_gil_and_the_application_frame(frozen_worker):
    _, process, _, script = frozen_worker
    taken = sample(process.pid, timeout=5)
    assert taken.error is None, taken.error
    holder = taken.gil_holder
    assert holder is not None and holder.native_id == process.pid
    top = holder.top_app_frame
    assert top is not None and top.function == "frozen_in_regex"
    assert top.filename == str(script) and top.line == 7
    # The standard library's frame above it is not the application's.
    assert holder.frames[0].function == "match" and not holder.frames[0].app
    native = sample(process.pid, native=True, timeout=5)
    assert native.error is None and any(f.native for t in native.threads for f in t.frames)


def test_a_missing_process_is_an_error_not_an_exception():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    assert sample(gone.pid, timeout=5).error


def test_the_application_is_what_is_not_stdlib_site_packages_or_lifesigns():
    assert is_application_frame("/srv/app/reports.py")
    assert not is_application_frame(os.__file__)
    assert not is_application_frame("/venv/lib/python3.11/site-packages/fastapi/routing.py")
    assert not is_application_frame(f"{SRC}/lifesigns/agent/worker.py")
    assert not is_application_frame("<frozen importlib._bootstrap>")
    assert not is_application_frame("/usr/lib/x86_64-linux-gnu/libc.so.6")


@needs_py_spy
def test_a_frozen_worker_in_a_dry_run_is_recorded_and_fails_liveness(frozen_worker, tmp_path):
    table, process, index, _ = frozen_worker
    incidents = IncidentWriter(tmp_path / "incidents", redact=SecretRedactor([TOKEN]).redact)
    settings = AgentSettings(stall_threshold=0.1, live_fail_after=0.5, dry_run=True)
    monitor = Monitor(table, settings, runtime_dir=tmp_path, incidents=incidents)
    with Port(monitor, TOKEN, incidents) as router:
        _look_at_a_frozen_worker(router, monitor, incidents, process, index)


def _look_at_a_frozen_worker(router, monitor, incidents, process, index):
    auth = {"authorization": f"Bearer {TOKEN}"}
    monitor.check()  # the slot was taken a moment ago: a first look, no stall yet
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not incidents.recent():
        monitor.check()
        time.sleep(0.02)
    assert incidents.recent(), "no incident within 20 s"
    status, _, body = router.route("GET", "/livez?verbose", auth)
    text = body.decode()
    assert status == 503, text
    assert "cannot be replaced (dry run)" in text and "all 1 workers frozen" in text
    status, _, body = router.route("GET", "/livez", {})
    assert status == 503 and f"[-]worker-{index} failed: reason withheld" in body.decode()
    assert "frozen_app.py:7 in frozen_in_regex, holding the GIL, during GET /reports/{id}" in text
    assert router.route("GET", "/readyz", {})[0] == 503
    status, _, body = router.route("GET", f"/debug/stalls?worker={index}", auth)
    current = json.loads(body)["workers"][str(index)]["current"]
    assert status == 200 and current["ongoing"] and current["request"] == "GET /reports/{id}"
    assert current["action"].startswith("dry run")
    status, _, body = router.route("GET", f"/debug/threads?worker={index}", auth)
    live = json.loads(body)
    assert status == 200 and live["pid"] == process.pid
    assert any(f["function"] == "frozen_in_regex" for t in live["threads"] for f in t["frames"]), (
        live
    )
    assert router.route("GET", "/debug/threads?worker=3", auth)[0] == 404
    incident = json.loads((incidents.directory / incidents.recent()[0]).read_text())
    assert incident["gil_holder"]["native_id"] == process.pid
    assert incident["worker"]["request"] == "GET /reports/{id}"
    assert process.poll() is None  # a dry run kills nothing


def test_the_router_keeps_dumps_behind_the_token(tmp_path):
    table = SlotTable.create(tmp_path / "slots", 2)
    monitor = Monitor(table, AgentSettings(), runtime_dir=tmp_path)
    with Port(monitor, TOKEN) as router, Port(monitor, None) as no_token:
        _ask_without_and_with_the_token(router, no_token)


def _ask_without_and_with_the_token(router, no_token):
    assert router.route("GET", "/livez", {})[0] == 200  # no worker yet: nothing is frozen
    assert router.route("GET", "/readyz", {})[0] == 503  # ... and nothing is ready
    assert router.route("GET", "/debug/workers", {})[0] == 401
    assert router.route("GET", "/debug/workers", {"authorization": "Bearer wrong"})[0] == 401
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert router.route("GET", "/debug/workers", auth)[0] == 200
    status, _, body = router.route("GET", "/debug/stalls?worker=one", auth)
    assert status == 400 and b"'one' is not a slot number" in body
    assert router.route("GET", "/debug/nothing", auth)[0] == 404
    assert router.route("POST", "/livez", {})[0] == 405
    assert router.route("GET", "/elsewhere", {})[0] == 404
    assert no_token.route("GET", "/debug/workers", {"authorization": "Bearer "})[0] == 401


def test_incident_files_are_bounded_in_number_and_size_and_hold_no_secret(tmp_path):
    secret = "s3cret-password-value"
    writer = IncidentWriter(
        tmp_path, redact=SecretRedactor([secret]).redact, max_files=2, max_bytes=8192
    )
    for n in range(3):
        path = writer.write(
            {
                "summary": f"stall {n}",
                "worker": {"slot": n, "pid": 100 + n},
                "published": {"dumps": {"pool": "postgresql://app:" + secret + "@db/x"}},
                "stacks": {"python": {"threads": [], "blob": "x" * 20_000}},
            }
        )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len([n for n in names if n.endswith(".json")]) == 2, names
    assert not any(n.startswith(".") for n in names)  # no temporary file left behind
    data = path.read_text()
    assert len(data) <= 8192 and secret not in data
    assert "stacks" in json.loads(data)["truncated"][0]
    assert secret not in path.with_suffix(".txt").read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="max_files=0"):
        IncidentWriter(tmp_path, redact=str, max_files=0)


def test_the_restart_budget_backs_off_then_runs_out():
    budget = RestartBudget(max_restarts=3, window=100, cooldown=2)
    assert budget.allows(0)
    budget.record(0)
    assert not budget.allows(1) and budget.allows(2)  # cool-down 2 s
    budget.record(2)
    assert not budget.allows(5) and budget.allows(6)  # doubled: 4 s
    budget.record(6)
    assert budget.exhausted(50) and not budget.allows(90)
    assert budget.allows(106)  # the window slid past the first two
    with pytest.raises(ValueError, match="max_restarts=-1"):
        RestartBudget(max_restarts=-1)


def test_metrics_of_two_workers_merge_into_one_family_labelled_by_slot():
    from lifesigns.agent.metrics import merge, relabel

    assert relabel("up 1", 3) == 'up{worker="3"} 1'
    assert relabel("up{} 1", 3) == 'up{worker="3"} 1'
    assert relabel('hits_total{path="/a b"} 2', 0) == 'hits_total{worker="0",path="/a b"} 2'
    one = "# HELP hits Hits.\n# TYPE hits counter\nhits_total 1\nhits_created 5\n"
    two = "# HELP hits Hits.\n# TYPE hits counter\nhits_total 7\nhits_created 6\n"
    merged = merge([(0, one), (1, two)]).splitlines()
    assert merged == [
        "# HELP hits Hits.",
        "# TYPE hits counter",
        'hits_total{worker="0"} 1',
        'hits_created{worker="0"} 5',
        'hits_total{worker="1"} 7',
        'hits_created{worker="1"} 6',
    ]


async def test_a_worker_under_the_agent_beats_into_its_slot_and_publishes_its_dumps(
    tmp_path, monkeypatch
):
    import asyncio

    from lifesigns import Lifesigns

    table = SlotTable.create(tmp_path / "slots", 4)
    monkeypatch.setenv("LIFESIGNS_AGENT_DIR", str(tmp_path))
    signs = Lifesigns(service="unit", token=TOKEN, stall_threshold=0.05)
    assert "agent-link" in [c.name for c in signs.host.components]
    await signs.start()
    try:
        (view,) = table.held()
        assert view.pid == os.getpid()
        first = view.beat_ns
        await asyncio.sleep(0.3)
        again = table.read(view.index)
        assert again is not None and again.beat_ns > first and again.age() < 0.2
        published = tmp_path / f"worker-{view.index}.json"
        deadline = time.monotonic() + 10
        while not published.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        document = json.loads(published.read_text())
        assert document["pid"] == os.getpid() and "stalls" in document["dumps"]
        assert "threads" not in document["dumps"]
        assert TOKEN not in published.read_text()
        assert (tmp_path / f"metrics-{view.index}.prom").read_text().startswith("# HELP")
    finally:
        await signs.stop()
    assert table.held() == []  # the slot is given back at the end of the lifespan
