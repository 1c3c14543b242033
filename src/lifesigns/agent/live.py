"""The live page served by the agent: every worker at once, the frozen one in front.

The page is the same (:mod:`lifesigns.live`); what it reads differs. In a worker it reads
that worker's dumps; in the agent it reads what the workers last published (every 2 s,
and at once when a worker's own watchdog sees a stall) and, for the stall, the agent's
own view from outside, which keeps coming while C code holds the worker's GIL. The page
shows one worker at a time: the one stalled now, else the first; ``workers`` lists all.
Nothing here imports a web framework or ``prometheus_client``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..live import lab_incidents, metric_figures
from . import metrics

if TYPE_CHECKING:
    from .monitor import Monitor

__all__ = ["agent_live_data", "parse_exposition"]


@dataclass(frozen=True)
class _Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class _Family:
    name: str
    samples: list[_Sample] = field(default_factory=list)


def parse_exposition(text: str) -> list[_Family]:
    """The samples of a Prometheus text exposition, enough for the page's figures.

    Handles ``name value`` and ``name{a="b",c="d"} value`` lines (label values without
    escaped quotes, which is what lifesigns writes); comments and bad lines are skipped.
    """
    family = _Family("all")
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, labels, rest = line, {}, ""
        if "{" in line:
            name, _, tail = line.partition("{")
            body, _, rest = tail.partition("}")
            for pair in _pairs(body):
                key, _, raw = pair.partition("=")
                labels[key.strip()] = raw.strip().strip('"')
        else:
            name, _, rest = line.partition(" ")
        try:
            number = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        family.samples.append(_Sample(name.strip(), labels, number))
    return [family]


def _pairs(body: str) -> Iterator[str]:
    current, quoted = "", False
    for char in body:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            yield current
            current = ""
        else:
            current += char
    if current:
        yield current


def _stack_lines(frames: list[dict[str, Any]]) -> list[str]:
    return [
        f"{f.get('file')}:{f.get('line')} {f.get('function')}" + (" [app]" if f.get("app") else "")
        for f in frames
    ]


def _page_stall(stall: dict[str, Any]) -> dict[str, Any]:
    return {
        "headline": stall.get("headline"),
        "class": "seen from outside",
        "class_description": stall.get("seen_by"),
        "stalled_s": stall.get("seconds"),
        "request": stall.get("request"),
        "stack": _stack_lines(stall.get("stack") or []),
        "began_at": None,
    }


def agent_live_data(monitor: Monitor, service: str, version: str | None) -> dict[str, Any]:
    """``/lifesigns/data`` on the agent's port."""
    workers = monitor.workers()
    stalls = monitor.stalls()["workers"]
    frozen = [int(slot) for slot, s in stalls.items() if s.get("current")]
    focus = frozen[0] if frozen else (workers[0]["slot"] if workers else None)
    published = (monitor.published(focus) if focus is not None else None) or {}
    dumps: dict[str, Any] = published.get("dumps") or {}
    own = stalls.get(str(focus), {}) if focus is not None else {}
    inside = dumps.get("stalls") if isinstance(dumps.get("stalls"), dict) else {}
    worker = next((w for w in workers if w["slot"] == focus), {})
    current = own.get("current")
    answer: dict[str, Any] = {
        "at": time.time(),
        "service": service,
        "version": version,
        "workers": workers,
        "worker": focus,
        "stalls": {
            "heartbeat_age_s": worker.get("heartbeat_age_s"),
            "current": _page_stall(current) if current else (inside or {}).get("current"),
            "recent": [_page_stall(r) for r in own.get("recent", [])]
            or (inside or {}).get("recent", []),
        },
    }
    for name in ("limiter", "pool", "supervised", "memory", "requests"):
        answer[name] = dumps.get(name)
    if "lab" in dumps:
        answer["lab"] = lab_incidents(lambda: dumps["lab"])
    texts = metrics.read_published(Path(monitor.runtime_dir), [focus] if focus is not None else [])
    answer["metrics"] = metric_figures(parse_exposition(texts[0][1]) if texts else [])
    return answer
