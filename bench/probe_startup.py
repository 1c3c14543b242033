"""What one health-probe invocation costs: curl against the Python options.

    python3 -m uv run python bench/probe_startup.py [--runs 30]

Starts a tiny HTTP server on 127.0.0.1 (in a thread of this process), then
runs each probe command ``--runs`` times, interleaved round by round so drift
on a busy machine hits all of them alike, and prints a Markdown table of wall
time (p50, p95) and peak RSS per invocation, with ratios against curl.

Wall time is measured around a plain spawn-and-reap of the command. Peak RSS
is measured in a second, separate run of the command under ``/usr/bin/time
-f %M``: the rusage a parent gets for its child (``os.wait4``,
``RUSAGE_CHILDREN``) is useless here, because Linux carries the parent's RSS
high-water mark over fork+exec, so every child of this Python process would
report at least this process's own RSS (about 20 MiB, curl included).
``time`` forks the command from its own small process. Without
``/usr/bin/time`` the wait4 numbers are shown, marked as floored.

The ``lifesigns probe`` command is measured twice: as the environment is
(with ``PYTHONDONTWRITEBYTECODE=1`` and no ``.pyc`` files, every run compiles
the lifesigns modules again), and with bytecode cached (``PYTHONPYCACHEPREFIX``
pointed at a temporary directory, which is what an image built with
``UV_COMPILE_BYTECODE=1`` or pip's default gets). ``python -m lifesigns probe``
is shown too: ``-m`` costs ``runpy`` and what it imports, a few milliseconds the
console script does not pay. The last line says whether the cached console
script keeps the goal of at most 3x curl's wall time.

Every run has a watchdog, so the script always stops by itself.
"""

from __future__ import annotations

import argparse
import http.server
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PER_RUN_LIMIT = 20.0  # seconds before a stuck run is killed
GOAL_RATIO = 3.0  # `lifesigns probe` may cost at most this many times curl's start-up


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"status": "up"}\n'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


class Sample:
    def __init__(self, seconds: float, rss_kib: int, code: int) -> None:
        self.seconds = seconds
        self.rss_kib = rss_kib
        self.code = code


