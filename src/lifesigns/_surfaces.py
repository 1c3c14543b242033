"""The ``expose`` setting: which of lifesigns' surfaces the application port serves.

Four surfaces exist:

* ``probes``: ``/livez``, ``/readyz`` (and ``/readyz/<check>``), ``/startupz``, ``/health``;
* ``metrics``: ``/metrics``, the Prometheus exposition;
* ``debug``: ``/debug/`` and ``/debug/<dump>``, the token-protected dumps;
* ``live``: ``/lifesigns/``, the live page, and ``/lifesigns/data``, its token-protected data.

The side port (or the agent's port) always serves all four. The application port serves
``probes`` only by default: that port is the one a reverse proxy publishes, and neither a
metrics scrape nor a dump nor the live page belongs on the internet.
``expose="probes,metrics"`` (or a collection, ``{"probes", "metrics"}``) asks for more,
``"all"`` for everything, ``"none"`` for nothing at all (every probe then lives on the side
port).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from .errors import ConfigError

PROBES: Final = "probes"
METRICS: Final = "metrics"
DEBUG: Final = "debug"
LIVE: Final = "live"
SURFACES: Final = frozenset({PROBES, METRICS, DEBUG, LIVE})
DEFAULT: Final = frozenset({PROBES})


def surfaces(name: str, value: object, *, from_env: bool = False) -> frozenset[str]:
    """Validate ``expose``: text such as ``"probes,metrics"``, ``"all"``, ``"none"``, or names."""
    where = f"LIFESIGNS_{name.upper()}" if from_env else name
    allowed = "a comma-separated subset of probes, metrics, debug, live; or 'all' or 'none'"
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return SURFACES
        if text in {"none", ""}:
            return frozenset()
        names: Iterable[object] = [part.strip() for part in text.split(",") if part.strip()]
    elif isinstance(value, Iterable):
        names = list(value)
    else:
        raise ConfigError(f"{where}={value!r} is not allowed; allowed: {allowed}")
    chosen = frozenset(names)
    unknown = sorted(str(n) for n in chosen if n not in SURFACES)
    if unknown:
        raise ConfigError(
            f"{where}={value!r} names unknown surface(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {allowed}"
        )
    return frozenset(str(n) for n in chosen)
