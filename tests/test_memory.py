"""Memory growth in a real uvicorn: leak suspicion, its kind, and the line allocating.

Seed 001 suspected a memory leak and never measured it. Here a handler leaks small
Python objects at about 50 MB a minute: the trend must call it a leak of Python objects,
and the time-boxed tracemalloc comparison must name the line, then switch tracing off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Postgres, StartUvicorn, UvicornProcess

pytestmark = pytest.mark.slow

TOKEN = "lifecycle-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
APP = "tests.apps.lifecycle_app:app"
APP_FILE = Path(__file__).parent / "apps" / "lifecycle_app.py"
LEAK_KB_PER_SECOND = 640  # each string counts ~1.3x its nominal size: about 50 MB/min


def _leak_line() -> int:
    lines = APP_FILE.read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.rstrip().endswith("# LEAK-LINE"))


@pytest.fixture
def leaking(postgres: Postgres, uvicorn_process: StartUvicorn) -> Iterator[UvicornProcess]:
    server = uvicorn_process(
        APP,
        env={
            "LIFECYCLE_DB_URL": postgres.url(),
            "LIFESIGNS_TOKEN": TOKEN,
            "LIFESIGNS_DRAIN_DELAY": "0",
            "LIFESIGNS_MEMORY_INTERVAL": "0.5",
            "LIFESIGNS_MEMORY_WINDOW": "16",
            "LIFESIGNS_MEMORY_THRESHOLD": "10",
            "LIFESIGNS_MEMORY_TRACE_SECONDS": "3",
        },
    )
    stop = threading.Event()

    def leak() -> None:
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            while not stop.is_set():
                client.get("/leak", params={"kb": LEAK_KB_PER_SECOND // 8})
                stop.wait(0.125)

    thread = threading.Thread(target=leak, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=5.0)


def _memory(client: httpx.Client) -> dict[str, object]:
    return client.get("/debug/memory", headers=AUTH).json()


def test_leaking_handler_is_suspected_as_python_growth_and_its_line_named(
    leaking: UvicornProcess,
) -> None:
    began = time.monotonic()
    with httpx.Client(base_url=leaking.url, timeout=10.0) as client:
        while True:
            verdict = _memory(client)["verdict"]
            assert isinstance(verdict, dict)
            if verdict["leak_suspected"]:
                break
            assert time.monotonic() - began < 120.0, (verdict, leaking.log_text())
            time.sleep(0.25)
        assert verdict["growth_kind"] == "python", verdict
        assert 20.0 <= float(verdict["rss_mb_per_min"]) <= 150.0, verdict
        assert "growth is Python objects" in str(verdict["text"])
        leaking.wait_for_log(r"leak suspected: \+\d+\.\d MB/min RSS .*growth is Python objects")
        health = client.get("/health", headers=AUTH).json()
        assert health["checks"]["memory:responseTime"][0]["status"] == "warn"
        assert "lifesigns_memory_leak_suspected 1.0" in client.get("/metrics").text

        assert client.get("/debug/memory-trace").status_code == 401  # the token guards it
        started = client.get("/debug/memory-trace", headers=AUTH).json()
        assert started["state"] == "tracing"
        assert _memory(client)["tracemalloc_on"] is True
        deadline = time.monotonic() + 15.0
        report = started
        while report["state"] != "done":
            assert time.monotonic() < deadline, (report, leaking.log_text())
            time.sleep(0.25)
            report = client.get("/debug/memory-trace", headers=AUTH).json()
        top = report["top"][0]
        assert top["where"].endswith(f"lifecycle_app.py:{_leak_line()}"), report["top"][:3]
        assert "_LEAKED.extend" in top["source"]
        assert top["grew_kib"] > 500
        assert _memory(client)["tracemalloc_on"] is False
    leaking.wait_for_log(rf"tracemalloc over .* grew most at \S*lifecycle_app\.py:{_leak_line()}")
