"""The loop layer end to end: a real uvicorn serving tests/apps/stalls.py, driven over HTTP.

Each test reproduces a way a service freezes (seeds 000, 001, 003) and asserts that
lifesigns names the cause, from outside the frozen loop, within a bound.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import StartUvicorn, UvicornProcess
from tests.support.servers import REPO_ROOT

APP = "tests.apps.stalls:app"
APP_FILE = "tests/apps/stalls.py"
TOKEN = "stalls-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SIDE_PORT_LINE = r"lifesigns side port listening on (http://\S+)"


def marker_line(marker: str) -> int:
    """The line of ``tests/apps/stalls.py`` that carries ``# stall: <marker>``."""
    lines = (REPO_ROOT / APP_FILE).read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if text.endswith(f"# stall: {marker}"))


def side_url(server: UvicornProcess) -> str:
    """The side port's base URL, from the server's log."""
    return server.wait_for_log(SIDE_PORT_LINE, timeout=10).group(1)


def poll(fn: Any, deadline: float, interval: float = 0.05) -> Any:
    """Call ``fn`` until it returns something truthy; the observation is retried, not the assert."""
    end = time.monotonic() + deadline
    while True:
        value = fn()
        if value or time.monotonic() > end:
            return value
        time.sleep(interval)


def stalls(side: str) -> dict[str, Any]:
    """The ``/debug/stalls`` dump, from the side port."""
    response = httpx.get(f"{side}/debug/stalls", headers=AUTH, timeout=5)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def find_stall(side: str, needle: str, deadline: float = 10.0) -> dict[str, Any] | None:
    """The most recent ended stall whose stack mentions ``needle``."""

    def look() -> dict[str, Any] | None:
        for stall in stalls(side)["recent"]:
            if any(needle in frame for frame in stall["stack"]):
                return stall
        return None

    found: dict[str, Any] | None = poll(look, deadline, 0.1)
    return found


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[UvicornProcess, str]]:
    """One server for the tests that read dumps: limiter 0.5 s, census every 0.25 s."""
    log = tmp_path_factory.mktemp("stalls") / "uvicorn.log"
    server = UvicornProcess(
        APP,
        env={"STALLS_LIMITER_THRESHOLD": "0.5", "STALLS_CENSUS_INTERVAL": "0.25"},
        log_path=log,
    )
    server.start()
    try:
        server.wait_ready("/livez")
        yield server, side_url(server)
    finally:
        server.terminate(timeout=5.0)


