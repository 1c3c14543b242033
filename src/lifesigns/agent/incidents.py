"""Incident files: the evidence of a frozen worker, kept before anything kills it.

Each incident is two files in the incident folder, owner-only (0600), written atomically
(a temporary file, then ``os.replace``): ``<stem>.json`` (everything, for tools) and
``<stem>.txt`` (the same, for people). Every text passes through the secret masker first.
A file larger than ``max_bytes`` loses its largest parts (said so in the file); beyond
``max_files`` incidents the oldest are deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["IncidentWriter", "render_text"]


class IncidentWriter:
    """Writes bounded, masked, atomic incident files into ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        redact: Callable[[str], str],
        max_files: int = 20,
        max_bytes: int = 2 * 1024 * 1024,
    ) -> None:
        if max_files < 1 or max_bytes < 4096:
            raise ValueError(
                f"max_files={max_files!r} must be >= 1 and max_bytes={max_bytes!r} >= 4096"
            )
        self.directory = directory
        self.redact = redact
        self.max_files = max_files
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"IncidentWriter({str(self.directory)!r}, max_files={self.max_files})"

    def write(self, incident: dict[str, Any]) -> Path:
        """Write ``incident``; returns the JSON file's path. Raises ``OSError`` on failure."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        worker = incident.get("worker", {})
        stem = f"incident-{stamp}-slot{worker.get('slot', 'x')}-pid{worker.get('pid', 'x')}"
        incident = dict(incident)
        incident["files"] = {"json": f"{stem}.json", "text": f"{stem}.txt"}
        data = self._bounded(incident)
        text = self.redact(render_text(json.loads(data)))
        if len(text) > self.max_bytes:
            text = text[: self.max_bytes] + "\n[truncated]\n"
        target = self.directory / f"{stem}.json"
        self._atomic(self.directory / f"{stem}.txt", text)
        self._atomic(target, data)
        self._prune()
        return target

    def update(self, path: Path, extra: dict[str, Any]) -> None:
        """Add ``extra`` to an incident already written (the traceback at kill)."""
        incident = json.loads(path.read_text(encoding="utf-8"))
        incident.update(extra)
        data = self._bounded(incident)
        self._atomic(path.with_suffix(".txt"), self.redact(render_text(json.loads(data))))
        self._atomic(path, data)

    def recent(self, limit: int = 20) -> list[str]:
        """Names of the latest incident files (JSON), newest first."""
        if not self.directory.is_dir():
            return []
        names = sorted(p.name for p in self.directory.glob("incident-*.json"))
        return names[::-1][:limit]

    def _bounded(self, incident: dict[str, Any]) -> str:
        data = self.redact(json.dumps(incident, indent=1, default=str))
        dropped = []
        while len(data) > self.max_bytes:
            sizes = {
                k: len(json.dumps(v, default=str))
                for k, v in incident.items()
                if k not in ("worker", "summary", "files")
            }
            if not sizes:
                break
            largest = max(sizes, key=lambda k: sizes[k])
            dropped.append(f"{largest} ({sizes[largest]} bytes)")
            incident = {**incident, largest: {"truncated": True, "bytes": sizes[largest]}}
            incident["truncated"] = dropped
            data = self.redact(json.dumps(incident, indent=1, default=str))
        return data

    def _atomic(self, target: Path, text: str) -> None:
        temporary = target.with_name(f".{target.name}.tmp")
        # Owner-only: stacks and requests are for the operator, not for every local user.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)

    def _prune(self) -> None:
        stems = sorted({p.stem for p in self.directory.glob("incident-*.json")})
        for stem in stems[: max(0, len(stems) - self.max_files)]:
            for suffix in (".json", ".txt"):
                with contextlib.suppress(OSError):
                    (self.directory / f"{stem}{suffix}").unlink()


def _stack_lines(thread: dict[str, Any], indent: str = "    ") -> list[str]:
    state = (
        "holding the GIL"
        if thread.get("owns_gil")
        else ("active" if thread.get("active") else "idle")
    )
    lines = [f"  thread {thread.get('native_id')} {thread.get('name')!r} ({state})"]
    for frame in thread.get("frames", []):
        mark = "  <- application" if frame.get("app") else ""
        native = " [native]" if frame.get("native") else ""
        lines.append(
            f"{indent}{frame.get('file')}:{frame.get('line')} in {frame.get('function')}"
            f"{native}{mark}"
        )
    return lines


def render_text(incident: dict[str, Any]) -> str:
    """The readable rendering of an incident (innermost frames first)."""
    worker = incident.get("worker", {})
    lines = [
        f"lifesigns incident: {incident.get('summary', '')}",
        f"at {incident.get('at', '')} (agent pid {incident.get('agent_pid')})",
        "",
        f"worker: slot {worker.get('slot')} pid {worker.get('pid')} "
        f"generation {worker.get('generation')} phase {worker.get('phase')}",
        f"heartbeat age: {worker.get('heartbeat_age_s')} s",
        f"request in flight: {worker.get('request') or '(none known)'}",
        f"seen by: {incident.get('path', 'agent (py-spy, out of process)')}",
        f"action: {incident.get('action', '')}",
        "",
    ]
    in_process = incident.get("in_process") or {}
    if in_process.get("headline"):
        agrees = {True: "same frame", False: "a different frame", None: "no frame to compare"}
        lines.append(
            f"the worker's own watchdog said ({agrees[in_process.get('agrees')]}): "
            f"{in_process['headline']}"
        )
        lines.append("")
    elif in_process.get("note"):
        lines.append(f"the worker's own watchdog: {in_process['note']}")
        lines.append("")
    memory = incident.get("memory") or {}
    if memory:
        lines.append("memory: " + ", ".join(f"{k} {v}" for k, v in memory.items()))
        lines.append("")
    for title, key in (("python stacks", "python"), ("native stacks", "native")):
        sample = (incident.get("stacks") or {}).get(key) or {}
        if not sample:
            continue
        lines.append(f"{title} ({sample.get('duration_ms')} ms):")
        if sample.get("error"):
            lines.append(f"  unavailable: {sample['error']}")
        threads = sorted(
            sample.get("threads", []),
            key=lambda t: (
                not t.get("owns_gil"),
                t.get("native_id") != incident.get("worker", {}).get("pid"),
            ),
        )
        for thread in threads:
            lines.extend(_stack_lines(thread))
        lines.append("")
    stall = incident.get("stall") or {}
    if stall:
        lines.append("stall samples:")
        for entry in stall.get("samples", []):
            lines.append(f"  +{entry.get('at_s')} s: {entry.get('site')}")
        lines.append("")
    published = incident.get("published") or {}
    if published:
        lines.append(f"dumps the worker published ({published.get('age_s')} s before):")
        lines.append(json.dumps(published.get("dumps", {}), indent=2, default=str))
        lines.append("")
    traceback = incident.get("traceback_at_kill")
    if traceback:
        lines.append("the worker's own traceback (faulthandler, at SIGABRT):")
        lines.append(str(traceback))
        lines.append("")
    log = incident.get("agent_log") or []
    if log:
        lines.append("recent agent log lines:")
        lines.extend(f"  {line}" for line in log)
    return "\n".join(lines) + "\n"
