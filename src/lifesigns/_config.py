"""Settings: validated once, from arguments or ``LIFESIGNS_<NAME>`` environment variables.

An explicit argument wins over the environment; the environment wins over the default.
A malformed value raises :class:`~lifesigns.errors.ConfigError` naming where it came from
(the argument or the variable), the value, and what is allowed.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, Protocol, TypeVar

from ._frames import parse_app_packages
from ._surfaces import DEFAULT as _EXPOSED
from ._surfaces import SURFACES, surfaces
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


# -- the settings table -----------------------------------------------------------------


def _number(
    name: str,
    value: object,
    *,
    minimum: float,
    maximum: float,
    allow_zero: bool,
    unit: str,
    from_env: bool = False,
) -> float:
    where = _source(name, from_env)
    if isinstance(value, bool) or (isinstance(value, str) and not from_env):
        raise ConfigError(f"{where}={value!r} is not a number; allowed: {unit} as a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}={value!r} is not a number; allowed: {unit} as a number"
        ) from None
    low_ok = number >= minimum if allow_zero else number > minimum
    if not math.isfinite(number) or not low_ok or number > maximum:
        low = f">= {minimum:g}" if allow_zero else f"> {minimum:g}"
        raise ConfigError(
            f"{where}={value!r} is out of range; allowed: {low} and <= {maximum:g} {unit}"
        )
    return number


def _is_off(value: object, from_env: bool) -> bool:
    return value is None or (from_env and str(value).strip().lower() in {"none", "off"})


@dataclass(frozen=True)
class Seconds:
    """A duration: ``> minimum`` (or ``>=`` with ``allow_zero``) and ``<= maximum``."""

    minimum: float = 0.0
    maximum: float = 86_400.0
    allow_zero: bool = False
    optional: bool = False

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> float | None:
        if self.optional and _is_off(value, from_env):
            return None
        return seconds(
            name,
            value,
            minimum=self.minimum,
            maximum=self.maximum,
            allow_zero=self.allow_zero,
            from_env=from_env,
        )

    @property
    def allowed(self) -> str:
        low = f">= {self.minimum:g}" if self.allow_zero else f"> {self.minimum:g}"
        return f"seconds, {low} and <= {self.maximum:g}" + (", or `None`" if self.optional else "")


@dataclass(frozen=True)
class Number:
    """A plain number in ``unit`` within limits."""

    unit: str
    minimum: float = 0.0
    maximum: float = 1_000_000.0
    allow_zero: bool = False

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> float:
        return _number(
            name,
            value,
            minimum=self.minimum,
            maximum=self.maximum,
            allow_zero=self.allow_zero,
            unit=self.unit,
            from_env=from_env,
        )

    @property
    def allowed(self) -> str:
        low = f">= {self.minimum:g}" if self.allow_zero else f"> {self.minimum:g}"
        return f"{self.unit}, {low} and <= {self.maximum:g}"


@dataclass(frozen=True)
class Fraction:
    """A number from 0 to 1; with ``flags``, ``True`` means 1 and ``False`` 0."""

    flags: bool = False

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> float:
        if self.flags:
            if isinstance(value, bool):
                return 1.0 if value else 0.0
            if from_env and str(value).strip().lower() in _FLAG_WORDS:
                return 1.0 if boolean(name, value, from_env=True) else 0.0
        where = _source(name, from_env)
        try:
            number = -1.0 if isinstance(value, bool) else float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            number = -1.0
        if not 0.0 <= number <= 1.0:
            raise ConfigError(f"{where}={value!r} is out of range; allowed: a number from 0 to 1")
        return number

    @property
    def allowed(self) -> str:
        return "a fraction from 0 to 1" + (", or a flag (`True` is 1)" if self.flags else "")


@dataclass(frozen=True)
class Integer:
    """A whole number from ``minimum`` to ``maximum`` (``None`` too when ``optional``)."""

    minimum: int
    maximum: int
    optional: bool = False
    unit: str = ""

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> int | None:
        if self.optional and _is_off(value, from_env):
            return None
        where = _source(name, from_env)
        number: int | None
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int):
            number = value
        elif from_env and isinstance(value, str):
            try:
                number = int(value.strip(), 10)
            except ValueError:
                number = None
        else:
            number = None
        if number is None or not self.minimum <= number <= self.maximum:
            raise ConfigError(f"{where}={value!r} is out of range; allowed: {self.allowed}")
        return number

    @property
    def allowed(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        span = f"an integer from {self.minimum} to {self.maximum}{unit}"
        return span + (", or `None`" if self.optional else "")


@dataclass(frozen=True)
class Choice:
    """One of a few words."""

    values: tuple[str, ...]

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> str:
        chosen = value.strip().lower() if from_env and isinstance(value, str) else value
        if chosen not in self.values:
            raise ConfigError(
                f"{_source(name, from_env)}={value!r} is not allowed; allowed: {self.allowed}"
            )
        return str(chosen)

    @property
    def allowed(self) -> str:
        return " or ".join(f"`{v!r}`" for v in self.values)


@dataclass(frozen=True)
class Flag:
    """On or off."""

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> bool:
        return boolean(name, value, from_env=from_env)

    allowed = "`True`/`False` (variable: 1/0, true/false, yes/no, on/off)"


@dataclass(frozen=True)
class Text:
    """Non-empty text (``None`` too when ``optional``)."""

    optional: bool = False

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> str | None:
        if self.optional and value is None:
            return None
        return text(name, value, from_env=from_env)

    @property
    def allowed(self) -> str:
        return "non-empty text" + (", or `None`" if self.optional else "")


@dataclass(frozen=True)
class Token:
    """The bearer token."""

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> str | None:
        return token(name, value, from_env=from_env)

    allowed = "at least 16 characters, no white space, or `None`"


@dataclass(frozen=True)
class UrlPath:
    """A URL path, or with ``allow_empty`` a prefix (``''`` or ``/name``)."""

    allow_empty: bool = False

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> str:
        return path(name, value, from_env=from_env, allow_empty=self.allow_empty)

    @property
    def allowed(self) -> str:
        if self.allow_empty:
            return "`''` or `/name` without a trailing `/`"
        return "a path starting with `/`"


@dataclass(frozen=True)
class Port:
    """A TCP port (0 picks a free one), or ``None`` for off when ``optional``."""

    optional: bool = False

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> int | None:
        if self.optional and _is_off(value, from_env):
            return None
        return port(name, value, from_env=from_env)

    @property
    def allowed(self) -> str:
        return "0 (a free port) to 65535" + (", or `None` (off)" if self.optional else "")


@dataclass(frozen=True)
class Paths:
    """Per-probe path overrides; the variable says ``livez=/healthz,metrics=off``."""

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> Mapping[str, Any]:
        if from_env and isinstance(value, str):
            value = _parse_paths(value)
        return _paths(value)

    allowed = (
        f"a mapping of {', '.join(PROBE_NAMES)} to a path or `None` (off); "
        "variable: `livez=/healthz,metrics=off`"
    )


class AppPackages:
    """Package or module names: the application's code (see :mod:`lifesigns._frames`)."""

    allowed = "package or module names, e.g. `app,myservice.api` (empty: inferred)"

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> tuple[str, ...]:
        try:
            return parse_app_packages(value, where=_source(name, from_env))
        except ValueError as error:
            raise ConfigError(str(error)) from None