@pytest.mark.slow
def test_sleeping_endpoint_stall_is_named_on_the_side_port_during_the_stall(
    uvicorn_process: StartUvicorn,
) -> None:
    server = uvicorn_process(APP, env={"STALLS_LIVE_FAIL_AFTER": "1"})
    side = side_url(server)
    line = marker_line("sleep")
    blocked = threading.Thread(
        target=lambda: httpx.get(f"{server.url}/sleep/5", timeout=30), daemon=True
    )
    answers: list[tuple[float, int, str]] = []
    latencies: list[float] = []
    public: list[str] = []
    with httpx.Client(base_url=side, timeout=2.0) as client:
        assert client.get("/livez").status_code == 200
        blocked.start()
        assert poll(lambda: stalls(side)["current"], 3.0), "the stall was not detected"
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{server.url}/hello", timeout=0.5)  # the main port is frozen
        while blocked.is_alive():
            t0 = time.perf_counter()
            response = client.get("/livez", headers=AUTH)
            latencies.append(time.perf_counter() - t0)
            answers.append((time.monotonic() - started, response.status_code, response.text))
            if response.status_code == 503 and not public:
                public.append(client.get("/livez").text)
            time.sleep(0.05)
        blocked.join(10)
        after = poll(lambda: client.get("/livez").status_code == 200, 3.0)

    assert len(latencies) >= 40, answers
    slow = [latency for latency in latencies if latency >= 0.1]
    assert len(slow) <= max(1, len(latencies) // 20), sorted(latencies)[-5:]
    assert max(latencies) < 1.0
    assert answers[0][1] == 200, answers[0]  # frozen, but not yet past live_fail_after
    failing = [a for a in answers if a[1] == 503]
    assert failing, [a[:2] for a in answers]
    body = failing[-1][2]
    assert f"{APP_FILE}:{line} sleepy, time.sleep" in body
    assert "GET /sleep/{seconds}" in body
    assert re.search(r"loop stalled \d+\.\d s", body)
    assert public and "loop stalled" in public[0] and APP_FILE not in public[0]
    assert after, "the side port did not return to 200 once the loop beat again"

    ended = server.wait_for_log(r"loop stall ended after (\d+\.\d+) s", timeout=5)
    assert 4.5 <= float(ended.group(1)) <= 8.0
    log = server.log_text()
    assert len(re.findall(r"WARNING lifesigns\.loop: loop stalled ", log)) == 1, log
    assert len(re.findall(r"loop stall ended after", log)) == 1, log
    assert f"{APP_FILE}:{line} sleepy, time.sleep during GET /sleep/{{seconds}}" in log
    assert "class: blocked in a system call (GIL released)" in log


def test_gil_holding_regex_is_classified_as_c_holding_the_gil(
    shared: tuple[UvicornProcess, str],
) -> None:
    server, side = shared
    line = marker_line("regex")
    response = httpx.get(f"{server.url}/regex/23", timeout=60)
    assert response.status_code == 200
    stall = find_stall(side, f"{APP_FILE}:{line} catastrophic")
    assert stall is not None, stalls(side)
    assert stall["class"] == "c-holding-gil", stall
    assert stall["samples"][0]["source"] == "faulthandler"
    assert f"{APP_FILE}:{line} catastrophic, re.search" in stall["headline"]
    assert any("re/__init__.py" in frame for frame in stall["stack"])


def test_busy_moving_loop_and_stuck_frame_get_different_classes(
    shared: tuple[UvicornProcess, str],
) -> None:
    server, side = shared
    stuck_line, moving_line = marker_line("stuck"), marker_line("moving")
    assert httpx.get(f"{server.url}/spin/stuck/1.5", timeout=30).status_code == 200
    assert httpx.get(f"{server.url}/spin/moving/1.5", timeout=30).status_code == 200
    stuck = find_stall(side, f"{APP_FILE}:{stuck_line} spin_stuck")
    moving = find_stall(side, f"{APP_FILE}:{moving_line} spin_moving")
    assert stuck is not None and moving is not None, stalls(side)
    assert stuck["class"] == "python-stuck", stuck
    assert moving["class"] == "python-moving", moving
    assert len(stuck["samples"]) >= 3 and len(moving["samples"]) >= 3


def test_forty_one_blocking_sync_endpoints_saturate_the_limiter_and_name_the_holders(
    shared: tuple[UvicornProcess, str],
) -> None:
    server, side = shared
    line = marker_line("sync")
    results: list[int] = []

    def call() -> None:
        results.append(httpx.get(f"{server.url}/sync/4", timeout=30).status_code)

    callers = [threading.Thread(target=call, daemon=True) for _ in range(41)]
    for caller in callers:
        caller.start()
    saturated = server.wait_for_log(r"thread pool saturated for [^\n]*(?:\n  [^\n]*)*", timeout=10)
    report = saturated.group(0)
    assert "40 of 40 tokens" in report, report
    assert re.search(r"[1-9]\d* waiting", report), report
    assert "held by 40 x GET /sync/{seconds}" in report, report
    assert re.search(rf"40 worker thread\(s\) at {re.escape(APP_FILE)}:{line} sync_block", report)
    dump = httpx.get(f"{side}/debug/limiter", headers=AUTH, timeout=5).json()
    assert dump["limiter"]["borrowed"] == 40
    assert any(f"{APP_FILE}:{line} sync_block [app]" in w["stack"] for w in dump["busy_workers"])
    assert httpx.get(f"{side}/livez", timeout=2).status_code == 200  # the loop itself is fine
    for caller in callers:
        caller.join(30)
    assert results.count(200) == 41
    server.wait_for_log(r"thread pool no longer saturated after \d+\.\d s", timeout=10)


def test_ten_thousand_leaked_tasks_are_named_by_the_census(
    shared: tuple[UvicornProcess, str],
) -> None:
    server, side = shared
    line = marker_line("leak")
    site = f"{APP_FILE}:{line} leak"
    for _ in range(5):
        assert httpx.get(f"{server.url}/leak/2000", timeout=30).status_code == 200
        time.sleep(0.4)

    def census() -> dict[str, Any] | None:
        dump = httpx.get(f"{side}/debug/tasks", headers=AUTH, timeout=10).json()
        groups = (dump.get("census") or {}).get("groups", [])
        top = groups[0] if groups else None
        return dump if top and top["count"] >= 10_000 else None

    dump = poll(census, 5.0, 0.2)
    assert dump is not None
    top = dump["census"]["groups"][0]
    assert top["created_at"] == site, top
    assert top["coroutine"] == "_forever"
    assert top["count"] == 10_000
    assert dump["stale"] is False and dump["total"] >= 10_000
    assert any(t["created_at"] == site for t in dump["tasks"])
    assert any("_forever" in step for step in dump["tasks"][-1]["awaiting"])
    server.wait_for_log(rf"tasks piling up: \d+ pending _forever .*created at {re.escape(site)}")


@pytest.mark.parametrize("port", ["side", "main"])
def test_dumps_refuse_a_missing_or_wrong_token(
    shared: tuple[UvicornProcess, str], port: str
) -> None:
    server, side = shared
    base = side if port == "side" else server.url
    for name in ("stalls", "threads", "tasks", "limiter"):
        assert httpx.get(f"{base}/debug/{name}", timeout=5).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token-at-all-0000"}
        assert httpx.get(f"{base}/debug/{name}", headers=wrong, timeout=5).status_code == 401
        answer = httpx.get(f"{base}/debug/{name}", headers=AUTH, timeout=10)
        assert answer.status_code == 200, answer.text
    listing = httpx.get(f"{base}/debug/", headers=AUTH, timeout=5).json()
    assert {"stalls", "threads", "tasks", "limiter"} <= set(listing["dumps"])
    threads = httpx.get(f"{base}/debug/threads", headers=AUTH, timeout=5).json()
    assert sum(t["event_loop"] for t in threads["threads"]) == 1


def test_side_port_readyz_runs_readiness_on_the_live_loop(
    shared: tuple[UvicornProcess, str],
) -> None:
    _, side = shared
    response = httpx.get(f"{side}/readyz?verbose", timeout=5)
    assert response.status_code == 200, response.text
    assert "readyz check passed" in response.text


@pytest.mark.slow
def test_ordinary_load_at_the_default_threshold_reports_no_stall(
    uvicorn_process: StartUvicorn,
) -> None:
    server = uvicorn_process(APP)
    side = side_url(server)
    stop = threading.Event()
    counts: list[int] = []
    errors: list[str] = []

    def client(path: str, pause: float) -> None:
        done = 0
        with httpx.Client(base_url=server.url, timeout=5) as http:
            while not stop.is_set():
                try:
                    http.get(path).raise_for_status()
                    done += 1
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                stop.wait(pause)
        counts.append(done)

    clients = [threading.Thread(target=client, args=("/hello", 0.01)) for _ in range(4)]
    clients += [threading.Thread(target=client, args=("/sync/0.01", 0.02)) for _ in range(2)]
    for thread in clients:
        thread.start()
    lags: list[float] = []
    end = time.monotonic() + 60
    while time.monotonic() < end:
        t0 = time.perf_counter()
        httpx.get(f"{side}/livez", timeout=2)
        lags.append(time.perf_counter() - t0)
        time.sleep(0.5)
    stop.set()
    for thread in clients:
        thread.join(10)
    assert not errors, errors[:5]
    assert sum(counts) > 3000, counts
    dump = stalls(side)
    assert dump["threshold_s"] == 0.25
    assert dump["total"] == 0 and dump["current"] is None, dump
    assert "loop stalled" not in server.log_text()
    assert statistics.median(lags) < 0.5  # GIL hand-offs to a busy loop thread cost here
