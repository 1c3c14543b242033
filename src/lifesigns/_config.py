"""Settings: validated once, from arguments or ``LIFESIGNS_<NAME>`` environment variables.

An explicit argument wins over the environment; the environment wins over the default.
A malformed value raises :class:`~lifesigns.errors.ConfigError` naming where it came from
(the argument or the variable), the value, and what is allowed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, TypeVar

from ._frames import parse_app_packages
from .errors import ConfigError

T = TypeVar("T")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()
"""Marks an argument the caller did not give, so the environment or the default applies."""

ENV_PREFIX: Final = "LIFESIGNS_"

PROBE_NAMES: Final = ("livez", "readyz", "startupz", "health", "metrics")


def _source(name: str, from_env: bool) -> str:
    return f"{ENV_PREFIX}{name.upper()}" if from_env else name


def seconds(
    name: str,
    value: object,
    *,
    minimum: float = 0.0,
    maximum: float = 86_400.0,
    allow_zero: bool = False,
    from_env: bool = False,
) -> float:
    """Validate a duration in seconds and return it as a float."""
    where = _source(name, from_env)
    if isinstance(value, bool) or (isinstance(value, str) and not from_env):
        raise ConfigError(f"{where}={value!r} is not a duration; allowed: seconds as a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}={value!r} is not a duration; allowed: seconds as a number, e.g. 0.5"
        ) from None
    low_ok = number >= minimum if allow_zero else number > minimum
    if not math.isfinite(number) or not low_ok or number > maximum:
        low = f">= {minimum:g}" if allow_zero else f"> {minimum:g}"
        raise ConfigError(
            f"{where}={value!r} is out of range; allowed: {low} and <= {maximum:g} seconds"
        )
    return number


def port(name: str, value: object, *, from_env: bool = False, allow_zero: bool = True) -> int:
    """Validate a TCP port number (0 asks the system for a free one)."""
    where = _source(name, from_env)
    try:
        number = int(str(value), 10) if not isinstance(value, bool) else -1
    except ValueError:
        number = -1
    if number < (0 if allow_zero else 1) or number > 65535:
        low = 0 if allow_zero else 1
        raise ConfigError(
            f"{where}={value!r} is not a port; allowed: an integer from {low} to 65535"
        )
    return number


def boolean(name: str, value: object, *, from_env: bool = False) -> bool:
    """Validate a flag; the environment may say 1/0, true/false, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    where = _source(name, from_env)
    raise ConfigError(f"{where}={value!r} is not a flag; allowed: true/false, 1/0, yes/no, on/off")


def text(name: str, value: object, *, from_env: bool = False, min_length: int = 1) -> str:
    """Validate a non-empty piece of text."""
    where = _source(name, from_env)
    if not isinstance(value, str) or len(value.strip()) < min_length:
        raise ConfigError(f"{where}={value!r} must be text of at least {min_length} character(s)")
    return value.strip()


def token(name: str, value: object, *, from_env: bool = False) -> str | None:
    """Validate the bearer token that unlocks details and dumps (``None`` disables them)."""
    if value is None or value == "":
        return None
    where = _source(name, from_env)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be text, not {type(value).__name__}")
    if len(value) < 16 or any(c.isspace() for c in value):
        # The value itself is a secret: say what is wrong without echoing it.
        raise ConfigError(
            f"{where} is too weak: it has {len(value)} characters; allowed: at least 16 "
            "characters and no white space (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(24))'`)"
        )
    return value


def path(name: str, value: object, *, from_env: bool = False, allow_empty: bool = False) -> str:
    """Validate a URL path such as ``/livez`` (or a prefix such as ``/ops``)."""
    where = _source(name, from_env)
    if not isinstance(value, str):
        raise ConfigError(f"{where}={value!r} is not a path; allowed: text starting with '/'")
    if value == "" and allow_empty:
        return value
    if (
        not value.startswith("/")
        or any(c in value for c in "?# \t")
        or (allow_empty and value.endswith("/"))
    ):
        shape = "'' or '/name' without a trailing '/'" if allow_empty else "'/name'"
        raise ConfigError(
            f"{where}={value!r} is not a path; allowed: {shape}, no '?', '#' or spaces"
        )
    return value


