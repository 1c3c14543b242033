"""Stall benchmark: detection latency, liveness during a block, and throughput cost.

One run, loopback only, bounded (about three minutes); prints a Markdown table.

    python bench/stall.py

1. Detection latency: time from the start of a block (``time.sleep`` in a coroutine)
   to the first log record about it, at a 0.1 s threshold for every tool: lifesigns
   (watchdog thread, during the block) against asyncio debug mode
   (``slow_callback_duration=0.1``, after the callback returns) and aiodebug
   (a dev dependency, measured): ``log_slow_callbacks`` patches ``Handle._run`` and logs
   after the callback returns, like debug mode; ``hang_inspection`` runs a thread that
   writes every thread's stack to a file once the loop has not turned for ``interval``
   (0.1 s here): its column is the first file's modification time minus the block's
   start, and whether that file names the blocking frame.
2. Liveness during a 10 s block: ``/livez`` latency on the side port against the
   in-band ``/livez`` (uvicorn, ``tests/apps/stalls.py``).
3. Throughput: ``wrk`` against ``/hello`` with the loop layer on and off.

Goals: detection within threshold + 100 ms; side-port p99 <= 50 ms; ratio >= 0.98.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.servers import UvicornProcess  # noqa: E402

from lifesigns import Lifesigns  # noqa: E402
from lifesigns.loop import attach  # noqa: E402

THRESHOLD = 0.1
BLOCKS = (0.3, 1.0, 5.0)


class _FirstRecord(logging.Handler):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)
        self.after = float("inf")
        self.at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # Only records about the block: a start-up hiccup before it does not count.
        now = time.monotonic()
        if self.at is None and now >= self.after and self.pattern.search(record.getMessage()):
            self.at = now


def detect_lifesigns(block: float) -> float | None:
    handler = _FirstRecord(r"^loop stalled")
    log = logging.getLogger("lifesigns.loop")
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False

    async def scenario() -> float | None:
        signs = Lifesigns(watchdog=False)
        attach(signs, stall_threshold=THRESHOLD, live_fail_after=max(block * 2, 1.0))
        await signs.start()
        try:
            await asyncio.sleep(0.3)
            began = handler.after = time.monotonic()
            time.sleep(block)
            await asyncio.sleep(0.3)
            return None if handler.at is None else handler.at - began
        finally:
            await signs.stop()

    try:
        return asyncio.run(scenario())
    finally:
        log.removeHandler(handler)


def detect_asyncio_debug(block: float) -> float | None:
    handler = _FirstRecord(r"^Executing .* took")
    log = logging.getLogger("asyncio")
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False

    async def scenario() -> float | None:
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = THRESHOLD
        await asyncio.sleep(0.3)
        began = handler.after = time.monotonic()
        time.sleep(block)
        await asyncio.sleep(0.1)
        return None if handler.at is None else handler.at - began

    try:
        return asyncio.run(scenario(), debug=True)
    finally:
        log.removeHandler(handler)


def detect_aiodebug(block: float) -> tuple[float | None, bool]:
    """aiodebug's hang inspection: when its first stack file was written, and if it names us."""
    import tempfile

    from aiodebug import hang_inspection

    folder = Path(tempfile.mkdtemp(prefix="lifesigns-bench-aiodebug-"))

    def blocking_frame() -> None:
        time.sleep(block)

    async def scenario() -> float:
        inspection = hang_inspection.start(str(folder), THRESHOLD, asyncio.get_running_loop())
        try:
            await asyncio.sleep(0.3)
            began = time.time()
            blocking_frame()
            await asyncio.sleep(0.1)
            return began
        finally:
            await hang_inspection.stop_wait(inspection)

    began = asyncio.run(scenario())
    files = sorted(folder.iterdir(), key=lambda f: f.stat().st_mtime)
    if not files:
        return None, False
    return files[0].stat().st_mtime - began, "blocking_frame" in files[0].read_text()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def liveness_during_block(tmp: Path) -> tuple[list[float], list[float]]:
    server = UvicornProcess("tests.apps.stalls:app", env={}, log_path=tmp / "live.log")
    server.start()
    try:
        server.wait_ready("/livez")
        side = server.wait_for_log(r"side port listening on (http://\S+)").group(1)
        blocker = threading.Thread(
            target=lambda: httpx.get(f"{server.url}/sleep/10", timeout=30), daemon=True
        )
        side_lat: list[float] = []
        inband: list[float] = []
        lock = threading.Lock()

        def inband_probe() -> None:
            t0 = time.perf_counter()
            try:
                httpx.get(f"{server.url}/livez", timeout=15)
            finally:
                with lock:
                    inband.append(time.perf_counter() - t0)

        blocker.start()
        time.sleep(0.2)
        probes = []
        with httpx.Client(base_url=side, timeout=5) as client:
            end = time.monotonic() + 9.5
            next_inband = time.monotonic()
            while time.monotonic() < end:
                if time.monotonic() >= next_inband:
                    thread = threading.Thread(target=inband_probe, daemon=True)
                    thread.start()
                    probes.append(thread)
                    next_inband += 0.25
                t0 = time.perf_counter()
                client.get("/livez")
                side_lat.append(time.perf_counter() - t0)
                time.sleep(0.02)
        for thread in probes:
            thread.join(20)
        blocker.join(20)
        return side_lat, inband
    finally:
        server.terminate(timeout=5)


