"""One settings table: every option with its variable, one set of limits, and the README."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields

import pytest

from lifesigns import ConfigError, Lifesigns, loop, memory
from lifesigns._config import OPTIONS, Settings, markdown, option
from lifesigns.host import Host
from lifesigns.loop import LoopSettings
from tests.support.servers import REPO_ROOT

README = REPO_ROOT / "README.md"


def test_readme_option_reference_is_the_table() -> None:
    text = README.read_text()
    found = re.search(r"<!-- options:start[^\n]*-->\n(.*?)<!-- options:end -->", text, re.S)
    assert found, "README lost its <!-- options:start --> ... <!-- options:end --> markers"
    assert found.group(1) == markdown(), (
        "README's option reference is stale: paste `python -m lifesigns._config --markdown`"
    )


def test_the_reference_is_printed_by_the_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lifesigns._config", "--markdown"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == markdown()
    assert "`LIFESIGNS_CENSUS_INTERVAL`" in done.stdout


def test_settings_fields_are_the_table_rows_with_the_same_defaults() -> None:
    assert [f.name for f in fields(Settings)] == list(OPTIONS)
    defaults = Settings()
    for name, row in OPTIONS.items():
        assert getattr(defaults, name) == row.default, name
        assert row.env == f"LIFESIGNS_{name.upper()}"
        assert row.doc and row.check.allowed, name
    loop_defaults = LoopSettings()
    for f in fields(LoopSettings):
        assert getattr(loop_defaults, f.name) == OPTIONS[f.name].default, f.name


@pytest.mark.parametrize(
    ("variable", "value", "name", "expected"),
    [
        ("LIFESIGNS_LIMITER_THRESHOLD", "2.5", "limiter_threshold", 2.5),
        ("LIFESIGNS_CENSUS_INTERVAL", "1", "census_interval", 1.0),
        ("LIFESIGNS_GIL_GUARD", "off", "gil_guard", False),
        ("LIFESIGNS_REPORT_BURST", "7", "report_burst", 7),
        ("LIFESIGNS_MEMORY_WINDOW", "60", "memory_window", 60.0),
        ("LIFESIGNS_LEAK_THRESHOLD", "off", "leak_threshold", None),
        ("LIFESIGNS_ON_SATURATION", "Degrade", "on_saturation", "degrade"),
        ("LIFESIGNS_FULL_STACKS", "true", "full_stacks", 1.0),
        ("LIFESIGNS_REPLICAS", "4", "replicas", 4),
        ("LIFESIGNS_DEADLINE", "off", "deadline", None),
        (
            "LIFESIGNS_PATHS",
            "livez=/healthz,metrics=off",
            "paths",
            {"livez": "/healthz", "metrics": None},
        ),
    ],
)
def test_every_option_reads_its_variable(
    variable: str, value: str, name: str, expected: object
) -> None:
    settings = Settings.from_arguments({}, env={variable: value})
    assert getattr(settings, name) == expected


def test_loop_options_reach_the_layer_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFESIGNS_CENSUS_INTERVAL", "2")
    monkeypatch.setenv("LIFESIGNS_GIL_GUARD", "0")
    signs = Lifesigns()
    watch = signs.host.find_layer("loop")
    assert isinstance(watch, loop.LoopWatch)
    assert watch.settings.census_interval == 2.0 and watch.settings.gil_guard is False


def test_a_bad_variable_is_named() -> None:
    with pytest.raises(ConfigError, match=r"LIFESIGNS_REPORT_BURST='lots' is out of range"):
        Settings.from_arguments({}, env={"LIFESIGNS_REPORT_BURST": "lots"})
    with pytest.raises(ConfigError, match=r"LIFESIGNS_PATHS='healthz' is not allowed"):
        Settings.from_arguments({}, env={"LIFESIGNS_PATHS": "healthz"})


@pytest.mark.parametrize(
    ("name", "value"),
    [("stall_threshold", 0.005), ("stall_threshold", 120), ("live_fail_after", 5000)],
)
def test_one_set_of_limits_whichever_way_an_option_comes(name: str, value: object) -> None:
    # Issue 8: stall_threshold was 0.01-60 s through Lifesigns, 0.005-600 s through attach.
    with pytest.raises(ConfigError) as through_lifesigns:
        Lifesigns(**{name: value})
    with pytest.raises(ConfigError) as through_attach:
        loop.attach(Host(), **{name: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as through_environment:
        Settings.from_arguments({}, env={option(name).env: str(value)})
    assert str(through_lifesigns.value) == str(through_attach.value)
    assert "out of range" in str(through_lifesigns.value)
    assert option(name).env in str(through_environment.value)


def test_memory_options_have_the_memory_rows_limits() -> None:
    with pytest.raises(ConfigError, match=r"memory_threshold=0 is out of range; allowed: > 0"):
        memory.attach(Host(), threshold=0)


def test_override_refuses_an_unknown_option() -> None:
    with pytest.raises(ConfigError, match=r"there is no option 'stall_treshold'"):
        Settings().override(stall_treshold=1.0)
    with pytest.raises(ConfigError, match=r"there is no option 'colour'"):
        Settings.from_arguments({"colour": "red"}, env={})
