"""The agent's side port and an in-process side port give the same answers where they share a path.

Both serve the shared probe router (:mod:`lifesigns.router`) through the shared side-port
server (:mod:`lifesigns.sideport`): a real ``lifesigns run -- uvicorn`` and a real uvicorn
with ``LIFESIGNS_SIDE_PORT``, the same app, the same ``LIFESIGNS_PREFIX`` and ``PATHS``.
"""

from __future__ import annotations

import functools

import httpx
import pytest

from tests.apps.agent_harness import APP, TOKEN, AgentRun, poll, uvicorn
from tests.support.servers import UvicornProcess, free_port

pytestmark = pytest.mark.timeout(120)

SETTINGS = {"LIFESIGNS_PREFIX": "/ops", "LIFESIGNS_PATHS": "startupz=/started"}

# (method, path, with the token)
ASKED = [
    ("GET", "/ops/livez", False),
    ("GET", "/ops/livez?verbose", False),
    ("GET", "/ops/livez?verbose", True),
    ("HEAD", "/ops/livez", False),
    ("POST", "/ops/livez", False),
    ("GET", "/ops/readyz", False),
    ("GET", "/ops/readyz?exclude=nosuch", True),
    ("GET", "/ops/readyz/nosuch", True),
    ("GET", "/ops/started", False),
    ("GET", "/ops/startupz", False),
    ("GET", "/ops/health", False),
    ("GET", "/ops/health", True),
    ("GET", "/ops/metrics", False),
    ("GET", "/ops/debug/", False),
    ("GET", "/ops/debug/", True),
    ("GET", "/ops/debug/nosuch", True),
    ("GET", "/livez", False),
    ("GET", "/elsewhere", False),
]


def _ask(base: str, method: str, path: str, token: bool) -> tuple[int, str, str | None, str]:
    headers = {"Authorization": f"Bearer {TOKEN}"} if token else {}
    reply = httpx.request(method, base + path, headers=headers, timeout=5)
    return (
        reply.status_code,
        reply.headers.get("content-type", ""),
        reply.headers.get("www-authenticate"),
        reply.text,
    )


def _ready(base: str) -> bool:
    try:
        return _ask(base, "GET", "/ops/readyz", False)[0] == 200
    except httpx.HTTPError:
        return False


def _both_workers_ready(base: str) -> bool:
    # Readiness passes with the first worker while the second has not taken its slot
    # yet: wait for both, so that the two ports are compared in one steady state.
    try:
        reply = httpx.get(
            f"{base}/ops/debug/workers", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2
        )
        listed = reply.json()["workers"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return sum(1 for w in listed if w["ready"] and w["phase"] == "ready") >= 2


def test_probe_paths_answer_alike_on_the_agents_port_and_an_in_process_side_port():
    side_port = free_port()
    env = {**SETTINGS, "LIFESIGNS_TOKEN": TOKEN, "LIFESIGNS_SIDE_PORT": str(side_port)}
    with (
        AgentRun(uvicorn, env=SETTINGS) as agent,
        UvicornProcess(APP, env=env),
    ):
        agent.start(workers=0)  # the harness looks at /debug/workers, not under /ops
        in_process = f"http://127.0.0.1:{side_port}"
        poll(functools.partial(_both_workers_ready, agent.side), 40, "both workers ready")
        for base in (agent.side, in_process):
            poll(functools.partial(_ready, base), 40, f"{base}/ops/readyz passing")
        for method, path, token in ASKED:
            there = _ask(agent.side, method, path, token)
            here = _ask(in_process, method, path, token)
            what = f"{method} {path} (token: {token})\nagent: {there}\nin-process: {here}"
            assert there[:3] == here[:3], what
        # Both the same text where the state is the same: a passing probe says "ok".
        assert _ask(agent.side, "GET", "/ops/livez", False)[3] == "ok\n"
        # ... and ?verbose lists each worker on the agent's port.
        verbose = _ask(agent.side, "GET", "/ops/livez?verbose", False)[3]
        assert verbose.count("[+]worker-") == 2, verbose
        # Per-worker dumps are router dumps that read the query.
        listed = httpx.get(
            agent.side + "/ops/debug/workers", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        slots = [w["slot"] for w in listed.json()["workers"]]
        stalls = _ask(agent.side, "GET", f"/ops/debug/stalls?worker={slots[0]}", True)
        assert stalls[0] == 200 and stalls[1] == "application/json", stalls
        bad = _ask(agent.side, "GET", "/ops/debug/stalls?worker=one", True)
        assert bad[0] == 400 and "'one' is not a slot number" in bad[3], bad