class Surfaces:
    """Which of probes, metrics, debug a port serves (see :mod:`lifesigns._surfaces`)."""

    allowed = f"a comma-separated subset of {', '.join(sorted(SURFACES))}; or all, none"

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> frozenset[str]:
        return surfaces(name, value, from_env=from_env)


_FLAG_WORDS: Final = {"1", "0", "true", "false", "yes", "no", "on", "off"}


class Validator(Protocol):
    """Checks one option's value and returns it normalised, or raises ``ConfigError``."""

    @property
    def allowed(self) -> str:
        """What is allowed, for the option reference."""
        ...

    def __call__(self, name: str, value: object, *, from_env: bool = False) -> Any: ...


@dataclass(frozen=True)
class Option:
    """One row of the settings table: name, default, limits, layer and doc line.

    Its variable is always ``LIFESIGNS_<NAME>``.
    """

    name: str
    default: Any
    check: Validator
    layer: str
    doc: str

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return f"{ENV_PREFIX}{self.name.upper()}"

    def parse(self, value: object, *, given_as: str | None = None, from_env: bool = False) -> Any:
        """Validate ``value`` with this option's limits (errors name ``given_as`` if set)."""
        return self.check(given_as or self.name, value, from_env=from_env)


def _rows(*options: Option) -> dict[str, Option]:
    return {o.name: o for o in options}


