"""Every worker's metrics in one scrape on the agent's port, labelled by worker slot.

Each worker writes its registry's text exposition to ``<dir>/metrics-<slot>.prom`` with
its dumps (every 2 s, atomically). The agent merges the files: every sample gets a
``worker="<slot>"`` label, every family is printed once with its ``HELP`` and ``TYPE``,
and the agent adds its own families (``lifesigns_agent_*``: workers, heartbeat age per
worker, stalls, incidents, replacements), written by hand so that the agent imports no
metrics library.

Why not prometheus_client's multiprocess mode: it must be switched on before
``prometheus_client`` is imported in every worker, labels gauges by pid (a new series per
replacement), keeps a file per pid that ever lived, and does not see lifesigns'
per-instance registries. Labelled by slot, a replaced worker's counters start again from
zero under the same labels, which ``rate()`` and ``increase()`` read as a counter reset,
as after a pod restart; the agent's own counters never reset while it runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["CONTENT_TYPE", "merge", "relabel"]

# What the workers' prometheus_client writes (CONTENT_TYPE_LATEST), said without importing
# it; tests/test_agent_parity.py compares it with an in-process port's.
CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"

_HEAD = re.compile(r"^# (HELP|TYPE) (\S+)")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created", "_info", "_gcount", "_gsum")


def relabel(line: str, slot: int) -> str:
    """One sample line with ``worker="<slot>"`` as its first label."""
    brace, space = line.find("{"), line.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        if line[brace + 1] == "}":
            return f'{line[:brace]}{{worker="{slot}"}}{line[brace + 2 :]}'
        return f'{line[: brace + 1]}worker="{slot}",{line[brace + 1 :]}'
    return f'{line[:space]}{{worker="{slot}"}}{line[space:]}'


def _family_of(sample: str, known: dict[str, list[str]]) -> str:
    name = re.split(r"[{ ]", sample, maxsplit=1)[0]
    if name in known:
        return name
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in known:
            return name[: -len(suffix)]
    return name


def merge(expositions: Iterable[tuple[int, str]], own: str = "") -> str:
    """One exposition from ``(slot, text)`` pairs, plus the agent's ``own`` families."""
    heads: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for slot, text in expositions:
        for line in text.splitlines():
            if not line.strip():
                continue
            head = _HEAD.match(line)
            if head:
                family = head.group(2)
                lines = heads.setdefault(family, [])
                if len(lines) < 2 and not any(x.startswith(f"# {head.group(1)} ") for x in lines):
                    lines.append(line)
                samples.setdefault(family, [])
                continue
            if line.startswith("#"):
                continue
            samples.setdefault(_family_of(line, heads), []).append(relabel(line, slot))
    out = []
    for family, lines in samples.items():
        out.extend(heads.get(family, []))
        out.extend(lines)
    text = "\n".join(out)
    return (text + "\n" if text else "") + own


def read_published(directory: Path, slots: Iterable[int]) -> list[tuple[int, str]]:
    """The expositions the workers in ``slots`` last wrote (missing ones skipped)."""
    found = []
    for slot in slots:
        try:
            found.append((slot, (directory / f"metrics-{slot}.prom").read_text("utf-8")))
        except OSError:
            continue
    return found


def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> str:
    """One hand-written family: ``samples`` are ``(labels, value)``, labels as ``a="b"``."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        lines.append(f"{name}{{{labels}}} {value:g}" if labels else f"{name} {value:g}")
    return "\n".join(lines) + "\n"
