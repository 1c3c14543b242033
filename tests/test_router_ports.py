"""One router, every port: the same request gets the same answer on the application port
and on the side port (real uvicorn, tests/apps/probes.py), and dumps are bounded and
masked on both.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.apps.probes import PASSWORD, TOKEN
from tests.support import UvicornProcess

APP = "tests.apps.probes:app"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": "Bearer not-the-token-at-all-0000"}
SIDE_LINE = r"lifesigns side port listening on (http://\S+)"

LAYOUTS = {
    "default": ({}, {}),
    "prefixed-renamed": (
        {
            "PROBES_PREFIX": "/ops",
            "PROBES_PATHS": json.dumps({"livez": "/alive", "health": "/status"}),
        },
        {"livez": "/alive", "health": "/status"},
    ),
}

QUERIES = ["", "?verbose", "?exclude=payments", "?verbose&exclude=payments", "?exclude=nosuch"]


def probe_requests(prefix: str, renamed: dict[str, str]) -> list[str]:
    """Every probe path with every query a client may send."""
    path = {p: prefix + renamed.get(p, f"/{p}") for p in ("livez", "readyz", "startupz", "health")}
    paths = [
        path["livez"],
        path["readyz"],
        f"{path['readyz']}/payments",
        f"{path['readyz']}/nosuch",
        path["startupz"],
        path["health"],
        f"{prefix}/debug/",
        f"{prefix}/debug",
        f"{prefix}/debug/example",
        f"{prefix}/debug/nosuch",
    ]
    return [p + q for p in paths for q in QUERIES]


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def ports(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[UvicornProcess, str, str]]:
    """A server per layout, its side port, and the layout's name."""
    env, _ = LAYOUTS[request.param]
    log = tmp_path_factory.mktemp("ports") / "uvicorn.log"
    # A long pass_ttl: both ports read the same cached check results, to the millisecond.
    server = UvicornProcess(
        APP, env={**env, "PROBES_SIDE_PORT": "0", "LIFESIGNS_PASS_TTL": "600"}, log_path=log
    )
    server.start()
    try:
        prefix = env.get("PROBES_PREFIX", "")
        renamed = LAYOUTS[request.param][1]
        ready = prefix + "/readyz"
        server.wait_ready(prefix + renamed.get("livez", "/livez"), timeout=30)
        side = server.wait_for_log(SIDE_LINE, timeout=15).group(1)
        deadline = time.monotonic() + 20
        while httpx.get(server.url + ready, timeout=5).status_code != 200:
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.05)
        yield server, side, request.param
    finally:
        server.terminate(timeout=5.0)


def test_every_probe_request_gets_the_same_answer_on_both_ports(
    ports: tuple[UvicornProcess, str, str],
) -> None:
    server, side, layout = ports
    env, renamed = LAYOUTS[layout]
    prefix = env.get("PROBES_PREFIX", "")
    compared = 0
    with (
        httpx.Client(base_url=server.url, timeout=10) as main,
        httpx.Client(base_url=side, timeout=10) as other,
    ):
        for target in probe_requests(prefix, renamed):
            for headers in ({}, AUTH, WRONG):
                a, b = main.get(target, headers=headers), other.get(target, headers=headers)
                seen = (a.status_code, a.headers["content-type"], a.text)
                assert seen == (b.status_code, b.headers["content-type"], b.text), (
                    target,
                    headers,
                    a.text,
                    b.text,
                )
                assert a.headers["cache-control"] == b.headers["cache-control"] == "no-store"
                compared += 1
        # Metrics change with every answer: compare what does not.
        metrics = prefix + "/metrics"
        a, b = main.get(metrics), other.get(metrics)
        assert (a.status_code, a.headers["content-type"]) == (
            b.status_code,
            b.headers["content-type"],
        )
        assert "lifesigns_probe_answers_total" in a.text
    assert compared == len(probe_requests(prefix, renamed)) * 3
    # The layout is honoured on both ports: the default path is not served when renamed.
    if renamed:
        assert httpx.get(f"{side}/livez", timeout=5).status_code == 404
        assert httpx.get(f"{side}{prefix}/alive", timeout=5).status_code == 200


