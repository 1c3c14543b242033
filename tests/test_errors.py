"""Every exception lifesigns defines sits under ``LifesignsError``, as ``errors.py`` draws it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType

import pytest

import lifesigns
from lifesigns import errors
from lifesigns.errors import LifesignsError

# Private control flow that must not be an ordinary error: the probe's deadline signal is
# a BaseException so that no ``except Exception`` in the standard library can swallow it.
EXEMPT = {"lifesigns.cli.probe._DeadlineReached"}


def _modules() -> list[ModuleType]:
    names = [lifesigns.__name__]
    names += [
        info.name
        for info in pkgutil.walk_packages(lifesigns.__path__, prefix="lifesigns.")
        if info.name not in ("lifesigns.__main__",)  # running it is its import
        # The demo application's business exceptions (PaymentDeclined...) are its own.
        and not info.name.startswith("lifesigns.lab")
    ]
    return [importlib.import_module(name) for name in names]


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for module in _modules():
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.append(value)
    return found


def test_the_walk_finds_the_known_classes() -> None:
    names = {cls.__qualname__ for cls in _exception_classes()}
    assert {"TaskFailed", "UnknownCheckError", "PoolSaturated", "BulkheadFull"} <= names


def test_every_exception_class_is_a_lifesigns_error() -> None:
    outside = [
        f"{cls.__module__}.{cls.__qualname__} (bases: {[b.__name__ for b in cls.__bases__]})"
        for cls in _exception_classes()
        if not issubclass(cls, LifesignsError)
        and f"{cls.__module__}.{cls.__qualname__}" not in EXEMPT
    ]
    assert outside == []


def test_the_docstring_tree_names_every_public_class() -> None:
    doc = errors.__doc__ or ""
    drawn = set(re.findall(r"[├└]── (\w+)", doc))
    public = {cls.__name__ for cls in _exception_classes() if not cls.__name__.startswith("_")}
    assert public - {"LifesignsError"} == drawn
    for cls in _exception_classes():
        if cls.__name__ in drawn:
            line = next(line for line in doc.splitlines() if f"── {cls.__name__} " in line)
            extra = [b.__name__ for b in cls.__bases__ if not issubclass(b, LifesignsError)]
            assert extra == re.findall(r"\+ (\w+)", line), line


def test_old_import_paths_still_work() -> None:
    from lifesigns.health import UnknownCheckError as FromHealth
    from lifesigns.health.probes import UnknownCheckError as FromProbes
    from lifesigns.tasks import TaskFailed as FromTasks
    from lifesigns.tasks.supervisor import TaskFailed as FromSupervisor

    assert FromHealth is FromProbes is errors.UnknownCheckError
    assert FromTasks is FromSupervisor is errors.TaskFailed


def test_standard_library_bases_still_catch() -> None:
    with pytest.raises(LookupError, match="unknown check 'nosuch'; checks: database"):
        raise errors.UnknownCheckError(["nosuch"], ["database"])
    with pytest.raises(ValueError, match="bad"):
        raise errors.ConfigError("bad")
    assert issubclass(errors.TaskFailed, Exception)
