"""Each seed's "before" project: every anti-pattern found on its line; "after": none.

The fixtures under tests/fixtures/doctor/seedNNN are rebuilt from the incident reports in
the seeds (Python, Dockerfile, compose or Kubernetes, shell). A line that must be reported
carries ``# expect: LS101`` (or ``# expect-next: LS204`` on the line above it, where a
trailing comment is impossible, as inside a continued Dockerfile instruction).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lifesigns.doctor import DoctorConfig, diagnose
from lifesigns.doctor.engine import discover

FIXTURES = Path(__file__).parent / "fixtures" / "doctor"
SEEDS = ["seed000", "seed001", "seed002", "seed003", "seed004"]
_EXPECT = re.compile(r"#\s*expect(-next)?:\s*((?:LS\d{3}\s*)+)")


def expected(root: Path) -> set[tuple[str, int, str]]:
    found = set()
    for path in discover([root], ()):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = _EXPECT.search(line)
            if match:
                target = number + 1 if match.group(1) else number
                for code in match.group(2).split():
                    found.add((path.relative_to(root).as_posix(), target, code))
    return found


def reported(root: Path) -> set[tuple[str, int, str]]:
    report = diagnose([root], DoctorConfig())
    return {
        (Path(f.path).resolve().relative_to(root.resolve()).as_posix(), f.line, f.code)
        for f in report.findings
    }


@pytest.mark.parametrize("seed", SEEDS)
def test_before_every_anti_pattern_is_found_on_its_line(seed):
    root = FIXTURES / seed / "before"
    want = expected(root)
    assert want, "the fixture marks what must be found"
    assert reported(root) == want


@pytest.mark.parametrize("seed", SEEDS)
def test_after_nothing_is_found(seed):
    report = diagnose([FIXTURES / seed / "after"], DoctorConfig())
    assert [f.render() for f in report.findings] == []
    assert report.files >= 4  # Python, a Dockerfile and a manifest or script were read


def test_the_seeds_cover_every_family_of_rules():
    codes = {code for seed in SEEDS for _, _, code in expected(FIXTURES / seed / "before")}
    assert {
        "LS101",
        "LS102",
        "LS103",
        "LS104",
        "LS105",
        "LS106",
        "LS107",
        "LS108",
        "LS109",
        "LS110",
        "LS201",
        "LS204",
        "LS205",
        "LS207",
        "LS208",
        "LS211",
        "LS212",
    } <= codes


def test_a_blocking_chain_names_every_hop_and_the_blocking_line():
    report = diagnose([FIXTURES / "seed000" / "before"], DoctorConfig())
    (finding,) = [f for f in report.findings if f.code == "LS102"]
    assert (
        "blocking call psycopg.connect reached from async def list_schedules via "
        "schedules.load_week -> schedules._query (" in finding.message
    )
    assert finding.message.endswith("backend/src/schedules.py:13)")


def test_the_chain_stops_at_max_depth():
    root = FIXTURES / "seed000" / "before"
    shallow = diagnose([root], DoctorConfig(max_depth=1))
    assert "LS102" not in {f.code for f in shallow.findings}
