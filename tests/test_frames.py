"""The frame classifier and the path shortener over real files (issue 8, item 4)."""

from __future__ import annotations

import asyncio
import os
import sysconfig
from pathlib import Path

import click.core
import httpx
import pytest
import sqlalchemy.engine.base

import lifesigns.lab.app
import lifesigns.loop.stacks
from lifesigns._config import Settings
from lifesigns._frames import (
    FALLBACK,
    OWN,
    SKIP,
    FrameClassifier,
    FrameKind,
    inferred_app_packages,
    module_name,
    short_path,
)
from lifesigns.errors import ConfigError

STDLIB = sysconfig.get_paths()["stdlib"]
SCRIPTS = sysconfig.get_paths()["scripts"]


@pytest.fixture
def classifier() -> FrameClassifier:
    """A classifier with no explicit packages and nothing inferred from this process."""
    return FrameClassifier(env={}, inferred=())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: ``<tmp>/backend/app/api/deps.py`` in a regular package, and a
    plain script beside the package."""
    package = tmp_path / "backend" / "app"
    (package / "api").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "api" / "__init__.py").write_text("")
    (package / "api" / "deps.py").write_text("def get_db():\n    return 1\n")
    (tmp_path / "backend" / "manage.py").write_text("print('hi')\n")
    return tmp_path / "backend"


def test_the_standard_library_is_stdlib(classifier: FrameClassifier) -> None:
    decoder = os.path.join(STDLIB, "json", "decoder.py")
    assert Path(decoder).is_file()
    assert classifier.kind(decoder) is FrameKind.STDLIB
    assert classifier.kind(asyncio.tasks.__file__) is FrameKind.STDLIB
    assert classifier.kind(os.__file__) is FrameKind.STDLIB
    assert classifier.kind("<frozen importlib._bootstrap>") is FrameKind.STDLIB
    assert short_path(decoder) == "json/decoder.py"
    assert short_path(os.__file__) == "os.py"
    assert classifier.rank(decoder) == SKIP


def test_site_packages_are_libraries_and_the_serving_stack_is_never_a_site(
    classifier: FrameClassifier,
) -> None:
    assert "site-packages" in httpx.__file__
    assert classifier.kind(httpx.__file__) is FrameKind.LIBRARY
    assert classifier.rank(httpx.__file__) == FALLBACK
    engine = sqlalchemy.engine.base.__file__
    assert classifier.kind(engine) is FrameKind.LIBRARY
    assert classifier.rank(engine) == SKIP
    assert short_path(engine) == "sqlalchemy/engine/base.py"
    assert module_name(engine) == "sqlalchemy.engine.base"


def test_cli_frameworks_and_console_scripts_are_launchers(
    classifier: FrameClassifier, tmp_path: Path
) -> None:
    assert classifier.kind(click.core.__file__) is FrameKind.LAUNCHER
    assert short_path(click.core.__file__) == "click/core.py"
    for script in ("fastapi", "uvicorn"):
        path = os.path.join(SCRIPTS, script)
        assert Path(path).is_file(), path  # the real console-script shims of this venv
        assert classifier.kind(path) is FrameKind.LAUNCHER
        assert classifier.rank(path) == SKIP
    # A shim of another environment (pipx, a system install) is one too.
    other = tmp_path / "tools" / "bin" / "mytool"
    other.parent.mkdir(parents=True)
    other.write_text("#!/usr/bin/python\nfrom mytool import main\nmain()\n")
    assert classifier.kind(str(other)) is FrameKind.LAUNCHER
    assert classifier.kind("<frozen runpy>") is FrameKind.LAUNCHER
    assert classifier.kind(os.path.join(STDLIB, "runpy.py")) is FrameKind.LAUNCHER


def test_a_user_package_is_the_application_wherever_it_sits(
    classifier: FrameClassifier, project: Path
) -> None:
    deps = str(project / "app" / "api" / "deps.py")
    assert classifier.kind(deps) is FrameKind.APPLICATION
    assert classifier.rank(deps) == OWN
    assert short_path(deps) == "app/api/deps.py"
    assert module_name(deps) == "app.api.deps"
    script = str(project / "manage.py")
    assert classifier.kind(script) is FrameKind.APPLICATION


def test_the_lab_is_the_application_and_the_rest_of_lifesigns_is_lifesigns(
    classifier: FrameClassifier,
) -> None:
    lab = lifesigns.lab.app.__file__
    assert classifier.kind(lab) is FrameKind.APPLICATION
    assert short_path(lab) == "lifesigns/lab/app.py"  # not "lab/app.py"
    stacks = lifesigns.loop.stacks.__file__
    assert classifier.kind(stacks) is FrameKind.LIFESIGNS
    assert short_path(stacks) == "lifesigns/loop/stacks.py"
    assert classifier.rank(stacks) == SKIP


def test_generated_code_is_not_the_application(classifier: FrameClassifier) -> None:
    assert classifier.kind("<string>") is FrameKind.LIBRARY
    assert short_path("<string>") == "<string>"
    assert classifier.rank("<string>") == SKIP


def test_app_packages_say_exactly_what_the_application_is(project: Path) -> None:
    explicit = FrameClassifier(app_packages=["httpx", "app.api"], inferred=())
    assert explicit.kind(httpx.__file__) is FrameKind.APPLICATION  # installed, still ours
    assert explicit.kind(str(project / "app" / "api" / "deps.py")) is FrameKind.APPLICATION
    assert explicit.kind(str(project / "manage.py")) is FrameKind.LIBRARY  # not named
    assert explicit.kind(click.core.__file__) is FrameKind.LAUNCHER
    assert explicit.kind(lifesigns.lab.app.__file__) is FrameKind.APPLICATION
    from_env = FrameClassifier(env={"LIFESIGNS_APP_PACKAGES": "httpx, other"}, inferred=())
    assert from_env.app_packages == ("httpx", "other")
    assert from_env.kind(httpx.__file__) is FrameKind.APPLICATION


def test_bad_app_packages_are_refused_naming_the_value() -> None:
    with pytest.raises(ValueError, match=r"'my-app'.*dotted Python names"):
        FrameClassifier(app_packages="my-app")
    with pytest.raises(ValueError, match=r"LIFESIGNS_APP_PACKAGES='a b'"):
        FrameClassifier(env={"LIFESIGNS_APP_PACKAGES": "a b"})
    with pytest.raises(ConfigError, match=r"app_packages=5 is not a list of packages"):
        Settings.from_arguments({"app_packages": 5})
    with pytest.raises(ConfigError, match=r"LIFESIGNS_APP_PACKAGES='x\.1'"):
        Settings.from_arguments({}, env={"LIFESIGNS_APP_PACKAGES": "x.1"})
    assert Settings.from_arguments({"app_packages": "app,worker"}).app_packages == (
        "app",
        "worker",
    )
    assert Settings.from_arguments({}, env={"LIFESIGNS_APP_PACKAGES": "app"}).app_packages == (
        "app",
    )


def test_the_package_a_server_loads_stays_the_application_when_installed() -> None:
    argv = ["--host", "0.0.0.0", "--port", "8000", "-k", "uvicorn.workers.UvicornWorker"]
    assert inferred_app_packages([*argv, "httpx._api:app"], main=object()) == ("httpx",)
    assert inferred_app_packages(["lifesigns.lab.app:app", "localhost:8000"], main=object()) == ()
    inferred = FrameClassifier(env={}, inferred=["httpx"])
    assert inferred.kind(httpx.__file__) is FrameKind.APPLICATION
    assert inferred.kind(click.core.__file__) is FrameKind.LAUNCHER


def test_classification_is_cached_by_file_name(
    classifier: FrameClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = classifier.kind(httpx.__file__), classifier.rank(httpx.__file__)

    def classify_again(filename: str) -> FrameKind:
        raise AssertionError(f"{filename} classified twice")

    monkeypatch.setattr(classifier, "_classify", classify_again)
    assert (classifier.kind(httpx.__file__), classifier.rank(httpx.__file__)) == first
