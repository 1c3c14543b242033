"""Doctor settings: ``[tool.lifesigns.doctor]`` in ``pyproject.toml``, then the command line.

Usage::

    [tool.lifesigns.doctor]
    select = ["LS1", "LS204"]      # codes or prefixes; default: every rule
    ignore = ["LS109"]
    exclude = ["migrations/*"]     # globs on paths relative to the scanned root
    max-depth = 4                  # hops followed from an async def to a blocking call
    max-connections = 100          # PostgreSQL's, when no manifest says it
    known-modules = ["chromadb"]   # imports to take as resolvable

A bad value raises :class:`DoctorUsageError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lifesigns.errors import LifesignsError

from .rules import RULES


class DoctorUsageError(LifesignsError, ValueError):
    """A bad rule code, path, format or setting given to ``lifesigns doctor``."""


@dataclass(frozen=True)
class DoctorConfig:
    """What to check and the figures rules cannot find in the files themselves."""

    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_depth: int = 4
    max_connections: int | None = None
    workers: int | None = None
    replicas: int | None = None
    known_modules: frozenset[str] = field(default_factory=frozenset)
    probe_budget: float = 0.8
    drain_delay: float = 5.0
    grace: float = 10.0

    def enabled(self, code: str) -> bool:
        """Whether findings of ``code`` are reported (``ignore`` wins over ``select``)."""
        if self.select and not any(code.startswith(p) for p in self.select):
            return False
        return not any(code.startswith(p) for p in self.ignore)


_INT_KEYS = {
    "max-depth": (1, 20),
    "max-connections": (1, 1_000_000),
    "workers": (1, 10_000),
    "replicas": (1, 100_000),
}
_FLOAT_KEYS = {"probe-budget", "drain-delay", "grace"}
_LIST_KEYS = {"select", "ignore", "exclude", "known-modules"}
KEYS = sorted({*_INT_KEYS, *_FLOAT_KEYS, *_LIST_KEYS})


def rule_codes(values: Iterable[str], what: str) -> tuple[str, ...]:
    """Validate codes or prefixes (``LS101``, ``LS1``); ``what`` names where they came from."""
    codes = []
    for raw in values:
        code = raw.strip().upper()
        if not code:
            continue
        if code == "ALL":
            code = "LS"
        if not any(known.startswith(code) for known in RULES):
            raise DoctorUsageError(
                f"unknown rule code {raw!r} in {what}; valid: {', '.join(RULES)} "
                "or a prefix such as LS1"
            )
        codes.append(code)
    return tuple(codes)


def from_mapping(table: Mapping[str, Any], source: str) -> DoctorConfig:
    """Build settings from a ``[tool.lifesigns.doctor]`` table; ``source`` names the file."""
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{source} [tool.lifesigns.doctor] {key}"
        if key in _LIST_KEYS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DoctorUsageError(f"{where} = {value!r}: expected a list of strings")
            if key in ("select", "ignore"):
                values[key] = rule_codes(value, where)
            elif key == "known-modules":
                values["known_modules"] = frozenset(value)
            else:
                values[key] = tuple(value)
        elif key in _INT_KEYS:
            low, high = _INT_KEYS[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise DoctorUsageError(
                    f"{where} = {value!r}: expected an integer from {low} to {high}"
                )
            values[key.replace("-", "_")] = value
        elif key in _FLOAT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise DoctorUsageError(f"{where} = {value!r}: expected seconds >= 0")
            values[key.replace("-", "_")] = float(value)
        else:
            raise DoctorUsageError(f"unknown key {key!r} in {source}; valid: {', '.join(KEYS)}")
    return replace(DoctorConfig(), **values)


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start`` (a file or a directory)."""
    here = start.resolve()
    if not here.is_dir():
        here = here.parent
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load(start: Path) -> DoctorConfig:
    """Settings from the nearest ``pyproject.toml`` above ``start``; defaults when none."""
    pyproject = find_pyproject(start)
    if pyproject is None:
        return DoctorConfig()
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DoctorUsageError(f"cannot read {pyproject}: {exc}") from exc
    table = data.get("tool", {}).get("lifesigns", {}).get("doctor", {})
    if not isinstance(table, dict):
        raise DoctorUsageError(f"{pyproject}: [tool.lifesigns.doctor] must be a table")
    return from_mapping(table, str(pyproject))
