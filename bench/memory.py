"""Memory benchmark: how soon each tool names the retainer of a leak, and what it costs.

One run, loopback only, bounded (about three minutes); prints a Markdown table.

    python bench/memory.py [--soak SECONDS]

1. **Time to the retainer, end to end**: ``tests/apps/leaks.py`` in uvicorn with
   lifesigns' defaults but a 2 s sample interval and a 60 s window, one endpoint leaking
   about 47 MB/min into a module-level dict. Seconds from the first request to the log
   line that names ``tests.apps.leaks._responses`` and its insert line, with nobody
   asking a debug endpoint.
2. **What each tool names, in process, on the same leak** (a module-level dict filled by
   a handler-like function with payloads built by another): lifesigns' census (the
   retainer and its insert line), objgraph's ``show_growth`` (the type that grows) and a
   plain tracemalloc comparison (the allocating line: the victim), each with its time.
3. **The loop pause the analysis causes**: an asyncio loop in the same process timing
   ``sleep(0.001)`` steps while a census and the retainer naming run on a thread over a
   heap of 200,000 objects; the longest step minus 1 ms is the pause.
4. ``--soak S``: a service with a large, stable cache watched for S seconds (300 for the
   issue's five minutes): leak suspected or not.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.servers import UvicornProcess  # noqa: E402

from lifesigns.memory.containers import ContainerCensus  # noqa: E402
from lifesigns.memory.retainers import name_retainers  # noqa: E402

TOKEN = "bench-memory-token-0123456789ab"
ENV = {
    "LIFESIGNS_TOKEN": TOKEN,
    "LIFESIGNS_DRAIN_DELAY": "0",
    "LIFESIGNS_MEMORY_INTERVAL": "2",
    "LIFESIGNS_MEMORY_WINDOW": "60",
    "LIFESIGNS_MEMORY_TRACE_SECONDS": "8",
    "LEAKS_KB": "100",
}


def end_to_end() -> tuple[float, str]:
    """Seconds until the log names the retainer of a 47 MB/min leak, and that line."""
    server = UvicornProcess("tests.apps.leaks:app", env=ENV)
    server.start()
    stop = threading.Event()
    try:
        server.wait_ready()
        began = time.monotonic()

        def drive() -> None:
            n = 0
            with httpx.Client(base_url=server.url, timeout=5.0) as client:
                while not stop.is_set():
                    client.get(f"/cache/k{n}")
                    n += 1
                    stop.wait(0.125)

        thread = threading.Thread(target=drive, daemon=True)
        thread.start()
        match = server.wait_for_log(r"what grows and keeps it: .*_responses.*", timeout=150)
        return time.monotonic() - began, match.group(0)
    finally:
        stop.set()
        server.terminate()


_store: dict[str, bytes] = {}


def _build(key: str) -> bytes:
    return key.encode() * 2000


def _handle(key: str) -> None:
    _store[key] = _build(key)


def _is_bench(filename: str) -> bool:
    return filename.endswith("bench/memory.py")


def in_process() -> list[tuple[str, str, float]]:
    """What lifesigns, objgraph and tracemalloc name for the same leak, and how long each took."""
    import objgraph  # type: ignore[import-untyped]

    rows: list[tuple[str, str, float]] = []
    counter = iter(range(10**9))

    def leak(n: int) -> None:
        for _ in range(n):
            _handle(f"key-{next(counter)}")

    census = ContainerCensus(is_app_file=_is_bench)
    began = time.perf_counter()
    for _ in range(4):
        leak(500)
        census.take()
    retainers = name_retainers(census.growing(), census.find, is_app_file=_is_bench, top=1)
    spent = time.perf_counter() - began
    rows.append(("lifesigns census", retainers[0].describe() if retainers else "(nothing)", spent))

    objgraph.show_growth(limit=3, file=io.StringIO())
    leak(2000)
    out = io.StringIO()
    began = time.perf_counter()
    with redirect_stdout(out):
        objgraph.show_growth(limit=3)
    spent = time.perf_counter() - began
    rows.append(("objgraph show_growth", " / ".join(out.getvalue().split("\n")[:3]), spent))

    tracemalloc.start(1)
    baseline = tracemalloc.take_snapshot()
    leak(2000)
    began = time.perf_counter()
    top = tracemalloc.take_snapshot().compare_to(baseline, "lineno")[0]
    spent = time.perf_counter() - began
    tracemalloc.stop()
    frame = top.traceback[0]
    rows.append(
        (
            "tracemalloc compare_to",
            f"{Path(frame.filename).name}:{frame.lineno} +{top.size_diff / 1024:.0f} KiB",
            spent,
        )
    )
    return rows


def loop_pause(heap_objects: int = 200_000) -> tuple[float, float]:
    """Longest asyncio step (ms) with and without the analysis running on a thread."""
    ballast = [{"n": i} for i in range(heap_objects)]  # a realistic heap to walk past

    async def longest_step(seconds: float, work: Callable[[], None] | None) -> float:
        thread = threading.Thread(target=work, daemon=True) if work else None
        if thread:
            thread.start()
        worst = 0.0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or (thread and thread.is_alive()):
            began = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - began - 0.001)
        return worst * 1000

    census = ContainerCensus(is_app_file=_is_bench, budget=5.0)

    def analyse() -> None:
        for _ in range(5):
            _handle(f"pause-{time.perf_counter()}")
            census.take()
        name_retainers(census.growing(), census.find, is_app_file=_is_bench)

    idle = asyncio.run(longest_step(1.0, None))
    busy = asyncio.run(longest_step(1.0, analyse))
    del ballast
    return idle, busy


def soak(seconds: float) -> str:
    """Whether a large stable cache is ever suspected over ``seconds``."""
    server = UvicornProcess("tests.apps.leaks:app", env={**ENV, "LEAKS_PREFILL": "1"})
    server.start()
    stop = threading.Event()
    try:
        server.wait_ready()

        def drive() -> None:
            n = 0
            with httpx.Client(base_url=server.url, timeout=5.0) as client:
                while not stop.is_set():
                    client.get(f"/stable/k{n}")
                    n += 1
                    stop.wait(0.125)

        threading.Thread(target=drive, daemon=True).start()
        suspected = 0
        polls = 0
        end = time.monotonic() + seconds
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            while time.monotonic() < end:
                verdict = client.get("/debug/memory", headers=auth).json()["verdict"]
                polls += 1
                suspected += bool(verdict["leak_suspected"])
                time.sleep(5)
        return f"{suspected} of {polls} polls suspected a leak over {seconds:.0f} s"
    finally:
        stop.set()
        server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of stable-cache soak")
    args = parser.parse_args()

    seconds, line = end_to_end()
    print("## End to end (uvicorn, 47 MB/min into a module-level dict, nobody asking)\n")
    print("| seconds to the retainer | the log line (cut) |\n|---:|---|")
    shown = re.sub(r"\s+", " ", line)[:220]
    print(f"| {seconds:.1f} | {shown} |\n")

    print("## What each tool names for the same leak (in process)\n")
    print("| tool | what it names | time (ms) |\n|---|---|---:|")
    for tool, named, spent in in_process():
        print(f"| {tool} | {named.replace('|', '/')[:160]} | {spent * 1000:.1f} |")

    idle, busy = loop_pause()
    print("\n## Loop pause caused by the analysis (longest asyncio step beyond 1 ms)\n")
    print("| idle (ms) | during census + naming (ms) |\n|---:|---:|")
    print(f"| {idle:.2f} | {busy:.2f} |")

    if args.soak:
        print(f"\n## Stable cache soak\n\n{soak(args.soak)}")


if __name__ == "__main__":
    main()
