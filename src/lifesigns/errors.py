"""Exceptions lifesigns raises, all under :class:`LifesignsError`.

``except lifesigns.LifesignsError`` catches every error lifesigns raises on purpose. Where
an error also means something the standard library has a class for, it subclasses that
too, so existing ``except ValueError`` / ``except LookupError`` / ``except TimeoutError``
code keeps working. The hierarchy (defined here unless a module is named)::

    LifesignsError
    ├── ConfigError          + ValueError    a setting was given a value it cannot take
    ├── StartupError                         a dependency did not answer before its deadline
    ├── UnknownCheckError    + LookupError   a request named a check that does not exist
    ├── Degraded                             raised by a check to report ``warn``
    ├── TaskFailed                           a task was given up (its check fails)
    ├── PoolSaturated                        lifesigns.db.saturation: the pool stayed full
    ├── LoopUnavailable                      lifesigns.router: the loop did not run a probe
    ├── DoctorUsageError     + ValueError    lifesigns.doctor: a bad option or path
    ├── UsageError           + ValueError    lifesigns.cli.run: a bad option of lifesigns run
    ├── SlotsFull            + RuntimeError  lifesigns.agent.slots: every worker slot is taken
    ├── DumpRefused                          lifesigns.router: a dump refuses its query
    └── BulkheadFull         + TimeoutError  lifesigns.db.bulkhead: no slot came free

``tests/test_errors.py`` walks every module of the package and holds every exception class
to this tree; the demo application (``lifesigns.lab``) raises its own business exceptions
and is not part of it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

__all__ = [
    "ConfigError",
    "Degraded",
    "LifesignsError",
    "StartupError",
    "TaskFailed",
    "UnknownCheckError",
]


class LifesignsError(Exception):
    """Base class of every error lifesigns raises on purpose."""


class ConfigError(LifesignsError, ValueError):
    """A setting was given a value it cannot take.

    The message names the setting (or the environment variable it came from), the value
    that was given and what would be valid, so it can be fixed without reading source.
    """


class StartupError(LifesignsError):
    """A dependency did not answer before its start-up deadline."""


class UnknownCheckError(LifesignsError, LookupError):
    """A request named a check that does not exist (``?exclude=nosuch``)."""

    def __init__(self, unknown: Collection[str], known: Iterable[str]) -> None:
        self.unknown = sorted(unknown)
        self.known = sorted(known)
        names = ", ".join(self.known) or "(none registered)"
        super().__init__(f"unknown check {', '.join(map(repr, self.unknown))}; checks: {names}")


class Degraded(LifesignsError):
    """Raised by a check to report ``warn``: working, but not as it should.

    A critical check that raises ``Degraded`` does not fail readiness; the health report
    shows the message with status ``warn``.
    """


class TaskFailed(LifesignsError):
    """A task exceeded its restart intensity and was given up (its check fails)."""
