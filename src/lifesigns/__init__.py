"""lifesigns keeps async Python web backends alive and, when one hangs, says why.

Importing this package starts nothing and imports little: the public names are loaded on
first use, so the ``lifesigns probe`` command starts as fast as the standard library.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Not ``from typing import TYPE_CHECKING``: importing typing alone costs more than the
# rest of ``lifesigns probe``'s start-up. Type checkers treat this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:  # the names below, for type checkers; loaded lazily at run time
    from typing import Any

    from .core import Lifesigns
    from .errors import ConfigError, Degraded, LifesignsError, StartupError
    from .health import Check, CheckResult, ProbeResult, Status
    from .host import Component, Host
    from .http import LifesignsMiddleware

_EXPORTS = {
    "Lifesigns": "core",
    "Component": "host",
    "Host": "host",
    "ConfigError": "errors",
    "Degraded": "errors",
    "LifesignsError": "errors",
    "StartupError": "errors",
    "Check": "health",
    "CheckResult": "health",
    "ProbeResult": "health",
    "Status": "health",
    "LifesignsMiddleware": "http",
}

__all__ = [
    "Check",
    "CheckResult",
    "Component",
    "ConfigError",
    "Degraded",
    "Host",
    "Lifesigns",
    "LifesignsError",
    "LifesignsMiddleware",
    "ProbeResult",
    "StartupError",
    "Status",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lifesigns' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
