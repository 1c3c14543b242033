"""The README's rule table is the catalogue: every rule, its anchor, its why and its fix."""

from __future__ import annotations

from pathlib import Path

from lifesigns.doctor import RULES

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_rule_has_its_anchor_why_and_fix_in_the_readme():
    section = README[README.index("## lifesigns doctor") :]
    for code, rule in RULES.items():
        row = next(line for line in section.splitlines() if f'<a id="{code.lower()}"></a>' in line)
        assert rule.why in row and rule.fix in row and rule.summary in row, code


def test_messages_point_at_those_anchors():
    from lifesigns.doctor.findings import Finding

    line = Finding("app.py", 3, 1, "LS204", "healthcheck runs curl").render()
    assert line == "app.py:3:1: LS204 healthcheck runs curl (README.md#ls204)"
    assert f'<a id="{RULES["LS204"].anchor.split("#")[1]}"></a>' in README
