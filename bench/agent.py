"""Agent benchmark: ``lifesigns run`` against the in-process watchdog alone.

One run, loopback only, bounded (about three minutes); prints Markdown tables.

    python bench/agent.py

1. Detection latency, from sending the freezing request to the first log line naming the
   frame, for a Python-level stall (``time.sleep``, 2 s) and a GIL-held one (a
   catastrophic regex, about 2 s): the agent (``lifesigns run``, py-spy from outside)
   against the in-process watchdog alone (plain uvicorn), and aiodebug's hang inspection
   (``aiodebug.hang_inspection``, installed and measured: a thread that writes every
   thread's stack to a file once the loop has not turned for ``interval``; we time the
   first file's appearance, seen from outside, and say whether it names the frame). All
   at a 0.25 s threshold (aiodebug's ``interval``).
2. Side-port ``/livez`` latency, polled every 100 ms during each freeze: the agent's port
   against the in-process side port (a thread of the frozen worker); aiodebug has none.
   Then gunicorn's own ``--timeout`` (3 s) kill of a frozen UvicornWorker, no lifesigns
   agent: the time from the freezing request to the worker's death, and what is left
   (the arbiter's ``WORKER TIMEOUT`` line, a Python traceback, lifesigns' in-process
   report naming the frame).
3. The cost of one out-of-process sample (py-spy, Python only, and with ``--native``).
4. The agent's idle CPU (over 10 s) and resident memory.
5. Requests per second through ``lifesigns run`` against the bare server (wrk, 2 workers).

Goals: detection within threshold + 100 ms; side-port p99 <= 50 ms; ratio >= 0.98.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.apps.agent_harness import TOKEN, AgentRun, ProbePoller, uvicorn  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

from lifesigns.agent.sampler import sample  # noqa: E402

THRESHOLD = 0.25
WINDOW = 3.0  # seconds of polling from the freezing request on: the freeze and a margin
FREEZES = (
    ("time.sleep", "/freeze/sleep/2", "freeze_sleep"),
    ("GIL-held regex", "/freeze/regex/26", "freeze_regex"),
)


def _fire(url: str) -> None:
    def call() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=60)

    threading.Thread(target=call, daemon=True).start()


def _wait_for(read_log, pattern: str, since: int, timeout: float = 30.0) -> float | None:
    regex = re.compile(pattern)
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if regex.search(read_log(), since):
            return time.monotonic() - began
        time.sleep(0.005)
    return None


class _Bare:
    """uvicorn with lifesigns in process (no agent), its side port on."""

    def __init__(self, workers: int, side_port: int | None) -> None:
        self.port = free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="lifesigns-bench-", suffix=".log")[1])
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO_ROOT),
            "LIFESIGNS_TOKEN": TOKEN,
            "LIFESIGNS_STALL_THRESHOLD": str(THRESHOLD),
        }
        if side_port is not None:
            env["LIFESIGNS_SIDE_PORT"] = str(side_port)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                uvicorn(self.port, workers),
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/pid", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def _p99(poller: ProbePoller) -> str:
    ok = sum(1 for status, _ in poller.results if status == 200)
    worst = max(t for _, t in poller.results)
    return (
        f"p99 {poller.p99() * 1000:.0f} ms, max {worst * 1000:.0f} ms "
        f"({ok}/{len(poller.results)} answered 200)"
    )


def _measure(read_log, base: str, path: str, side: str, pattern: str) -> tuple[str, str]:
    since = len(read_log())
    with ProbePoller(side + "/livez") as poller:
        fired = time.monotonic()
        _fire(base + path)
        took = _wait_for(read_log, pattern, since, timeout=10)
        time.sleep(max(0.0, fired + WINDOW - time.monotonic()))
    time.sleep(1.0)  # let the freeze end before the next one
    return _s(took), _p99(poller)


def detection() -> list[str]:
    rows = []
    options = ["--stall-threshold", str(THRESHOLD), "--live-fail-after", "60"]
    with AgentRun(uvicorn, options=options) as agent:
        agent.start(workers=2)
        for name, path, function in FREEZES:
            pattern = rf"stalled [\d.]+ s in \S+:\d+ in {function}"
            took, latency = _measure(agent.log, agent.app, path, agent.side, pattern)
            rows.append(f"| {name} | agent (`lifesigns run`, 2 workers) | {took} | {latency} |")
    side = free_port()
    bare = _Bare(1, side)
    try:
        for name, path, function in FREEZES:
            pattern = rf"loop (?:was )?stalled .*{function}"
            base, side_url = f"http://127.0.0.1:{bare.port}", f"http://127.0.0.1:{side}"
            took, latency = _measure(bare.log, base, path, side_url, pattern)
            rows.append(f"| {name} | in-process watchdog alone | {took} | {latency} |")
    finally:
        bare.close()
    return rows


AIODEBUG_CHILD = """
import asyncio, re, sys, time
from aiodebug import hang_inspection