OPTIONS: Final[Mapping[str, Option]] = _rows(
    # core: who answers, where, and how probes behave
    Option("service", "service", Text(), "core", "service id in `/health` and metrics"),
    Option("version", None, Text(optional=True), "core", "release id in `/health` and metrics"),
    Option(
        "token",
        None,
        Token(),
        "core",
        "bearer token that unlocks details and dumps; without it bodies carry the status only",
    ),
    Option("prefix", "", UrlPath(allow_empty=True), "core", "path prefix of every probe"),
    Option(
        "paths",
        {},
        Paths(),
        "core",
        'per-probe paths, e.g. `{"livez": "/healthz", "metrics": None}` (`None`: off)',
    ),
    Option(
        "probe_budget",
        0.8,
        Seconds(maximum=60.0),
        "core",
        "seconds a probe may spend on checks (below the kubelet's 1 s timeout)",
    ),
    Option("check_timeout", 0.5, Seconds(maximum=600.0), "core", "default timeout of a check"),
    Option(
        "pass_ttl",
        2.0,
        Seconds(allow_zero=True, maximum=3600.0),
        "core",
        "seconds a check's pass is reused",
    ),
    Option(
        "fail_ttl",
        1.0,
        Seconds(allow_zero=True, maximum=3600.0),
        "core",
        "seconds a check's failure is reused",
    ),
    Option(
        "startup_deadline",
        60.0,
        Seconds(maximum=86_400.0),
        "core",
        "default seconds start-up waits for a dependency before it fails",
    ),
    Option("grace", 10.0, Seconds(maximum=3600.0), "core", "seconds each part gets to stop"),
    Option("side_host", "127.0.0.1", Text(), "core", "address the side port binds"),
    Option(
        "side_port",
        None,
        Port(optional=True),
        "core",
        "port of the out-of-band server (liveness, readiness, dumps from its own thread)",
    ),
    # loop
    Option(
        "expose",
        _EXPOSED,
        Surfaces(),
        "core",
        "what the application port serves besides the side port: probes (default), "
        "metrics, debug, or all",
    ),
    Option("watchdog", True, Flag(), "loop", "watch the event loop for stalls"),
    Option(
        "stall_threshold",
        0.25,
        Seconds(minimum=0.01, allow_zero=True, maximum=60.0),
        "loop",
        "seconds without a heartbeat before the loop counts as stalled",
    ),
    Option(
        "live_fail_after",
        10.0,
        Seconds(maximum=3600.0),
        "loop",
        "seconds of stall after which liveness fails (longer than `stall_threshold`)",
    ),
    Option(
        "limiter_threshold",
        5.0,
        Seconds(maximum=3600.0),
        "loop",
        "seconds anyio's thread limiter may stay full before it is reported",
    ),
    Option(
        "census_interval",
        10.0,
        Seconds(minimum=0.05, allow_zero=True, maximum=3600.0),
        "loop",
        "seconds between task censuses",
    ),
    Option(
        "gil_guard",
        True,
        Flag(),
        "loop",
        "see stalls in C code holding the GIL through faulthandler's timer",
    ),
    Option(
        "report_burst",
        3,
        Integer(1, 10_000),
        "loop",
        "stall reports logged per site per `report_window`; the rest are counted",
    ),
    Option(
        "report_window",
        600.0,
        Seconds(maximum=86_400.0),
        "loop",
        "seconds over which `report_burst` applies",
    ),
    # memory
    Option("memory", True, Flag(), "memory", "sample RSS and the Python heap for growth"),
    Option("memory_interval", 10.0, Seconds(maximum=3600.0), "memory", "seconds between samples"),
    Option(
        "memory_window",
        600.0,
        Seconds(maximum=7 * 86_400.0),
        "memory",
        "seconds of samples the slope is fitted over (longer than `memory_interval`)",
    ),
    Option(
        "memory_threshold",
        1.0,
        Number("MB/min", maximum=100_000.0),
        "memory",
        "steady RSS growth that makes a leak suspected",
    ),
    Option(
        "memory_trace_seconds",
        30.0,
        Seconds(maximum=3600.0),
        "memory",
        "length of the on-demand tracemalloc box (`/debug/memory-trace`)",
    ),
    Option(
        "memory_trace_every",
        900.0,
        Seconds(maximum=86_400.0),
        "memory",
        "seconds between two tracemalloc boxes lifesigns opens by itself on leak suspicion",
    ),
    # drain
    Option(
        "drain_delay",
        5.0,
        Seconds(allow_zero=True, maximum=3600.0),
        "drain",
        "seconds between SIGTERM (readiness fails) and the server closing its listener",
    ),
    Option(
        "termination_grace",
        30.0,
        Seconds(maximum=86_400.0),
        "drain",
        "seconds the platform allows from SIGTERM to SIGKILL; start-up warns if "
        "`drain_delay + grace` does not fit",
    ),
    # http
    Option(
        "deadline",
        None,
        Seconds(maximum=3600.0, optional=True),
        "http",
        "seconds a request may take before it is cancelled and answered 504 (`None`: none)",
    ),
    # db: pool forensics, per watched engine (`watch_engine(..., leak_threshold=...)`)
    Option(
        "leak_threshold",
        30.0,
        Seconds(minimum=2.0, allow_zero=True, maximum=86_400.0, optional=True),
        "db",
        "seconds a connection may be held, while its owner runs, before it is reported as a "
        "suspected leak (one its finished request or task left behind is reported at once)",
    ),
    Option(
        "saturated_after",
        10.0,
        Seconds(maximum=3600.0),
        "db",
        "seconds of pool saturation, with checkouts failing, before `on_saturation='fail'` "
        "fails readiness",
    ),
    Option(
        "on_saturation",
        "warn",
        Choice(("warn", "degrade", "fail")),
        "db",
        "what pool pressure does: `warn` in `/health` only (`degrade` is its old name), or "
        "`fail` readiness too (opt-in: when every replica is loaded alike, it sheds all "
        "traffic; see `lifesigns.db.saturation`)",
    ),
    Option(
        "wait_warn",
        0.1,
        Seconds(maximum=3600.0),
        "db",
        "p95 checkout wait of the last 30 s that the `<engine>-pool` check counts as pressure",
    ),
    Option(
        "high_water",
        0.9,
        Fraction(),
        "db",
        "fraction of pool capacity that opens an exhaustion episode",
    ),
    Option(
        "low_water",
        0.5,
        Fraction(),
        "db",
        "fraction of pool capacity that closes it (below `high_water`)",
    ),
    Option(
        "full_stacks",
        0.0,
        Fraction(flags=True),
        "db",
        "fraction of checkouts that also record their whole stack",
    ),
    Option(
        "stack_depth",
        6,
        Integer(1, 64, unit="frames"),
        "db",
        "application frames kept per checkout site",
    ),
    Option(
        "scan_interval",
        None,
        Seconds(maximum=60.0, optional=True),
        "db",
        "seconds between pool scans while idle (`None`: a quarter of `leak_threshold`, within "
        "0.25-5 s; a quarter of a second while connections are out)",
    ),
    Option(
        "server_view",
        True,
        Flag(),
        "db",
        "ask PostgreSQL about the holders' backends",
    ),
    Option(
        "query_timeout",
        2.0,
        Seconds(maximum=60.0),
        "db",
        "bound on each server-view query, connection included",
    ),
    Option(
        "replicas",
        None,
        Integer(1, 100_000, optional=True),
        "db",
        "copies of this process that share the database, for the sizing check",
    ),
    Option(
        "log_format",
        "text",
        Choice(("text", "json")),
        "logs",
        "format of the stderr handler lifesigns adds when nothing else shows its logs",
    ),
    Option(
        "app_packages",
        (),
        AppPackages(),
        "core",
        "the application's packages, for every stack lifesigns prints (default: inferred; "
        "site-packages, the stdlib and launchers are never the application)",
    ),
)
"""The settings table: every option of every layer, in the order the reference shows them.

Adding an option means a row here and a field on :class:`Settings` with the same default
(``tests/test_config.py`` holds the two equal), then ``python -m lifesigns._config
--markdown`` to refresh the README's reference.
"""


