"""The drain delay is waited only where it helps (issue 10, "quiet outside production").

Unset, ``drain_delay`` is 5 s under an orchestrator and 0 elsewhere, and 0 under a test
client or a reloader; an explicit value always wins; start-up logs which and why. Real
uvicorn subprocesses (the harness sets ``LIFESIGNS_DRAIN_DELAY=0``: these tests unset it
with an empty value, which counts as not given), and Starlette's TestClient in process.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from lifesigns import Lifesigns
from lifesigns.drain import ORCHESTRATED_DELAY, Drain, choose_delay
from lifesigns.health.lifecycle import Phase
from tests.support import StartUvicorn, UvicornProcess

APP = "tests.apps.quiet:app"
K8S = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
NO_ORCHESTRATOR = {
    "KUBERNETES_SERVICE_HOST": "",
    "ECS_CONTAINER_METADATA_URI_V4": "",
    "ECS_CONTAINER_METADATA_URI": "",
    "NOMAD_ALLOC_ID": "",
}
SERVER = ["/venv/bin/uvicorn", "app:app"]


@pytest.mark.parametrize(
    ("configured", "argv", "environ", "delay", "why"),
    [
        (None, SERVER, {}, 0.0, "no orchestrator detected (none of KUBERNETES_SERVICE_HOST"),
        (None, SERVER, K8S, ORCHESTRATED_DELAY, "Kubernetes (KUBERNETES_SERVICE_HOST is set)"),
        (
            None,
            SERVER,
            {"ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/x"},
            ORCHESTRATED_DELAY,
            "Amazon ECS (ECS_CONTAINER_METADATA_URI_V4 is set)",
        ),
        (None, SERVER, {"NOMAD_ALLOC_ID": "5b3e"}, ORCHESTRATED_DELAY, "Nomad (NOMAD_ALLOC_ID"),
        (None, [*SERVER, "--reload"], K8S, 0.0, "a reloader runs this worker (--reload)"),
        (None, ["/venv/bin/fastapi", "dev", "main.py"], K8S, 0.0, "(fastapi dev)"),
        (2.5, [*SERVER, "--reload"], {}, 2.5, "set explicitly"),
        (0.0, SERVER, K8S, 0.0, "set explicitly"),
    ],
)
def test_the_delay_is_chosen_by_run_mode_and_orchestrator(
    configured: float | None, argv: list[str], environ: dict[str, str], delay: float, why: str
) -> None:
    chosen, reason = choose_delay(configured, None, argv=argv, environ=environ)
    assert chosen == delay
    assert why in reason, reason


def test_a_test_client_lifespan_chooses_no_delay_even_under_an_orchestrator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("LIFESIGNS_DRAIN_DELAY", raising=False)
    for given, delay, why in [(None, 0.0, "a test client runs the lifespan"), (3, 3, "explicit")]:
        signs = Lifesigns(
            watchdog=False, memory=False, **({} if given is None else {"drain_delay": given})
        )
        app = FastAPI()
        signs.install(app)
        began = time.monotonic()
        with TestClient(app) as client:
            assert client.get("/livez").status_code == 200
        assert time.monotonic() - began < ORCHESTRATED_DELAY
        drain = signs.host.find_layer("drain")
        assert isinstance(drain, Drain)
        assert drain.delay == delay and why in drain.delay_reason, drain.delay_reason
        assert f"drain_delay={delay:g}" in repr(drain)


async def test_a_start_up_finishing_after_sigterm_does_not_put_the_service_back_in_rotation() -> (
    None
):
    # Seen under uvicorn: SIGTERM right after the port opened, while the first checks still
    # ran; start-up then finished and turned readiness back to 200 for the whole delay.
    signs = Lifesigns(watchdog=False, memory=False, drain_delay=30)
    release = asyncio.Event()

    @signs.startup_step("warm-up")
    async def warm_up() -> None:
        await release.wait()

    app = FastAPI(lifespan=signs.lifespan)
    signs.install(app)
    transport = httpx.ASGITransport(app=app)
    async with (
        signs.lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        assert (await client.get("/readyz")).status_code == 503  # still starting
        drain = signs.host.find_layer("drain")
        assert isinstance(drain, Drain)
        drain.begin("SIGTERM received")
        release.set()
        startup = signs._startup_task
        assert startup is not None
        await asyncio.wait_for(startup, timeout=5.0)
        assert signs.lifecycle.phase is Phase.DRAINING
        answer = await client.get("/readyz")
        assert answer.status_code == 503, answer.text
        assert "draining" in answer.text


_STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"


def _stamp(log: str, text: str) -> datetime:
    found = re.findall(_STAMP + r" \S+ lifesigns\.drain: " + re.escape(text), log)
    assert found, (text, log)
    return datetime.strptime(found[-1], "%Y-%m-%d %H:%M:%S,%f")


def _stop(server: UvicornProcess) -> float:
    """SIGTERM ``server``; the seconds until it exited."""
    signalled = time.monotonic()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=ORCHESTRATED_DELAY + 20.0)
    return time.monotonic() - signalled


def _delay_waited(log: str) -> float:
    """Seconds between the drain's start and the end of its delay, from the log's clock."""
    began = _stamp(log, "SIGTERM received: draining.")
    over = _stamp(log, "drain delay over")
    return (over - began).total_seconds()


@pytest.mark.slow
def test_a_plain_local_stop_waits_no_drain_delay(
    uvicorn_process: StartUvicorn, tmp_path: Path
) -> None:
    env = {"QUIET_DIR": str(tmp_path), "LIFESIGNS_DRAIN_DELAY": "", **NO_ORCHESTRATOR}
    server = uvicorn_process(APP, env=env, ready_path="/readyz")
    exited_after = _stop(server)
    log = server.log_text()
    assert "INFO lifesigns.drain: drain_delay 0 s chosen: no orchestrator detected" in log, log
    assert "the server stops accepting in 0 s" in log
    assert "INFO lifesigns.drain: SIGTERM received: draining." in log  # ordinary: not a warning
    assert _delay_waited(log) < 0.5, log
    assert exited_after < ORCHESTRATED_DELAY, log


@pytest.mark.slow
def test_under_kubernetes_the_delay_is_waited_with_readiness_failing(
    uvicorn_process: StartUvicorn, tmp_path: Path
) -> None:
    env = {"QUIET_DIR": str(tmp_path), "LIFESIGNS_DRAIN_DELAY": "", **NO_ORCHESTRATOR, **K8S}
    server = uvicorn_process(APP, env=env, ready_path="/readyz")
    assert "drain_delay 5 s chosen: Kubernetes (KUBERNETES_SERVICE_HOST is set)" in (
        server.log_text()
    )
    signalled = time.monotonic()
    server.send_signal(signal.SIGTERM)
    answers: list[tuple[float, int]] = []
    with httpx.Client(base_url=server.url, timeout=2.0) as probe:
        # Poll through most of the delay: every answer a 503, and the server still serving.
        while time.monotonic() - signalled < ORCHESTRATED_DELAY - 1.5:
            answers.append((time.monotonic() - signalled, probe.get("/readyz").status_code))
            time.sleep(0.2)
    assert answers and all(code == 503 for _, code in answers[1:]), (answers, server.log_text())
    assert answers[-1][0] > ORCHESTRATED_DELAY - 2.0, answers
    server.wait(timeout=ORCHESTRATED_DELAY + 20.0)
    exited_after = time.monotonic() - signalled
    log = server.log_text()
    assert exited_after >= ORCHESTRATED_DELAY, log
    assert "WARNING lifesigns.drain: SIGTERM received: draining." in log
    assert _delay_waited(log) >= ORCHESTRATED_DELAY - 0.1, log


@pytest.mark.slow
@pytest.mark.parametrize(
    ("orchestrated", "delay"), [(False, 1.5), (True, 0.0)], ids=["local-1.5", "kubernetes-0"]
)
def test_an_explicit_drain_delay_wins(
    uvicorn_process: StartUvicorn, tmp_path: Path, orchestrated: bool, delay: float
) -> None:
    env = {
        "QUIET_DIR": str(tmp_path),
        "LIFESIGNS_DRAIN_DELAY": str(delay),
        **NO_ORCHESTRATOR,
        **(K8S if orchestrated else {}),
    }
    server = uvicorn_process(APP, env=env, ready_path="/readyz")
    exited_after = _stop(server)
    log = server.log_text()
    assert f"drain_delay {delay:g} s chosen: set explicitly" in log, log
    waited = _delay_waited(log)
    assert delay - 0.1 <= waited < delay + 1.0, (waited, log)
    assert exited_after >= delay, log
    if orchestrated:
        assert exited_after < ORCHESTRATED_DELAY, log


@pytest.mark.slow
def test_a_reloader_restarts_and_stops_without_the_drain_delay(
    uvicorn_process: StartUvicorn, tmp_path: Path
) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    env = {"QUIET_DIR": str(tmp_path), "LIFESIGNS_DRAIN_DELAY": "", **NO_ORCHESTRATOR, **K8S}
    server = uvicorn_process(
        APP, env=env, ready_path="/readyz", extra_args=["--reload", "--reload-dir", str(watched)]
    )
    chosen = "drain_delay 0 s chosen: a reloader runs this worker (--reload)"
    server.wait_for_log(re.escape(chosen), 20)

    (watched / "edited.py").write_text("x = 1\n")  # a save: the reloader restarts the worker
    server.wait_for_log(r"(?s)drain delay over.*" + re.escape(chosen), 40)
    log = server.log_text()
    assert "the server stops accepting in 0 s" in log, log
    assert _delay_waited(log) < 0.5, log

    exited_after = _stop(server)
    log = server.log_text()
    assert log.count("SIGTERM received: draining.") == 2, log
    assert _delay_waited(log) < 0.5, log
    assert exited_after < ORCHESTRATED_DELAY, log