def freeze_sleep():
    time.sleep(2)

def freeze_regex():
    re.match(r"^(a+)+$", "a" * 26 + "!")

async def main():
    hang_inspection.start(sys.argv[1], interval=float(sys.argv[3]))
    await asyncio.sleep(0.5)
    print(time.time(), flush=True)
    {"sleep": freeze_sleep, "regex": freeze_regex}[sys.argv[2]]()
    await asyncio.sleep(0.5)

asyncio.run(main())
"""


def aiodebug_rows() -> list[str]:
    """aiodebug's hang inspection, timed from outside: when its first stack file appears."""
    try:
        import aiodebug  # noqa: F401
    except ImportError:
        return ["| (both) | aiodebug hang inspection | not installed | |"]
    rows = []
    for name, kind, function in (
        ("time.sleep", "sleep", "freeze_sleep"),
        ("GIL-held regex", "regex", "freeze_regex"),
    ):
        folder = Path(tempfile.mkdtemp(prefix="lifesigns-aiodebug-"))
        child = subprocess.Popen(
            [sys.executable, "-c", AIODEBUG_CHILD, str(folder), kind, str(THRESHOLD)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        began = float(child.stdout.readline())
        seen: float | None = None
        deadline = time.time() + 15
        while time.time() < deadline and seen is None:
            if any(folder.iterdir()):
                seen = time.time() - began
            else:
                time.sleep(0.005)
        child.wait(30)
        files = sorted(folder.iterdir())
        named = bool(files) and function in files[0].read_text()
        took = "not seen" if seen is None else f"{seen:.2f} s"
        rows.append(
            f"| {name} | aiodebug hang inspection (in process, interval {THRESHOLD} s) | "
            f"{took}{'' if named else ' (frame not named)'}, to a file | no probe port |"
        )
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def gunicorn_timeout_rows(timeout: int = 3) -> list[str]:
    """gunicorn's arbiter kills a frozen UvicornWorker after ``--timeout``: when, what is left."""
    rows = []
    for name, path, function in (
        ("time.sleep", "/freeze/sleep/12", "freeze_sleep"),
        ("GIL-held regex", "/freeze/regex/29", "freeze_regex"),
    ):
        port = free_port()
        log_path = Path(tempfile.mkstemp(prefix="lifesigns-bench-gunicorn-", suffix=".log")[1])
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO_ROOT),
            "LIFESIGNS_TOKEN": TOKEN,
            "LIFESIGNS_STALL_THRESHOLD": str(THRESHOLD),
        }
        command = [
            sys.executable, "-m", "gunicorn", "-w", "1", "-k", "uvicorn_worker.UvicornWorker",
            "-b", f"127.0.0.1:{port}", "--timeout", str(timeout),
            "tests.apps.agent_service:app",
        ]  # fmt: skip
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            worker = None
            deadline = time.monotonic() + 30
            while worker is None and time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    worker = httpx.get(base + "/pid", timeout=1).json()["pid"]
                time.sleep(0.1)
            if worker is None:
                rows.append(f"| {name} | gunicorn --timeout {timeout} | did not start | |")
                continue
            fired = time.monotonic()
            _fire(base + path)
            killed = None
            while time.monotonic() - fired < 30:
                stat = Path(f"/proc/{worker}/stat")
                if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    killed = time.monotonic() - fired
                    break
                time.sleep(0.01)
            time.sleep(1.0)
            text = log_path.read_text(errors="replace")
            left = [
                "`WORKER TIMEOUT`" if "WORKER TIMEOUT" in text else "no timeout line",
                "a Python traceback" if "Traceback" in text else "no traceback",
                f"lifesigns' in-process report names {function}"
                if re.search(rf"stalled .*{function}", text)
                else "no report naming the frame",
            ]
            took = "not killed" if killed is None else f"killed after {killed:.2f} s"
            rows.append(
                f"| {name} | gunicorn --timeout {timeout} (arbiter, no agent) | {took}; "
                f"left: {', '.join(left)} | (the worker is gone) |"
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait(10)
    return rows


def _s(value: float | None) -> str:
    return "not seen" if value is None else f"{value:.2f} s"


def sample_cost() -> tuple[str, str]:
    bare = _Bare(1, None)
    try:
        pid = bare.process.pid
        python = [sample(pid).duration for _ in range(20)]
        native = [sample(pid, native=True).duration for _ in range(10)]
    finally:
        bare.close()
    return (
        f"{statistics.median(python) * 1000:.0f} ms",
        f"{statistics.median(native) * 1000:.0f} ms",
    )


def agent_idle() -> tuple[str, str]:
    with AgentRun(uvicorn) as agent:
        agent.start(workers=2)
        assert agent.process is not None
        pid = agent.process.pid
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        before, began = cpu(), time.monotonic()
        time.sleep(10)
        share = (cpu() - before) / (time.monotonic() - began)
        rss = next(
            line.split(":")[1].strip()
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmRSS")
        )
    return f"{share * 100:.1f} % of a core", rss


def wrk_rps(url: str) -> float:
    done = subprocess.run(
        ["wrk", "-t2", "-c32", "-d8s", f"{url}/pid"], capture_output=True, text=True, timeout=60
    )
    found = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    return float(found.group(1)) if found else 0.0


def throughput() -> tuple[float, float] | None:
    if shutil.which("wrk") is None:
        return None
    agent_rps, bare_rps = [], []
    for _ in range(3):  # alternate, so that the machine's load drifts over both alike
        bare = _Bare(2, None)
        try:
            bare_rps.append(wrk_rps(f"http://127.0.0.1:{bare.port}"))
        finally:
            bare.close()
        with AgentRun(uvicorn) as agent:
            agent.start(workers=2)
            agent_rps.append(wrk_rps(agent.app))
    return statistics.median(agent_rps), statistics.median(bare_rps)


def main() -> None:
    rows = detection() + aiodebug_rows() + gunicorn_timeout_rows()
    print(f"### Stall detection and side-port latency (threshold {THRESHOLD} s)\n")
    print("| freeze | seen by | named after (from the request) | side-port /livez meanwhile |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    python, native = sample_cost()
    print(f"\nOne out-of-process sample (py-spy, median): {python}; with `--native`: {native}.")
    cpu, rss = agent_idle()
    print(f"Agent idle (2 workers): CPU {cpu}, RSS {rss}.")
    rates = throughput()
    if rates is None:
        print("wrk is not installed: no throughput figures.")
    else:
        agent_rps, bare_rps = rates
        print(
            f"Requests/s through `lifesigns run`: {agent_rps:.0f} against {bare_rps:.0f} bare "
            f"(ratio {agent_rps / bare_rps:.3f}; wrk -t2 -c32 -d8s, 2 workers, median of 3; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)."
        )


if __name__ == "__main__":
    main()