def resolve(
    name: str,
    given: object,
    default: T,
    validate: Callable[..., T],
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> T:
    """Pick an explicit argument, else ``LIFESIGNS_<NAME>``, else the default; validate it."""
    environ = os.environ if env is None else env
    if given is not UNSET:
        return validate(name, given, **kwargs)
    raw = environ.get(f"{ENV_PREFIX}{name.upper()}")
    if raw is not None and raw != "":
        return validate(name, raw, from_env=True, **kwargs)
    return default


@dataclass(frozen=True)
class Settings:
    """Every setting of one :class:`~lifesigns.Lifesigns`, validated.

    Build it with :meth:`from_arguments`; its ``repr`` shows what a user would type, with
    the token masked.
    """

    service: str = "service"
    version: str | None = None
    token: str | None = field(default=None, repr=False)
    prefix: str = ""
    paths: Mapping[str, str | None] = field(default_factory=dict)
    probe_budget: float = 0.8
    check_timeout: float = 0.5
    pass_ttl: float = 2.0
    fail_ttl: float = 1.0
    startup_deadline: float = 60.0
    grace: float = 10.0
    side_host: str = "127.0.0.1"
    side_port: int | None = None
    stall_threshold: float = 0.25  # why: lifesigns.loop docstring
    live_fail_after: float = 10.0  # why: lifesigns.loop docstring
    drain_delay: float = 5.0
    termination_grace: float = 30.0
    deadline: float | None = None
    watchdog: bool = True
    memory: bool = True
    app_packages: tuple[str, ...] = ()  # why: lifesigns._frames docstring

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "token":
                value = "***" if value else None
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def probe_path(self, probe: str) -> str | None:
        """The full path a probe is served at, or ``None`` when it is switched off."""
        chosen = self.paths.get(probe, f"/{probe}")
        return None if chosen is None else f"{self.prefix}{chosen}"

    @classmethod
    def from_arguments(
        cls, arguments: Mapping[str, object], env: Mapping[str, str] | None = None
    ) -> Settings:
        """Validate keyword arguments (``UNSET`` where not given) against the environment."""
        defaults = cls()
        values: dict[str, Any] = {
            name: resolve(
                name, arguments.get(name, UNSET), getattr(defaults, name), check, env, **kw
            )
            for name, (check, kw) in _OPTIONS.items()
        }
        values["paths"] = _paths(arguments.get("paths", UNSET))
        return cls(**values)


def _optional_text(name: str, value: object, *, from_env: bool = False) -> str | None:
    return None if value is None else text(name, value, from_env=from_env)


def _optional_seconds(name: str, value: object, *, from_env: bool = False) -> float | None:
    if value is None or (from_env and str(value).strip().lower() in {"none", "off"}):
        return None
    return seconds(name, value, from_env=from_env, maximum=3600.0)


def _optional_port(name: str, value: object, *, from_env: bool = False) -> int | None:
    return None if value is None else port(name, value, from_env=from_env)


def _app_packages(name: str, value: object, *, from_env: bool = False) -> tuple[str, ...]:
    try:
        return parse_app_packages(value, where=_source(name, from_env))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _paths(value: object) -> Mapping[str, str | None]:
    if value is UNSET or value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"paths={value!r} must be a mapping such as {{'livez': '/healthz'}}")
    result: dict[str, str | None] = {}
    for probe, chosen in value.items():
        if probe not in PROBE_NAMES:
            raise ConfigError(
                f"paths has an unknown probe {probe!r}; allowed: {', '.join(PROBE_NAMES)}"
            )
        result[probe] = None if chosen is None else path(f"paths[{probe!r}]", chosen)
    served = [p for p in result.values() if p is not None]
    if len(served) != len(set(served)):
        raise ConfigError(f"paths={value!r} serves two probes at one path")
    return result


_OPTIONS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "service": (text, {}),
    "version": (_optional_text, {}),
    "token": (token, {}),
    "prefix": (path, {"allow_empty": True}),
    "probe_budget": (seconds, {"maximum": 60.0}),
    "check_timeout": (seconds, {"maximum": 600.0}),
    "pass_ttl": (seconds, {"allow_zero": True, "maximum": 3600.0}),
    "fail_ttl": (seconds, {"allow_zero": True, "maximum": 3600.0}),
    "startup_deadline": (seconds, {"maximum": 86_400.0}),
    "grace": (seconds, {"maximum": 3600.0}),
    "side_host": (text, {}),
    "side_port": (_optional_port, {}),
    "watchdog": (boolean, {}),
    "memory": (boolean, {}),
    "stall_threshold": (seconds, {"minimum": 0.01, "allow_zero": True, "maximum": 60.0}),
    "live_fail_after": (seconds, {"maximum": 3600.0}),
    "drain_delay": (seconds, {"allow_zero": True, "maximum": 3600.0}),
    "termination_grace": (seconds, {"maximum": 86_400.0}),
    "deadline": (_optional_seconds, {}),
    "app_packages": (_app_packages, {}),
}
"""Every option but ``paths``: its validator and the validator's bounds.

Adding a setting means a field on :class:`Settings`, a line here and a keyword argument
on :class:`~lifesigns.Lifesigns`.
"""
