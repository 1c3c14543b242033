"""Request-path overhead of lifesigns: requests/s with wrk against uvicorn, one run.

Three variants of one small FastAPI app, each served by its own uvicorn process on
loopback and measured in alternating rounds (so drift in a shared machine hits each
alike); the median round counts:

* ``bare``: the app alone;
* ``lifesigns``: ``signs.install(app)``, a 30 s request deadline, and every layer's
  ``attach()`` that exists (loop watchdog, pool forensics, tasks, drain, memory,
  in-flight), each guarded so the script runs at any stage of the project;
* ``instrumentator``: prometheus-fastapi-instrumentator alone, for comparison.

Usage: ``python -m bench.overhead [--seconds 5] [--rounds 3] [--connections 64]``.
Prints a Markdown table. Needs ``wrk`` on PATH (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
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
VARIANTS = ("bare", "lifesigns", "instrumentator")
TOKEN = "bench-token-0123456789abcdef"


def create_app() -> Any:
    """The app for ``BENCH_VARIANT`` (a uvicorn ``--factory``)."""
    from fastapi import FastAPI

    variant = os.environ.get("BENCH_VARIANT", "bare")
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": f"item {item_id}", "tags": ["a", "b"]}

    if variant.startswith("lifesigns"):
        _with_lifesigns(app)
    elif variant == "instrumentator":
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app).expose(app)
    return app


def _with_lifesigns(app: Any) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from lifesigns import Lifesigns

    # Every layer is on by default: loop watchdog, pool forensics, drain, memory, requests
    # in flight; a deadline and a supervised task make the rest. Switch one off for a
    # breakdown with its variable, e.g. LIFESIGNS_WATCHDOG=0.
    signs = Lifesigns(service="bench", token=TOKEN, drain_delay=0, deadline=30.0)
    signs.watch_engine(
        create_async_engine(f"sqlite+aiosqlite:///{tempfile.gettempdir()}/lifesigns-bench.db")
    )

    @signs.periodic(every=60)
    async def housekeeping() -> None:
        return None

    signs.install(app)
    layers = ["core", "http.inflight", "drain", "tasks", "db.forensics", "http.deadline"]
    if signs.settings.watchdog:
        layers.append("loop")
    if signs.settings.memory:
        layers.append("memory")
    print(f"lifesigns layers: {', '.join(layers)}", file=sys.stderr, flush=True)


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


def wrk(url: str, seconds: float, connections: int) -> float:
    """Requests per second wrk measured (one thread, ``connections`` connections)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if found is None or errors is not None:
        raise RuntimeError(f"wrk failed or saw errors:\n{out}")
    return float(found.group(1))


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    servers = {v: Server(v) for v in VARIANTS}
    try:
        for server in servers.values():
            server.wait_ready()
        for server in servers.values():
            wrk(server.url, 1.0, args.connections)  # warm-up
        results: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant, server in servers.items():
                results[variant].append(wrk(server.url, args.seconds, args.connections))
    finally:
        for server in servers.values():
            server.stop()
    bare = statistics.median(results["bare"])
    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, uvicorn (1 process), "
        f"median of {args.rounds} alternating rounds, {os.cpu_count()} CPUs\n"
    )
    print("| variant | requests/s (median) | rounds | ratio to bare |")
    print("|---|---:|---|---:|")
    for variant in VARIANTS:
        rps = statistics.median(results[variant])
        rounds = ", ".join(f"{r:,.0f}" for r in results[variant])
        print(f"| {variant} | {rps:,.0f} | {rounds} | {rps / bare:.3f} |")


if __name__ == "__main__":
    main()
