"""Request-path overhead of lifesigns: requests/s and CPU per request with wrk, one run.

Variants of one small FastAPI app, each served by its own uvicorn process on loopback and
measured in alternating rounds (the order rotates every round, so drift on a shared
machine hits each alike); medians count:

* ``bare``: the app alone;
* two references, the floor of any request middleware on this app: ``floor:asgi``, a
  pure ASGI middleware that does nothing but await the app (one coroutine), and
  ``floor:status``, one that does the least a request-metrics middleware can (the status
  from a wrapped ``send``, the duration, one count and one sum per route, method and
  status: no histogram, no requests in flight, no probes);
* the ablation, each step adding to the one before (``ls:<step>``, see :data:`STEPS`):
  core only (probes and lifespan, no request record), the loop watchdog, the request
  metrics and requests in flight, a 30 s request deadline, the task census, the memory
  monitor, the request context variable (which pool forensics turns on to name the
  request holding a connection), pool forensics on a watched engine, and ``all`` (a
  supervised periodic task too): ``ls:all`` is lifesigns with every layer plus the request metrics;
* ``instrumentator``: prometheus-fastapi-instrumentator alone, for comparison;
* ``starlette-exporter``: starlette-exporter's ``PrometheusMiddleware`` alone.

Two measures per round: requests/s (wrk), and the server process's CPU per request
(user + system time of every thread, from ``/proc/<pid>/stat``, over the requests wrk
completed), which contention on a shared machine disturbs less. Ratios are taken within
each round (variant against the bare run of the same round) and their median reported:
``rps ratio`` is variant/bare requests/s, ``cpu ratio`` is bare/variant CPU per request,
so 1.0 is free and 0.95 costs 5 % on both.

Usage: ``python -m bench.overhead [--seconds 5] [--rounds 5] [--connections 64]
[--variants bare,ls:all,instrumentator]``. Prints a Markdown table. Needs ``wrk`` on PATH
(Debian package ``wrk``) and Linux (``/proc``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789abcdef"
STEPS = (
    ("core", "core only: probes, lifespan, drain"),
    ("watchdog", "+ loop watchdog"),
    ("requests", "+ request metrics, in flight"),
    ("deadline", "+ request deadline (30 s)"),
    ("census", "+ task census (creation sites)"),
    ("memory", "+ memory monitor"),
    ("context", "+ request context (what pool forensics reads)"),
    ("pool", "+ pool forensics (watched engine)"),
    ("all", "all: + supervised periodic task"),
)
"""The ablation's steps, cumulative: each variant ``ls:<step>`` has every step before it."""
FLOORS = {
    "floor:asgi": "reference: a null pure-ASGI middleware",
    "floor:status": "reference: + status, duration, a count per route",
}
"""Reference middlewares (not lifesigns): what any request middleware costs on this app."""
VARIANTS = (
    "bare",
    *FLOORS,
    *(f"ls:{name}" for name, _ in STEPS),
    "instrumentator",
    "starlette-exporter",
)
LABELS = {
    "bare": "bare",
    **FLOORS,
    **{f"ls:{name}": text for name, text in STEPS},
    "instrumentator": "prometheus-fastapi-instrumentator",
    "starlette-exporter": "starlette-exporter",
}


def create_app() -> Any:
    """The app for ``BENCH_VARIANT`` (a uvicorn ``--factory``)."""
    from fastapi import FastAPI

    variant = os.environ.get("BENCH_VARIANT", "bare")
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": f"item {item_id}", "tags": ["a", "b"]}

    if variant.startswith("ls:"):
        _with_lifesigns(app, variant.removeprefix("ls:"))
    elif variant == "floor:asgi":
        app.add_middleware(NullMiddleware)
    elif variant == "floor:status":
        app.add_middleware(StatusMiddleware)
    elif variant == "instrumentator":
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app).expose(app)
    elif variant == "starlette-exporter":
        from starlette_exporter import PrometheusMiddleware, handle_metrics

        app.add_middleware(PrometheusMiddleware)
        app.add_route("/metrics", handle_metrics)
    elif variant != "bare":
        raise SystemExit(f"unknown BENCH_VARIANT {variant!r}; one of {', '.join(VARIANTS)}")
    return app