class Command:
    def __init__(self, label: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.label = label
        self.argv = argv
        self.env = env


def spawn(argv: list[str], env: dict[str, str] | None) -> tuple[float, int, int]:
    """Run *argv* once; return (seconds from spawn to reap, exit code, wait4 maxrss KiB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    watchdog = threading.Timer(PER_RUN_LIMIT, proc.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        watchdog.cancel()
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return elapsed, proc.returncode, int(usage.ru_maxrss)  # KiB on Linux


def run_once(cmd: Command, time_bin: str | None, scratch: Path) -> Sample:
    """Time *cmd* once; then, with /usr/bin/time, run it again to get its real peak RSS."""
    elapsed, code, floored_rss = spawn(cmd.argv, cmd.env)
    if time_bin is None:
        return Sample(elapsed, floored_rss, code)
    report = scratch / "rss"
    spawn([time_bin, "-f", "%M", "-o", str(report), *cmd.argv], cmd.env)
    try:
        rss = int(report.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        rss = floored_rss
    return Sample(elapsed, rss, code)


def check(cmd: list[str], env: dict[str, str] | None = None) -> tuple[bool, str]:
    """Run *cmd* once with output captured (also a warm-up); return (worked, output)."""
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PER_RUN_LIMIT, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def commands(url: str, pycache: Path) -> tuple[list[Command], list[str]]:
    python = sys.executable
    notes: list[str] = []
    found: list[Command] = []
    curl = shutil.which("curl")
    if curl:
        found.append(
            Command("`curl -fsS --max-time 2 URL`", [curl, "-fsS", "--max-time", "2", url])
        )
    else:
        notes.append("curl not found: no curl row, ratios are against `python -c pass`.")
    found.append(Command("`python -c pass` (interpreter floor)", [python, "-c", "pass"]))
    naive = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2).read()"
    found.append(Command("`python -c 'urllib.request.urlopen(URL)'`", [python, "-c", naive, url]))

    script = Path(sys.prefix) / "bin" / "lifesigns"
    label, argv = "`python -m lifesigns.cli.probe URL`", [python, "-m", "lifesigns.cli.probe", url]
    if script.exists():
        worked, output = check([str(script), "probe", url])
        if worked and output.startswith("ok: 200"):
            label, argv = "`lifesigns probe URL` (console script)", [str(script), "probe", url]
        else:
            notes.append(
                f"`{script} probe URL` does not dispatch to the probe yet "
                f"(exit {'0' if worked else 'non-zero'}, output {output[:80]!r}); "
                "measured `python -m lifesigns.cli.probe URL` instead."
            )
    else:
        notes.append(f"{script} does not exist; measured `python -m lifesigns.cli.probe URL`.")
    found.append(Command(label, argv))
    cached = dict(os.environ, PYTHONPYCACHEPREFIX=str(pycache))
    cached.pop("PYTHONDONTWRITEBYTECODE", None)
    found.append(Command(f"{label}, bytecode cached", argv, cached))
    if sys.flags.dont_write_bytecode:
        notes.append(
            "PYTHONDONTWRITEBYTECODE is set here: rows without 'bytecode cached' compile "
            "the lifesigns sources on every run (the standard library ships its .pyc files)."
        )
    dash_m = [python, "-m", "lifesigns", "probe", url]
    found.append(Command("`python -m lifesigns probe URL`, bytecode cached", dash_m, cached))
    importing = [python, "-c", "import lifesigns.cli.probe"]
    found.append(Command("`python -c 'import lifesigns.cli.probe'`", importing))
    whole = [python, "-c", "from lifesigns import Lifesigns; import lifesigns.db, lifesigns.http"]
    found.append(
        Command("`python -c 'from lifesigns import Lifesigns'` (the whole library)", whole)
    )
    return found, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=30, help="invocations per command (default 30)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    time_bin = shutil.which("time", path="/usr/bin:/bin")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/livez"
    try:
        with tempfile.TemporaryDirectory(prefix="probe-bench-") as scratch_dir:
            scratch = Path(scratch_dir)
            todo, notes = commands(url, scratch / "pycache")
            usable: list[Command] = []
            for cmd in todo:  # warm-up (and .pyc writing), and drop what does not work
                worked, output = check(cmd.argv, cmd.env)
                if worked:
                    usable.append(cmd)
                else:
                    notes.append(f"{cmd.label} failed, left out: {output[:200]!r}")
            samples: dict[str, list[Sample]] = {cmd.label: [] for cmd in usable}
            for round_ in range(args.runs):
                shift = round_ % len(usable)
                for cmd in usable[shift:] + usable[:shift]:
                    samples[cmd.label].append(run_once(cmd, time_bin, scratch))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    rows = []
    for label, runs in samples.items():
        walls = [s.seconds * 1000 for s in runs]
        rss = [s.rss_kib / 1024 for s in runs]
        failures = sum(1 for s in runs if s.code != 0)
        rows.append(
            (
                label,
                statistics.median(walls),
                percentile(walls, 0.95),
                statistics.median(rss),
                max(rss),
                failures,
            )
        )
    base_label = rows[0][0]
    base_wall, base_rss = rows[0][1], rows[0][3]
    base = base_label.split()[0].strip("`")  # "curl", or "python" without curl
    rss_how = "/usr/bin/time %M" if time_bin else "wait4, floored at this script's RSS"

    print(f"Probe start-up cost, {args.runs} runs each, interleaved; server on {url}")
    print(
        f"Python {platform.python_version()} ({sys.executable}), {platform.system()} "
        f"{platform.release()}, {os.cpu_count()} CPUs; peak RSS via {rss_how}\n"
    )
    print(
        "| command | wall p50 (ms) | wall p95 (ms) | peak RSS p50 (MiB) | peak RSS max (MiB) "
        f"| wall p50 vs {base} | RSS p50 vs {base} | failed runs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, wall50, wall95, rss50, rssmax, failures in rows:
        print(
            f"| {label} | {wall50:.1f} | {wall95:.1f} | {rss50:.1f} | {rssmax:.1f} "
            f"| {wall50 / base_wall:.1f}x | {rss50 / base_rss:.1f}x | {failures} |"
        )
    goal = next((row for row in rows if row[0].endswith("bytecode cached")), None)
    if goal is not None and base == "curl":
        ratio = goal[1] / base_wall
        verdict = "within" if ratio <= GOAL_RATIO else "OVER"
        print(
            f"\nGoal: {goal[0]} at {ratio:.1f}x curl's wall p50: {verdict} the "
            f"{GOAL_RATIO:g}x goal (issue 10)."
        )
    for note in notes:
        print(f"\nNote: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