def wrk_rps(url: str) -> float:
    out = subprocess.run(
        ["wrk", "-t2", "-c32", "-d8s", f"{url}/hello"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(match.group(1)) if match else 0.0


def throughput(tmp: Path) -> tuple[float, float]:
    results: dict[str, list[float]] = {"on": [], "off": []}
    for round_ in range(3):
        for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
            env = {"STALLS_LOOP_WATCH": "1" if mode == "on" else "0"}
            server = UvicornProcess(
                "tests.apps.stalls:app", env=env, log_path=tmp / f"wrk-{mode}-{round_}.log"
            )
            server.start()
            try:
                server.wait_ready("/hello")
                results[mode].append(wrk_rps(server.url))
            finally:
                server.terminate(timeout=5)
    return statistics.median(results["on"]), statistics.median(results["off"])


def main() -> None:
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="lifesigns-bench-"))
    rows = ["| measure | lifesigns | asyncio debug | aiodebug | goal |", "|---|---|---|---|---|"]
    for block in BLOCKS:
        ours = detect_lifesigns(block)
        debug = detect_asyncio_debug(block)
        hang, named = detect_aiodebug(block)
        fmt = lambda v: "not detected" if v is None else f"{v * 1000:.0f} ms"  # noqa: E731
        rows.append(
            f"| detection, {block:g} s block (threshold {THRESHOLD:g} s) | {fmt(ours)} | "
            f"{fmt(debug)} | {fmt(hang)} (hang inspection, to a file"
            f"{', frame named' if named else ', frame not named'}) | "
            f"<= {(THRESHOLD + 0.1) * 1000:.0f} ms |"
        )
    side, inband = liveness_during_block(tmp)
    rows.append(
        f"| /livez p50 / p99 during a 10 s block | side port {percentile(side, 0.5) * 1000:.1f} / "
        f"{percentile(side, 0.99) * 1000:.1f} ms ({len(side)} polls) | in-band "
        f"{percentile(inband, 0.5) * 1000:.0f} / {percentile(inband, 0.99) * 1000:.0f} ms "
        f"({len(inband)} polls) | | side p99 <= 50 ms |"
    )
    if shutil.which("wrk"):
        on, off = throughput(tmp)
        rows.append(
            f"| requests/s, wrk -t2 -c32 /hello (median of 3) | on {on:.0f} | off {off:.0f} | "
            f"ratio {on / off:.3f} | >= 0.98 |"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