class NullMiddleware:
    """Reference: a pure ASGI middleware that awaits the app and does nothing else."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class StatusMiddleware:
    """Reference: the least a request-metrics middleware does.

    The status from a wrapped ``send``, the duration, and one count and one sum of
    seconds per (route, method, status), the route read from the scope once routed. No
    histogram buckets, requests in flight, client disconnects or probes.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.tally: dict[tuple[str | None, str, int], list[float]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def noting(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.monotonic()
        try:
            await self.app(scope, receive, noting)
        finally:
            key = (getattr(scope.get("route"), "path", None), scope["method"], status)
            row = self.tally.get(key)
            if row is None:
                row = self.tally[key] = [0, 0.0]
            row[0] += 1
            row[1] += time.monotonic() - started


def _with_lifesigns(app: Any, step: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from lifesigns import Lifesigns
    from lifesigns.http import LifesignsMiddleware

    names = [name for name, _ in STEPS]
    if step not in names:
        raise SystemExit(f"unknown ablation step {step!r}; one of {', '.join(names)}")
    level = names.index(step)

    def on(name: str) -> bool:
        return level >= names.index(name)

    signs = Lifesigns(
        service="bench",
        token=TOKEN,
        drain_delay=0,
        deadline=30.0 if on("deadline") else None,
        watchdog=on("watchdog"),
        memory=on("memory"),
    )
    if on("watchdog") and not on("census"):
        # The census is part of the loop layer; for the ablation only, keep its task
        # factory (the creation sites, its one cost on the request path) uninstalled.
        layer: Any = signs.host.find_layer("loop")
        layer.census.creation.install = lambda loop: None
    if on("context"):
        signs.requests.current  # noqa: B018 - asking for it turns the context variable on
    if on("pool"):
        signs.watch_engine(
            create_async_engine(f"sqlite+aiosqlite:///{tempfile.gettempdir()}/lifesigns-bench.db")
        )
    if on("all"):

        @signs.periodic(every=60)
        async def housekeeping() -> None:
            return None

    if on("requests"):
        signs.install(app)
    else:  # what install() does, with the request record off
        app.router.lifespan_context = signs.wrap_lifespan(app.router.lifespan_context)
        app.add_middleware(LifesignsMiddleware, signs=signs, track_requests=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """One uvicorn process serving one variant on loopback."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.port = _free_port()
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{variant}-", suffix=".log")  # noqa: SIM115
        env = {**os.environ, "BENCH_VARIANT": variant, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.overhead:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/items/42"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.variant} exited: {Path(self.log.name).read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.variant} did not answer within {timeout} s")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.log.close()


class Run:
    """One wrk run: requests/s, requests completed, and the server's CPU per request."""

    def __init__(self, rps: float, requests: int, cpu_s: float) -> None:
        self.rps = rps
        self.requests = requests
        self.cpu_us = cpu_s / requests * 1e6 if requests else float("nan")


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` so far (``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def wrk(server: Server, seconds: float, connections: int) -> Run:
    """Load ``server`` with wrk (one thread, ``connections`` connections)."""
    before = cpu_seconds(server.process.pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", server.url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    used = cpu_seconds(server.process.pid) - before
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if found is None or total is None or errors is not None:
        raise RuntimeError(f"wrk failed or saw errors against {server.variant}:\n{out}")
    return Run(float(found.group(1)), int(total.group(1)), used)


def _median_range(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, bare always included (default: all: {', '.join(VARIANTS)})",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    chosen = ["bare", *(v.strip() for v in args.variants.split(",") if v.strip() != "bare")]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    load_before = os.getloadavg()
    servers = {v: Server(v) for v in chosen}
    results: dict[str, list[Run]] = {v: [] for v in chosen}
    try:
        for server in servers.values():
            server.wait_ready()
        for server in servers.values():
            wrk(server, 1.0, args.connections)  # warm-up
        for round_no in range(args.rounds):
            shift = round_no % len(chosen)
            for variant in chosen[shift:] + chosen[:shift]:
                results[variant].append(wrk(servers[variant], args.seconds, args.connections))
    finally:
        for server in servers.values():
            server.stop()
    load_after = os.getloadavg()
    bare = results["bare"]
    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, uvicorn (1 process, httptools), "
        f"{args.rounds} rounds in rotating order, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after\n"
    )
    print(
        "| variant | requests/s (median) | rps ratio to bare, median (range) "
        "| CPU µs/request (median) | cpu ratio, median (range) |"
    )
    print("|---|---:|---:|---:|---:|")
    for variant in chosen:
        runs = results[variant]
        rps_ratios = [r.rps / b.rps for r, b in zip(runs, bare, strict=True)]
        cpu_ratios = [b.cpu_us / r.cpu_us for r, b in zip(runs, bare, strict=True)]
        print(
            f"| {LABELS[variant]} | {statistics.median(r.rps for r in runs):,.0f} "
            f"| {_median_range(rps_ratios, '.3f')} "
            f"| {statistics.median(r.cpu_us for r in runs):.0f} "
            f"| {_median_range(cpu_ratios, '.3f')} |"
        )


if __name__ == "__main__":
    main()
