"""Exceptions lifesigns raises at its users."""

from __future__ import annotations


class LifesignsError(Exception):
    """Base class of every error lifesigns raises on purpose."""


class ConfigError(LifesignsError, ValueError):
    """A setting was given a value it cannot take.

    The message names the setting (or the environment variable it came from), the value
    that was given and what would be valid, so it can be fixed without reading source.
    """


class StartupError(LifesignsError):
    """A dependency did not answer before its start-up deadline."""


class Degraded(Exception):
    """Raised by a check to report ``warn``: working, but not as it should.

    A critical check that raises ``Degraded`` does not fail readiness; the health report
    shows the message with status ``warn``.
    """
