"""The side port: bound whenever asked, quiet under tests, never crashing on a taken port,
never printing a traceback for a client that went away, one port for many workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from lifesigns import Lifesigns
from lifesigns.sideport import quiet_reason
from tests.support import StartUvicorn
from tests.support.servers import REPO_ROOT, free_port

TOKEN = "sideport-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process listens on (as the running app in the container would)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys, time\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
            "print(s.getsockname()[1], flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        yield int(holder.stdout.readline())
    finally:
        holder.kill()
        holder.wait(10)


def installed(signs: Lifesigns) -> Starlette:
    app = Starlette()
    signs.install(app)
    return app


def test_a_test_client_ignores_the_environments_side_port_held_by_another_process(
    held_port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LIFESIGNS_SIDE_PORT", str(held_port))
    caplog.set_level(logging.INFO, logger="lifesigns.sideport")
    signs = Lifesigns(watchdog=False, memory=False)
    with TestClient(installed(signs)) as client:
        assert client.get("/livez").status_code == 200
    assert signs.side_port is not None and signs.side_port.port is None
    assert signs.side_port.skipped == "a test client runs the lifespan"
    lines = [r.getMessage() for r in caplog.records if "side port not bound" in r.getMessage()]
    assert len(lines) == 1 and "pass side_port= in code" in lines[0], lines


def test_a_side_port_given_in_code_but_taken_never_fails_the_lifespan(
    held_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lifesigns.sideport")
    signs = Lifesigns(watchdog=False, memory=False, side_port=held_port)
    with TestClient(installed(signs)) as client:
        assert client.get("/livez").status_code == 200
    taken = [r for r in caplog.records if "is taken" in r.getMessage()]
    assert len(taken) == 1, [r.getMessage() for r in caplog.records]
    message = taken[0].getMessage()
    assert f"127.0.0.1:{held_port} is taken" in message and "lifesigns run" in message
    assert f"pid {os.getpid()}" in message


def test_the_side_port_serves_without_the_watchdog() -> None:
    async def scenario() -> tuple[int, int, str]:
        signs = Lifesigns(token=TOKEN, watchdog=False, memory=False, side_port=0)
        await signs.start()
        try:
            assert signs.side_port is not None and signs.side_port.port
            base = f"http://127.0.0.1:{signs.side_port.port}"
            async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                live = (await client.get("/livez")).status_code
                dumps = await client.get("/debug/", headers=AUTH)
                return live, dumps.status_code, dumps.text
        finally:
            await signs.stop()

    live, code, text = asyncio.run(scenario())
    assert (live, code) == (200, 200) and '"requests"' in text


def test_no_traceback_for_clients_that_go_away(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="lifesigns.sideport")

    def abandon(port: int) -> None:
        request = f"GET /debug/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        for n in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request.encode())
                if n % 2:
                    sock.recv(1024)  # the answer has started: then reset mid-body
                # An abortive close (RST): the server's next write fails.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def scenario() -> None:
        signs = Lifesigns(token=TOKEN, watchdog=False, memory=False, side_port=0)
        signs.add_dump("big", lambda: {"rows": ["x" * 1000] * 400})
        await signs.start()
        try:
            assert signs.side_port is not None and signs.side_port.port
            await asyncio.to_thread(abandon, signs.side_port.port)
            deadline = time.monotonic() + 10
            while not [r for r in caplog.records if "went away" in r.getMessage()]:
                assert time.monotonic() < deadline, "no client was seen going away"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # let every server thread finish its write
        finally:
            await signs.stop()

    asyncio.run(scenario())
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err[-3000:]
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    assert all(r.levelno == logging.DEBUG for r in gone)


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["/venv/bin/uvicorn", "app:app", "--reload"], "a reloader runs this worker (--reload)"),
        (["/venv/bin/fastapi", "dev", "main.py"], "a reloader runs this worker (fastapi dev)"),
        (["/venv/bin/fastapi", "run", "main.py", "--workers", "4"], None),
        (["/venv/bin/uvicorn", "app:app", "--workers", "2"], None),
    ],
)
def test_quiet_reason_tells_reloaders_from_servers(argv: list[str], reason: str | None) -> None:
    assert quiet_reason(None, argv, environ={}) == reason


def test_quiet_reason_tells_a_test_client_by_its_lifespan_scope() -> None:
    argv = ["/venv/bin/uvicorn", "app:app"]
    uvicorn_scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    assert quiet_reason(uvicorn_scope, argv, environ={}) is None
    assert quiet_reason({"type": "lifespan", "state": {}}, argv, environ={}) is not None


@pytest.mark.slow
def test_fastapi_run_with_four_workers_shares_one_side_port_without_a_crash(
    tmp_path: Path,
) -> None:
    fastapi = Path(sys.executable).with_name("fastapi")
    if not fastapi.exists():
        pytest.skip("the fastapi command line (fastapi-cli) is not installed")
    port, side = free_port(), free_port()
    log = tmp_path / "fastapi.log"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(REPO_ROOT),
        "LIFESIGNS_SIDE_PORT": str(side),
        "PROBES_EXPOSE": "probes",
    }
    command = [str(fastapi), "run", "tests/apps/probes.py", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "4"]
    with log.open("wb") as out:
        server = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while len(re.findall(r"Application startup complete", log.read_text())) < 4:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{side}/livez", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5).status_code == 200
        time.sleep(1.0)  # a worker that would crash late does so now
        text = log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
    serving = re.findall(r"lifesigns side port listening on \S+ \(worker pid (\d+)\)", text)
    assert len(serving) == 1, text
    started = set(re.findall(r"Started server process \[(\d+)\]", text))
    assert serving[0] in started, text
    assert len(re.findall(r"lifesigns side port \S+ is taken", text)) == 3, text
    assert "Traceback" not in text and "Address already in use" not in text, text
    # uvicorn's supervisor may replace a child still importing on a loaded machine (its
    # 5 s ping timeout) before it starts serving; no worker may die once it has started.
    died = set(re.findall(r"Child process \[(\d+)\] died", text))
    assert not died & started, text


@pytest.mark.slow
def test_a_reloaders_worker_leaves_the_environments_side_port_unbound(
    uvicorn_process: StartUvicorn,
) -> None:
    side = free_port()
    server = uvicorn_process(
        "tests.apps.probes:app",
        env={"LIFESIGNS_SIDE_PORT": str(side), "PROBES_EXPOSE": "probes"},
        extra_args=["--reload", "--reload-dir", str(REPO_ROOT / "tests" / "apps")],
    )
    server.wait_for_log(r"lifesigns side port not bound: a reloader runs this worker", 20)
    assert httpx.get(f"{server.url}/livez", timeout=5).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{side}/livez", timeout=2)
    assert "side port listening" not in server.log_text()


@pytest.mark.slow
def test_side_port_readiness_answers_at_once_from_the_last_result_while_the_loop_is_frozen(
    uvicorn_process: StartUvicorn,
) -> None:
    server = uvicorn_process("tests.apps.stalls:app", env={"STALLS_LIVE_FAIL_AFTER": "30"})
    side = server.wait_for_log(r"lifesigns side port listening on (http://\S+)", 10).group(1)
    assert httpx.get(f"{side}/readyz", timeout=5).status_code == 200
    frozen = threading.Thread(
        target=lambda: httpx.get(f"{server.url}/sleep/4", timeout=30), daemon=True
    )
    frozen.start()
    answers: list[tuple[float, int, str, str | None]] = []
    deadline = time.monotonic() + 3.0
    with httpx.Client(base_url=side, timeout=5) as client:
        while time.monotonic() < deadline and frozen.is_alive():
            t0 = time.monotonic()
            r = client.get("/readyz")
            answers.append(
                (time.monotonic() - t0, r.status_code, r.text, r.headers.get("x-lifesigns-stale"))
            )
            time.sleep(0.1)
        assert client.get("/livez").status_code == 200  # frozen, but not past live_fail_after
    frozen.join(30)
    stale = [a for a in answers if a[1] == 503]
    assert len(stale) >= 5, answers
    # The loop layer says the loop is frozen: no answer waits out the probe budget (1.3 s);
    # the first may wait for the stall threshold (0.25 s), the others answer at once.
    took = sorted(a[0] for a in stale)
    assert took[-1] < 1.0 and took[len(took) // 2] < 0.2, took
    assert all(a[2].startswith("[-]event loop stalled ") and a[3] == "true" for a in stale)
    assert "last result (stale, " in stale[-1][2]
