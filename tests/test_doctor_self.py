"""lifesigns doctor on lifesigns itself: its library and its demo report nothing.

Two lines of the demo (``src/lifesigns/lab/app.py``) carry an inline ignore with the
reason: ``/lab/freeze`` calls ``time.sleep`` in an ``async def`` on purpose (it is the
incident the watchdog must name), and the demo's engine runs on SQLite by default, which
has no statement timeout.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from lifesigns.doctor import DoctorConfig, diagnose, pymodel, pyrules
from lifesigns.doctor.facts import Facts
from tests.support.nested_parse import failures_under_nested_parses

SRC = Path(__file__).parents[1] / "src"


def test_lifesigns_source_and_demo_have_no_finding():
    report = diagnose([SRC], DoctorConfig())
    assert [f.render() for f in report.findings] == []
    assert report.files > 50
    assert report.warnings == []


def test_the_demo_findings_are_there_but_explained_inline():
    lab = SRC / "lifesigns" / "lab" / "app.py"
    lines = lab.read_text().splitlines()
    project = pymodel.Project()
    project.modules["lifesigns.lab.app"] = pymodel.parse(lab, "lab/app.py", "\n".join(lines))
    # the rules before suppressions (LS109 aside: alone here, `lifesigns` looks unresolved)
    raw = [f for f in pyrules.check(project, DoctorConfig(), Facts()) if f.code != "LS109"]
    assert sorted(f.code for f in raw) == ["LS102", "LS108"]
    for finding in raw:
        here, above = lines[finding.line - 1], lines[finding.line - 2]
        comment = here if "lifesigns: ignore" in here else above
        assert f"lifesigns: ignore[{finding.code}] " in comment  # named, with a reason
    assert diagnose([lab.parent], DoctorConfig()).findings == []


def test_a_parse_nested_in_a_finalizer_does_not_fail_the_doctor(monkeypatch: pytest.MonkeyPatch):
    lab = SRC / "lifesigns" / "lab" / "app.py"
    source = lab.read_text()
    # CPython's own ast.parse, not the suite's (tests/conftest.py parses again too).
    monkeypatch.setattr(ast, "parse", getattr(ast.parse, "__wrapped__", ast.parse))
    if sys.version_info < (3, 13):
        assert failures_under_nested_parses(lambda: ast.parse(source)) > 0
    parsed = []
    assert (
        failures_under_nested_parses(
            lambda: parsed.append(pymodel.parse(lab, "lab/app.py", source))
        )
        == 0
    )
    assert len(parsed) == 20 and parsed[0].tree.body
