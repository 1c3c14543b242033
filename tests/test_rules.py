"""The shipped alert rules and dashboard: valid, unit-tested by promtool, printed by the CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifesigns.cli.rules import DASHBOARD, RULES, shipped
from lifesigns.metrics import dashboard

ROOT = Path(__file__).resolve().parents[1]
MIXIN = ROOT / "src" / "lifesigns" / "metrics" / "mixin"
RULES_FILE = MIXIN / RULES
PROMTOOL_TESTS = sorted((ROOT / "tests" / "promtool").glob("*.yml"))
RUNBOOK = "https://github.com/lifesigns/lifesigns#"

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool")


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_incident_kind_has_an_alert() -> None:
    names = {rule["alert"] for rule in alerts()}
    assert names >= {
        "LifesignsEventLoopStalled",
        "LifesignsEventLoopLagHigh",
        "LifesignsLivenessAboutToFail",
        "LifesignsThreadPoolSaturated",
        "LifesignsPoolCheckoutWaits",
        "LifesignsPoolCheckoutTimeouts",
        "LifesignsConnectionLeak",
        "LifesignsConnectionLeakSuspected",
        "LifesignsMemoryLeakSuspected",
        "LifesignsMemoryGrowth",
        "LifesignsTaskFailed",
        "LifesignsTaskOverruns",
        "LifesignsReadinessFlapping",
        "LifesignsDeadline504s",
        "LifesignsErrorBudgetBurn",
        "LifesignsLatencyBudgetBurn",
    }


def test_every_alert_has_a_severity_summary_description_and_its_runbook_anchor() -> None:
    readme = (ROOT / "README.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in readme.splitlines()
        if line.startswith("#")
    }
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        anchor = name.lower()
        assert notes["runbook_url"] == RUNBOOK + anchor, name
        assert anchor in headings, f"README has no heading for {name}'s runbook"


def test_every_alert_fires_in_a_promtool_test() -> None:
    fired: set[str] = set()
    for path in PROMTOOL_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    assert {rule["alert"] for rule in alerts()} - fired == set()


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        ["promtool", "check", "rules", str(RULES_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"SUCCESS: \d+ rules found", done.stdout + done.stderr)


@needs_promtool
@pytest.mark.parametrize("path", PROMTOOL_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path: Path) -> None:
    """Each alert fires on its incident's series and stays quiet on the healthy ones."""
    done = subprocess.run(
        ["promtool", "test", "rules", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_the_cli_prints_the_shipped_rules_and_dashboard() -> None:
    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "lifesigns", "rules", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert cli() == RULES_FILE.read_text() == shipped(RULES)
    printed = json.loads(cli("--dashboard"))
    assert printed == json.loads(shipped(DASHBOARD))
    assert printed["uid"] == dashboard.UID
    done = subprocess.run(
        [sys.executable, "-m", "lifesigns", "rules", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--bogus" in done.stderr


def test_the_committed_dashboard_is_the_generators_output() -> None:
    assert (MIXIN / DASHBOARD).read_text() == dashboard.render(), (
        "regenerate: python -m lifesigns.metrics.dashboard > "
        "src/lifesigns/metrics/mixin/lifesigns.dashboard.json"
    )


def test_the_dashboard_is_written_as_the_mixins_write_theirs() -> None:
    board = json.loads((MIXIN / DASHBOARD).read_text())
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    assert {r["id"] for r in board["__requires"]} >= {"grafana", "prometheus", "timeseries"}
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"datasource", "job", "instance", "worker"}
    assert variables["worker"]["allValue"] == ".*"  # matches series with no worker label
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == [
        "Event loop and stalls",
        "Thread pool",
        "Connection pool",
        "Supervised tasks",
        "Memory",
        "Requests",
        "Probes and checks",
    ]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            expr = target["expr"]
            if "lifesigns:" not in expr:
                assert 'instance=~"$instance"' in expr, panel["title"]
                assert 'worker=~"$worker"' in expr, panel["title"]


def _uv() -> list[str] | None:
    if shutil.which("uv"):
        return ["uv"]
    probe = subprocess.run(
        ["python3", "-m", "uv", "--version"], capture_output=True, timeout=30, check=False
    )
    return ["python3", "-m", "uv"] if probe.returncode == 0 else None


def test_the_wheel_ships_the_rules_and_dashboard(tmp_path: Path) -> None:
    uv = _uv()
    if uv is None:
        pytest.skip("needs uv to build the wheel")
    built = subprocess.run(
        [*uv, "build", "--wheel", "--offline", "-o", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("lifesigns-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        rules = archive.read("lifesigns/metrics/mixin/lifesigns.rules.yml").decode()
    assert "lifesigns/metrics/mixin/lifesigns.dashboard.json" in names
    assert rules == RULES_FILE.read_text()
