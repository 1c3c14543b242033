"""What a check is, and what one run of it found."""

from __future__ import annotations

import datetime as dt
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .._config import seconds
from ..errors import ConfigError
from .status import Status

CheckFunction: TypeAlias = Callable[[], Awaitable[Any]] | Callable[[], Any]
"""A check: an ``async def`` or plain function taking no arguments.

It passes by returning (``None`` or a mapping of observed details such as
``{"pool_in_use": 3}``), warns by raising :class:`~lifesigns.errors.Degraded` and fails by
raising anything else. A plain function runs in lifesigns' own small thread pool, never
in the event loop and never in the application's thread pool.
"""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")

COMPONENT_TYPES = ("component", "datastore", "system")


@dataclass(frozen=True)
class Check:
    """A named check with its timeout, criticality and cache lifetimes.

    ``critical`` checks decide readiness; the others only turn the health report to
    ``warn``. A result is reused for ``pass_ttl`` seconds after a pass and ``fail_ttl``
    seconds after a failure, so a flood of probes runs the check at most once per lifetime.
    """

    name: str
    func: CheckFunction = field(repr=False, compare=False)
    timeout: float = 0.5
    critical: bool = True
    pass_ttl: float = 2.0
    fail_ttl: float = 1.0
    component_type: str = "component"
    is_async: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(
                f"check name {self.name!r} is not allowed; use 1-63 letters, digits, '_', '-' "
                "or '.', starting with a letter or digit"
            )
        if not callable(self.func):
            raise ConfigError(f"check {self.name!r}: {self.func!r} is not callable")
        for label in ("timeout", "pass_ttl", "fail_ttl"):
            value = seconds(
                f"check {self.name!r}: {label}",
                getattr(self, label),
                allow_zero=label != "timeout",
                maximum=3600.0,
            )
            object.__setattr__(self, label, value)
        if self.component_type not in COMPONENT_TYPES:
            raise ConfigError(
                f"check {self.name!r}: component_type={self.component_type!r}; "
                f"allowed: {', '.join(COMPONENT_TYPES)}"
            )
        object.__setattr__(self, "is_async", _is_async(self.func))


def _is_async(func: object) -> bool:
    # A callable object counts as async when its __call__ is a coroutine function.
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004
    )


@dataclass(frozen=True)
class CheckResult:
    """One run of a check: its status, how long it took, when, and why it failed.

    ``error`` has already been stripped of secrets. ``checked_at`` is wall-clock time
    (seconds since the epoch); ``duration`` is in seconds.
    """

    name: str
    status: Status
    duration: float
    checked_at: float
    critical: bool = True
    error: str | None = None
    timed_out: bool = False
    details: Mapping[str, Any] | None = None
    component_type: str = "component"

    @property
    def time_iso(self) -> str:
        """``checked_at`` as an ISO 8601 UTC timestamp."""
        return (
            dt.datetime.fromtimestamp(self.checked_at, tz=dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )

    @property
    def summary(self) -> str:
        """One line: ``ok``, ``warn: <why>`` or ``failed: <why>``."""
        if self.status is Status.PASS:
            return "ok"
        word = "warn" if self.status is Status.WARN else "failed"
        return f"{word}: {self.error or 'no reason given'}"
