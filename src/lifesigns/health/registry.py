"""The named checks of one service."""

from __future__ import annotations

import threading

from ..errors import ConfigError
from .check import Check


class CheckRegistry:
    """Holds checks by name; a second check with a name already taken is an error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checks: dict[str, Check] = {}

    def add(self, check: Check) -> Check:
        """Register ``check``; raises :class:`ConfigError` if its name is taken."""
        with self._lock:
            if check.name in self._checks:
                raise ConfigError(
                    f"a check named {check.name!r} is already registered; "
                    f"give this one another name (registered: {', '.join(sorted(self._checks))})"
                )
            self._checks = {**self._checks, check.name: check}
        return check

    def remove(self, name: str) -> None:
        """Forget check ``name`` (no error if it is not there)."""
        with self._lock:
            self._checks = {k: v for k, v in self._checks.items() if k != name}

    def get(self, name: str) -> Check | None:
        """The check called ``name``, if any."""
        return self._checks.get(name)

    def all(self) -> list[Check]:
        """Every check, in the order registered."""
        return list(self._checks.values())

    def critical(self) -> list[Check]:
        """The checks that decide readiness."""
        return [c for c in self._checks.values() if c.critical]

    def __len__(self) -> int:
        return len(self._checks)
