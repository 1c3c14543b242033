"""``lifesigns demo``: the command a newcomer runs first must work and say where things are."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port

LIFESIGNS = Path(sys.executable).with_name("lifesigns")


def start_demo(*args: str, log: Path) -> subprocess.Popen[bytes]:
    command = [str(LIFESIGNS)] if LIFESIGNS.exists() else [sys.executable, "-m", "lifesigns"]
    with log.open("wb") as out:
        return subprocess.Popen(
            [*command, "demo", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def wait_for_ready(
    base: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"demo exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"demo not ready within {timeout} s:\n{log.read_text()}")


def wait_for_workers(side: str, token: str, count: int, timeout: float = 30) -> None:
    """Until the agent's side port lists ``count`` ready workers."""
    deadline = time.monotonic() + timeout
    workers: object = None
    while time.monotonic() < deadline:
        reply = httpx.get(
            f"{side}/debug/workers", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        workers = reply.json().get("workers") if reply.status_code == 200 else reply.text
        if isinstance(workers, list) and sum(1 for w in workers if w["ready"]) == count:
            return
        time.sleep(0.2)
    raise AssertionError(f"not {count} ready workers within {timeout} s: {workers}")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_demo_serves_orders_and_prints_its_probe_urls(backend, tmp_path, request):
    port = free_port()
    side = free_port()
    args = ["--port", str(port), "--token", "demo-token-0123456789", "--side-port", str(side)]
    password = None
    if backend == "postgres":
        postgres = request.getfixturevalue("postgres")
        args += ["--database-url", postgres.url()]
        password = postgres.password
    else:
        args += ["--database-url", f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"]
    log = tmp_path / "demo.log"
    process = start_demo(*args, log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_ready(base, process, log)
        placed = httpx.post(f"{base}/orders", json={"item": "tea", "quantity": 3}, timeout=5)
        assert placed.status_code == 201
        order = placed.json()
        assert httpx.get(f"{base}/orders/{order['id']}", timeout=5).json()["item"] == "tea"
        stats = httpx.get(f"{base}/orders/stats", timeout=5).json()
        assert stats["quantity"] >= 3
        bad = httpx.post(f"{base}/orders", json={"item": "", "quantity": 0}, timeout=5)
        assert bad.status_code == 422
        health = httpx.get(
            f"{base}/health", headers={"Authorization": "Bearer demo-token-0123456789"}, timeout=5
        ).json()
        assert health["checks"]["orders-table:responseTime"][0]["details"]["orders"] >= 1
        # The default shape: two workers under the agent, one side port for both.
        wait_for_workers(f"http://127.0.0.1:{side}", "demo-token-0123456789", 2)
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, as a person at the terminal would
        process.wait(15)
    output = log.read_text()
    assert re.search(rf"readiness +{re.escape(base)}/readyz", output)
    assert f"{base}/livez" in output
    if password:
        assert password not in output
        assert ":***@" in output


def test_demo_refuses_a_bad_port():
    command = [str(LIFESIGNS)] if LIFESIGNS.exists() else [sys.executable, "-m", "lifesigns"]
    done = subprocess.run(
        [*command, "demo", "--port", "70000"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "--port 70000 is not a port" in done.stderr


def test_unknown_command_lists_the_commands():
    command = [str(LIFESIGNS)] if LIFESIGNS.exists() else [sys.executable, "-m", "lifesigns"]
    done = subprocess.run([*command, "nosuch"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown command 'nosuch'; commands: probe, demo" in done.stderr


def test_demo_freeze_is_named_on_the_side_port_while_the_loop_is_frozen(tmp_path):
    port, side = free_port(), free_port()
    token = "demo-token-0123456789"
    log = tmp_path / "demo.log"
    process = start_demo(
        "--workers",
        "1",  # one worker in the demo's process: its own side port (the agent's: below)
        "--port",
        str(port),
        "--side-port",
        str(side),
        "--token",
        token,
        "--database-url",
        f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
        log=log,
    )
    base, side_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{side}"
    try:
        wait_for_ready(base, process, log)
        froze = threading.Thread(
            target=lambda: httpx.get(f"{base}/lab/freeze?seconds=3", timeout=10), daemon=True
        )
        froze.start()
        auth = {"Authorization": f"Bearer {token}"}
        seen = ""
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and "freeze" not in seen:
            seen = httpx.get(f"{side_base}/debug/stalls", headers=auth, timeout=2).text
            time.sleep(0.1)
        froze.join(10)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(15)
    assert "lifesigns/lab/app.py" in seen, seen
    assert "freeze" in seen
    output = log.read_text()
    assert f"side port  {side_base}/livez" in output
    assert re.search(
        r"loop stall ended after 3\.\d+ s: lifesigns/lab/app\.py:\d+ freeze, time\.sleep", output
    )


def test_demo_under_the_agent_names_a_freeze_from_outside_while_the_side_port_answers(tmp_path):
    port, side = free_port(), free_port()
    log = tmp_path / "demo.log"
    process = start_demo(
        "--port",
        str(port),
        "--side-port",
        str(side),
        "--token",
        "demo-token-0123456789",
        "--database-url",
        f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
        log=log,
    )
    base, side_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{side}"
    try:
        wait_for_ready(base, process, log)
        wait_for_workers(side_base, "demo-token-0123456789", 2)
        froze = threading.Thread(
            target=lambda: httpx.get(f"{base}/lab/freeze?seconds=3", timeout=10), daemon=True
        )
        froze.start()
        answers = []
        while froze.is_alive():
            answers.append(httpx.get(f"{side_base}/livez", timeout=2).status_code)
            time.sleep(0.1)
        froze.join(10)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(20)
    assert answers and set(answers) == {200}, answers
    output = log.read_text()
    assert re.search(
        r"lifesigns\.agent: (still )?worker \d \(pid \d+\) stalled [\d.]+ s in "
        r"lifesigns/lab/app\.py:\d+ in (create_app\.<locals>\.)?freeze, during GET /lab/freeze",
        output,
    ), output[-3000:]