def test_answers_are_what_each_probe_promises(ports: tuple[UvicornProcess, str, str]) -> None:
    server, side, layout = ports
    env, renamed = LAYOUTS[layout]
    prefix = env.get("PROBES_PREFIX", "")
    health = prefix + renamed.get("health", "/health")
    for base in (server.url, side):
        verbose = httpx.get(f"{base}{prefix}/readyz?verbose", timeout=5)
        assert verbose.status_code == 200 and "[+]payments ok" in verbose.text
        assert "cache" not in verbose.text
        excluded = httpx.get(f"{base}{prefix}/readyz?verbose&exclude=payments", timeout=5)
        assert "[+]payments excluded: ok" in excluded.text
        unknown = httpx.get(f"{base}{prefix}/readyz?exclude=nosuch", timeout=5)
        assert unknown.status_code == 400 and "unknown check 'nosuch'" in unknown.text
        assert httpx.get(f"{base}{prefix}/readyz/nosuch", timeout=5).status_code == 400
        public = httpx.get(base + health, timeout=5)
        assert public.headers["content-type"] == "application/health+json"
        assert public.json() == {"status": "warn", "serviceId": "probes"}
        full = httpx.get(base + health, headers=AUTH, timeout=5).json()
        assert full["releaseId"] == "2.0.1"
        assert full["checks"]["payments:responseTime"][0]["details"] == {"latency_ms": 3}
        assert httpx.get(f"{base}{prefix}/debug/example", timeout=5).status_code == 401
        refused = httpx.post(f"{base}{prefix}/readyz", timeout=5)
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"


def test_probe_answers_are_counted_on_both_ports(ports: tuple[UvicornProcess, str, str]) -> None:
    server, side, layout = ports
    prefix = LAYOUTS[layout][0].get("PROBES_PREFIX", "")

    def counted() -> float:
        text = httpx.get(f"{side}{prefix}/metrics", timeout=5).text
        line = next(
            (
                x
                for x in text.splitlines()
                if x.startswith("lifesigns_probe_answers_total{")
                and 'probe="startupz"' in x
                and 'code="200"' in x
            ),
            None,
        )
        return 0.0 if line is None else float(line.rsplit(" ", 1)[1])

    before = counted()
    httpx.get(f"{server.url}{prefix}/startupz", timeout=5)
    httpx.get(f"{side}{prefix}/startupz", timeout=5)
    assert counted() == before + 2


def test_a_stuck_dump_times_out_on_both_ports_without_freezing_the_loop(
    ports: tuple[UvicornProcess, str, str],
) -> None:
    server, side, layout = ports
    prefix = LAYOUTS[layout][0].get("PROBES_PREFIX", "")
    livez = prefix + LAYOUTS[layout][1].get("livez", "/livez")
    for base in (server.url, side):
        answers: list[tuple[int, str, float]] = []

        def ask(base: str = base, answers: list[tuple[int, str, float]] = answers) -> None:
            t0 = time.monotonic()
            r = httpx.get(f"{base}{prefix}/debug/slow", headers=AUTH, timeout=20)
            answers.append((r.status_code, r.text, time.monotonic() - t0))

        asking = threading.Thread(target=ask)
        asking.start()
        time.sleep(0.3)  # the dump is running now
        # The main port's dump runs in a thread, never on the loop: the loop still answers.
        t0 = time.monotonic()
        assert httpx.get(server.url + livez, timeout=5).status_code == 200
        assert time.monotonic() - t0 < 1.0
        asking.join(20)
        status, text, took = answers[0]
        assert status == 504, text
        body = json.loads(text)
        assert body == {"error": "dump 'slow' did not answer within 2 s", "dump": "slow"}
        assert 1.9 <= took < 8.0, took


def test_dumps_are_masked_on_both_ports(ports: tuple[UvicornProcess, str, str]) -> None:
    server, side, layout = ports
    prefix = LAYOUTS[layout][0].get("PROBES_PREFIX", "")
    for base in (server.url, side):
        answer = httpx.get(f"{base}{prefix}/debug/leaky", headers=AUTH, timeout=5)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        assert PASSWORD not in answer.text and TOKEN not in answer.text, answer.text
        dsn = answer.json()["dsn"]
        assert dsn.startswith("postgresql://app:") and dsn.endswith("@db:5432/orders"), dsn
