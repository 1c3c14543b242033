"""The ``lifesigns doctor`` command: ruff-like lines, JSON, SARIF 2.1.0, exit codes, settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from lifesigns.doctor import RULES

FIXTURES = Path(__file__).parent / "fixtures" / "doctor"
BEFORE = FIXTURES / "seed003" / "before"
SCHEMA = FIXTURES / "sarif-schema-2.1.0.json"


def doctor(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifesigns", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def test_findings_print_like_ruff_and_exit_1():
    result = doctor(str(BEFORE))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "Found 8 findings."
    first = lines[0]
    path, line, col, rest = first.split(":", 3)
    assert path.endswith("backend/app/api/v1/mesh.py") and line == "10" and col == "5"
    assert rest.startswith(" LS109 module 'aio_pika' is not installed in this environment")
    assert rest.endswith("(README.md#ls109)")


def test_nothing_found_exits_0():
    result = doctor(str(FIXTURES / "seed003" / "after"))
    assert (result.returncode, result.stdout.strip()) == (0, "All checks passed!")


def test_json_carries_why_fix_and_anchor():
    result = doctor("--format", "json", str(BEFORE))
    items = json.loads(result.stdout)
    assert result.returncode == 1 and len(items) == 8
    reload = next(i for i in items if i["code"] == "LS201")
    assert reload["path"].endswith("docker-compose.yml") and (reload["line"], reload["column"]) == (
        6,
        5,
    )
    assert reload["why"] == RULES["LS201"].why and reload["url"] == "README.md#ls201"


def test_sarif_validates_against_the_sarif_2_1_0_schema():
    result = doctor("--format", "sarif", str(FIXTURES / "seed004" / "before"))
    log = json.loads(result.stdout)
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(log, schema, cls=jsonschema.Draft4Validator)
    run = log["runs"][0]
    rules = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    assert rules == list(RULES)
    for result_ in run["results"]:
        assert rules[result_["ruleIndex"]] == result_["ruleId"]
        region = result_["locations"][0]["physicalLocation"]["region"]
        assert region["startLine"] >= 1 and region["startColumn"] >= 1
    assert {r["ruleId"] for r in run["results"]} == {
        "LS105",
        "LS107",
        "LS108",
        "LS205",
        "LS207",
        "LS208",
    }


def test_an_invalid_sarif_log_would_fail_the_schema():
    """The validation above can fail: a result without a message is refused."""
    log = {
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "x"}}, "results": [{"ruleId": "LS101"}]}],
    }
    schema = json.loads(SCHEMA.read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(log, schema, cls=jsonschema.Draft4Validator)


def test_select_and_ignore():
    selected = doctor("--format", "json", "--select", "LS2", "--ignore", "LS205", str(BEFORE))
    assert {i["code"] for i in json.loads(selected.stdout)} == {"LS201", "LS204", "LS211"}
    only = doctor("--select", "LS109", "--format", "json", str(BEFORE))
    assert {i["code"] for i in json.loads(only.stdout)} == {"LS109"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--select", "LS999"], "unknown rule code 'LS999' in --select; valid: LS101, LS102"),
        (["--ignore", "E501"], "unknown rule code 'E501' in --ignore"),
        (["no/such/dir"], "path 'no/such/dir' does not exist"),
        (["--format", "xml"], "invalid choice: 'xml' (choose from 'text', 'json', 'sarif')"),
        (["--max-connections", "lots"], "'lots' is not a positive integer"),
    ],
)
def test_bad_usage_exits_2_naming_the_bad_value(args, message):
    result = doctor(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_settings_come_from_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.lifesigns.doctor]\nignore = ["LS106"]\nexclude = ["legacy"]\n'
    )
    (tmp_path / "db.py").write_text(
        "from sqlalchemy import create_engine\n"
        "engine = create_engine('postgresql://db/app', echo=True, pool_pre_ping=True,\n"
        "                       connect_args={'options': '-c statement_timeout=5000'})\n"
    )
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "old.py").write_text("import asyncio\nasyncio.ensure_future(None)\n")
    assert doctor(".", cwd=tmp_path).returncode == 0
    assert doctor("--no-config", ".", cwd=tmp_path).returncode == 1


def test_a_bad_setting_names_the_key_and_what_is_valid(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.lifesigns.doctor]\nmax-depht = 3\n")
    result = doctor(".", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown key 'max-depht'" in result.stderr and "max-depth" in result.stderr
    (tmp_path / "pyproject.toml").write_text("[tool.lifesigns.doctor]\nmax-depth = 0\n")
    result = doctor(".", cwd=tmp_path)
    assert "max-depth = 0: expected an integer from 1 to 20" in result.stderr


def test_usage_lists_doctor():
    result = subprocess.run(
        [sys.executable, "-m", "lifesigns", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "doctor [PATH...]" in result.stdout


def test_an_empty_report_is_valid_sarif_and_an_empty_json_list():
    after = str(FIXTURES / "seed004" / "after")
    sarif = doctor("--format", "sarif", "--select", "LS2", after)
    log = json.loads(sarif.stdout)
    jsonschema.validate(log, json.loads(SCHEMA.read_text()), cls=jsonschema.Draft4Validator)
    assert sarif.returncode == 0 and log["runs"][0]["results"] == []
    rules = [r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]]
    assert rules == [code for code in RULES if code.startswith("LS2")]  # only what was checked
    empty = doctor("--format", "json", after)
    assert (empty.returncode, json.loads(empty.stdout)) == (0, [])
