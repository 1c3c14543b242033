"""Settings: explicit arguments, environment variables, and clear errors for bad values."""

from __future__ import annotations

import sys

import pytest

from lifesigns import ConfigError, Lifesigns
from lifesigns._config import Settings


def test_nothing_is_imported_or_started_by_importing_lifesigns():
    import subprocess

    code = (
        "import sys, threading, lifesigns; "
        "heavy = [m for m in ('sqlalchemy', 'prometheus_client', 'tenacity') if m in sys.modules]; "
        "print(heavy, threading.active_count())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "[] 1", out.stderr


def test_creating_lifesigns_starts_no_thread_and_no_task():
    import threading

    before = threading.active_count()
    signs = Lifesigns(service="orders", version="1.2.3")
    assert threading.active_count() == before
    assert signs.lifecycle.phase.value == "created"
    assert "orders" in repr(signs)


def test_environment_fills_what_arguments_leave_out(monkeypatch):
    monkeypatch.setenv("LIFESIGNS_SERVICE", "from-env")
    monkeypatch.setenv("LIFESIGNS_PROBE_BUDGET", "0.4")
    monkeypatch.setenv("LIFESIGNS_SIDE_PORT", "9901")
    signs = Lifesigns(probe_budget=0.6)
    assert signs.settings.service == "from-env"
    assert signs.settings.probe_budget == 0.6  # the explicit argument wins
    assert signs.settings.side_port == 9901


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"probe_budget": -1}, "probe_budget=-1"),
        ({"check_timeout": 0}, "check_timeout=0"),
        ({"pass_ttl": "soon"}, "pass_ttl='soon'"),
        ({"grace": float("nan")}, "grace=nan"),
        ({"side_port": 70000}, "side_port=70000"),
        ({"prefix": "ops/"}, "prefix='ops/'"),
        ({"paths": {"livenessz": "/l"}}, "'livenessz'"),
        ({"paths": {"livez": "/x", "readyz": "/x"}}, "two probes at one path"),
        ({"service": ""}, "service=''"),
    ],
)
def test_bad_argument_is_named_with_what_is_allowed(kwargs, named):
    with pytest.raises(ConfigError) as caught:
        Lifesigns(**kwargs)
    message = str(caught.value)
    assert named in message
    assert "allowed" in message or "must" in message or "two probes" in message


def test_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("LIFESIGNS_CHECK_TIMEOUT", "half a second")
    with pytest.raises(
        ConfigError, match=r"LIFESIGNS_CHECK_TIMEOUT='half a second' is not a duration"
    ):
        Lifesigns()


def test_weak_token_is_refused_without_echoing_it():
    with pytest.raises(ConfigError) as caught:
        Lifesigns(token="hunter2")
    assert "hunter2" not in str(caught.value)
    assert "at least 16 characters" in str(caught.value)


def test_settings_repr_masks_the_token():
    settings = Settings.from_arguments({"token": "a-very-secret-token-1234"}, env={})
    assert "a-very-secret-token-1234" not in repr(settings)
    assert "token='***'" in repr(settings)


def test_negative_check_timeout_and_duplicate_name_are_refused():
    signs = Lifesigns()

    async def ok() -> None:
        return None

    with pytest.raises(ConfigError, match=r"timeout=-0.5 is out of range"):
        signs.check("cache", ok, timeout=-0.5)
    signs.check("cache", ok)
    with pytest.raises(ConfigError, match=r"a check named 'cache' is already registered"):
        signs.check("cache", ok)
    with pytest.raises(ConfigError, match=r"check name 'has space' is not allowed"):
        signs.check("has space", ok)


def test_watch_engine_refuses_what_is_not_an_engine():
    signs = Lifesigns()
    with pytest.raises(ConfigError, match=r"takes a SQLAlchemy Engine or AsyncEngine; got str"):
        signs.watch_engine("postgresql://u:p@h/db")  # type: ignore[arg-type]


def test_importing_every_module_starts_no_thread_and_touches_no_signal():
    import subprocess

    code = """
import importlib, pkgutil, signal, threading, faulthandler
import lifesigns
def state():
    return (threading.active_count(), signal.getsignal(signal.SIGTERM),
            signal.getsignal(signal.SIGINT))
before = state()
names = [m.name for m in pkgutil.walk_packages(lifesigns.__path__, "lifesigns.")
         if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(len(names), before == state(), faulthandler.is_enabled())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    count, unchanged, faulthandler_on = out.stdout.split()
    assert int(count) > 40, out.stderr
    assert unchanged == "True"
    assert faulthandler_on == "False"
