"""A FastAPI service that stalls its event loop on demand, watched by lifesigns' loop layer.

Configured by environment variables (all optional):

- ``STALLS_TOKEN``: the bearer token (default ``stalls-test-token-0123456789``);
- ``STALLS_SIDE_PORT``: the side port (default 0: a free one, logged at start);
- ``STALLS_EXPOSE``: what the application port serves (default ``all``);
- ``STALLS_LOOP_WATCH=0``: no loop layer at all (a baseline for benchmarks);
- ``STALLS_THRESHOLD``, ``STALLS_LIVE_FAIL_AFTER``, ``STALLS_LIMITER_THRESHOLD``,
  ``STALLS_CENSUS_INTERVAL``: the loop layer's settings (defaults: the library's).

Each blocking line carries a ``# stall:`` marker so that tests can find its line number.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from typing import Any

from fastapi import FastAPI

from lifesigns import Lifesigns
from lifesigns.loop import attach

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

TOKEN = os.environ.get("STALLS_TOKEN", "stalls-test-token-0123456789")

# The loop layer is attached below, explicitly, with options the tests choose. The dumps
# are exposed on the application port too: the tests compare both ports (the default,
# since issue 10, keeps /metrics and /debug/* off the application port).
signs = Lifesigns(
    service="stalls",
    token=TOKEN,
    watchdog=False,
    side_port=int(os.environ.get("STALLS_SIDE_PORT", "0")),
    expose=os.environ.get("STALLS_EXPOSE", "all"),
)
_options: dict[str, Any] = {}
for _name, _variable in (
    ("stall_threshold", "STALLS_THRESHOLD"),
    ("live_fail_after", "STALLS_LIVE_FAIL_AFTER"),
    ("limiter_threshold", "STALLS_LIMITER_THRESHOLD"),
    ("census_interval", "STALLS_CENSUS_INTERVAL"),
):
    if os.environ.get(_variable):
        _options[_name] = float(os.environ[_variable])
# STALLS_LOOP_WATCH=0 leaves the loop layer out (the benchmark's baseline).
watch = attach(signs, **_options) if os.environ.get("STALLS_LOOP_WATCH", "1") != "0" else None

app = FastAPI()
signs.install(app)

_leaked: list[asyncio.Task[None]] = []


def _fib(n: int) -> int:
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


@app.get("/hello")
async def hello() -> dict[str, str]:
    """An ordinary endpoint."""
    await asyncio.sleep(0)
    return {"hello": "world"}


@app.get("/sleep/{seconds}")
async def sleepy(seconds: float) -> dict[str, float]:
    """Blocks the loop in a system call, the GIL released."""
    time.sleep(seconds)  # stall: sleep
    return {"slept": seconds}


@app.get("/regex/{n}")
async def catastrophic(n: int) -> dict[str, bool]:
    """Blocks the loop in C code that holds the GIL (exponential backtracking)."""
    found = re.search(r"(a+)+$", "a" * n + "b")  # stall: regex
    return {"found": found is not None}


@app.get("/spin/stuck/{seconds}")
async def spin_stuck(seconds: float) -> dict[str, int]:
    """Python code that never leaves one frame."""
    end = time.monotonic() + seconds
    spins = 0
    while time.monotonic() < end:  # stall: stuck
        spins += 1
    return {"spins": spins}


@app.get("/spin/moving/{seconds}")
async def spin_moving(seconds: float) -> dict[str, int]:
    """Python code that keeps calling, so its stack keeps changing."""
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        total += _fib(16)  # stall: moving
    return {"total": total}


@app.get("/sync/{seconds}")
def sync_block(seconds: float) -> dict[str, float]:
    """A sync endpoint: holds one of anyio's 40 worker threads while it sleeps."""
    time.sleep(seconds)  # stall: sync
    return {"slept": seconds}


async def _forever() -> None:
    await asyncio.sleep(3600)


@app.get("/leak/{n}")
async def leak(n: int) -> dict[str, int]:
    """Creates ``n`` tasks that never finish, from one site."""
    for _ in range(n):
        _leaked.append(asyncio.create_task(_forever()))  # stall: leak
    return {"leaked": len(_leaked)}
