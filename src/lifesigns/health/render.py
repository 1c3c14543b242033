"""Turning probe results into bodies: kube-style text and ``application/health+json``.

``detailed`` says whether the caller presented the token. Without it a body carries the
status and nothing that could leak (no error text, no URL, no version).
"""

from __future__ import annotations

from typing import Any

from .lifecycle import StartupStep
from .probes import ProbeResult
from .status import Status

WITHHELD = "reason withheld"
HEALTH_JSON = "application/health+json"


def probe_text(
    result: ProbeResult, *, verbose: bool, detailed: bool, progress: list[str] | None = None
) -> str:
    """The text body of ``/livez``, ``/readyz`` or ``/startupz``.

    Like kube-apiserver: ``ok`` when passing; with ``?verbose``, and always on failure,
    one ``[+]``/``[-]`` line per check and a closing verdict. ``progress`` lines (start-up
    steps) follow, indented.
    """
    if result.ok and not verbose:
        return "ok\n"
    lines: list[str] = []
    for check in result.checks:
        mark = "-" if check.status is Status.FAIL else "+"
        if check.status is Status.PASS or detailed:
            lines.append(f"[{mark}]{check.name} {check.summary}")
        else:
            word = "warn" if check.status is Status.WARN else "failed"
            lines.append(f"[{mark}]{check.name} {word}: {WITHHELD}")
    lines.extend(f"[+]{name} excluded: ok" for name in result.excluded)
    if not result.checks:
        if result.ok:
            lines.append(f"[+]{result.probe} ok")
        elif detailed:
            lines.append(f"[-]{result.probe} failed: {result.reason}")
        else:
            public = f"{result.public_reason}, " if result.public_reason else ""
            lines.append(f"[-]{result.probe} failed: {public}{WITHHELD}")
    lines.extend(f"    {line}" for line in progress or ())
    lines.append(f"{result.probe} check {'passed' if result.ok else 'failed'}")
    return "\n".join(lines) + "\n"


def startup_lines(steps: tuple[StartupStep, ...], *, detailed: bool) -> list[str]:
    """Progress of each start-up step: names and counts always, errors and URLs by token."""
    if detailed:
        return [step.line() for step in steps]
    return [
        f"{step.name}: {step.state.value} (attempt {step.attempts}, {step.elapsed():.1f} s)"
        for step in steps
    ]


def health_json(
    result: ProbeResult,
    *,
    service: str,
    version: str | None,
    detailed: bool,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """The ``application/health+json`` document (draft-inadarei-api-health-check-06).

    Without ``detailed`` it holds the status and the service id only.
    """
    body: dict[str, Any] = {"status": result.status.value, "serviceId": service}
    if not detailed:
        if not result.ok:
            public = f"{result.public_reason}, " if result.public_reason else ""
            body["output"] = f"{public}{WITHHELD}"
        return body
    if version is not None:
        body["releaseId"] = version
    if not result.ok or result.status is Status.WARN:
        body["output"] = result.reason
    checks: dict[str, list[dict[str, Any]]] = {}
    for check in result.checks:
        entry: dict[str, Any] = {
            "componentId": check.name,
            "componentType": check.component_type,
            "status": check.status.value,
            "observedValue": round(check.duration * 1000, 3),
            "observedUnit": "ms",
            "time": check.time_iso,
            "critical": check.critical,
        }
        if check.error:
            entry["output"] = check.error
        if check.timed_out:
            entry["timedOut"] = True
        if check.details:
            entry["details"] = dict(check.details)
        checks[f"{check.name}:responseTime"] = [entry]
    if checks:
        body["checks"] = checks
    if result.excluded:
        body["excluded"] = list(result.excluded)
    if notes:
        body["notes"] = notes
    return body