def option(name: str) -> Option:
    """The table's row for ``name``; an unknown name raises ``ConfigError`` listing them."""
    found = OPTIONS.get(name)
    if found is None:
        raise ConfigError(f"there is no option {name!r}; options: {', '.join(OPTIONS)}")
    return found


def _relations(values: Mapping[str, Any]) -> None:
    """Checks between options, after each is valid alone."""
    threshold, live = values["stall_threshold"], values["live_fail_after"]
    if live <= threshold:
        raise ConfigError(
            f"live_fail_after={live:g} must be longer than stall_threshold={threshold:g}"
        )
    interval, window = values["memory_interval"], values["memory_window"]
    if window <= interval:
        raise ConfigError(
            f"memory_window={window:g} must be longer than memory_interval={interval:g}"
        )
    low, high = values["low_water"], values["high_water"]
    if low >= high:
        raise ConfigError(
            f"low_water={low!r} must be below high_water={high!r}: an episode closes at "
            "low_water after opening at high_water"
        )


@dataclass(frozen=True)
class Settings:
    """Every setting of one :class:`~lifesigns.Lifesigns`, validated: the table's values.

    Build it with :meth:`from_arguments` (arguments, then ``LIFESIGNS_<NAME>``, then the
    defaults); :meth:`override` gives a copy with a layer's per-call options, validated
    by the same table. Its ``repr`` shows what a user would type, with the token masked.
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
    expose: frozenset[str] = _EXPOSED  # what the application port serves: lifesigns._surfaces
    watchdog: bool = True
    stall_threshold: float = 0.25  # why: lifesigns.loop docstring
    live_fail_after: float = 10.0  # why: lifesigns.loop docstring
    limiter_threshold: float = 5.0
    census_interval: float = 10.0
    gil_guard: bool = True
    report_burst: int = 3
    report_window: float = 600.0
    memory: bool = True
    memory_interval: float = 10.0
    memory_window: float = 600.0
    memory_threshold: float = 1.0
    memory_trace_seconds: float = 30.0
    memory_trace_every: float = 900.0
    drain_delay: float = 5.0
    termination_grace: float = 30.0
    deadline: float | None = None
    leak_threshold: float | None = 30.0
    saturated_after: float = 10.0
    on_saturation: str = "warn"
    wait_warn: float = 0.1
    high_water: float = 0.9
    low_water: float = 0.5
    full_stacks: float = 0.0
    stack_depth: int = 6
    scan_interval: float | None = None
    server_view: bool = True
    query_timeout: float = 2.0
    replicas: int | None = None
    log_format: str = "text"  # why: lifesigns._logging docstring
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
        for name in arguments:
            option(name)  # an unknown name is refused, not ignored
        values: dict[str, Any] = {
            name: resolve(name, arguments.get(name, UNSET), row.default, row.check, env)
            for name, row in OPTIONS.items()
        }
        values["paths"] = dict(values["paths"])  # never the table's own default
        _relations(values)
        return cls(**values)

    def override(self, **given: object) -> Settings:
        """A copy with ``given`` options changed (``UNSET`` ones left as they are).

        Each value goes through the table's validator, then the checks between options.
        """
        changes = {
            name: option(name).parse(value) for name, value in given.items() if value is not UNSET
        }
        if not changes:
            return self
        _relations({f.name: getattr(self, f.name) for f in fields(self)} | changes)
        return replace(self, **changes)

    def pick(self, *names: str) -> dict[str, Any]:
        """The named settings as a mapping (a layer's share of them)."""
        return {name: getattr(self, option(name).name) for name in names}


def _parse_paths(raw: str) -> dict[str, str | None]:
    result: dict[str, str | None] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        probe, sep, chosen = item.partition("=")
        if not sep:
            raise ConfigError(
                f"LIFESIGNS_PATHS={raw!r} is not allowed; allowed: probe=/path pairs separated "
                "by commas, e.g. livez=/healthz,metrics=off"
            )
        chosen = chosen.strip()
        result[probe.strip()] = None if chosen.lower() in {"", "off", "none"} else chosen
    return result


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


# -- the reference ------------------------------------------------------------------


def _shown(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value!r}`"


def markdown() -> str:
    """The README's option reference, generated from the table."""
    lines = [
        "| option | variable | default | allowed | layer | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for row in OPTIONS.values():
        lines.append(
            f"| `{row.name}` | `{row.env}` | {_shown(row.default)} | {row.check.allowed} "
            f"| {row.layer} | {row.doc} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m lifesigns._config --markdown`` prints the option reference."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--markdown"]:
        sys.stderr.write("usage: python -m lifesigns._config --markdown\n")
        return 2
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
