"""Inline suppressions: ``# lifesigns: ignore[LS101]`` (several codes: ``[LS101, LS204]``).

The comment silences the listed codes on its own line, or, alone on a line, on the
next line (useful inside a Dockerfile instruction continued over several lines, or
above a multi-line call). Without brackets it silences every code: prefer naming them.
Text after the brackets is the reason, for the reader.
"""

from __future__ import annotations

import re

_PATTERN = re.compile(r"#\s*lifesigns:\s*ignore(?:\[([A-Za-z0-9,\s]*)\])?")


def _codes(line: str) -> frozenset[str] | None:
    """The codes a line's comment silences (empty set: all), or ``None`` without one."""
    match = _PATTERN.search(line)
    if match is None:
        return None
    listed = match.group(1)
    if listed is None:
        return frozenset()
    return frozenset(c.strip().upper() for c in listed.split(",") if c.strip())


def suppressed(lines: list[str], line: int, code: str) -> bool:
    """Whether the finding ``code`` on 1-based ``line`` is silenced by a comment."""
    candidates = []
    if 1 <= line <= len(lines):
        candidates.append(lines[line - 1])
    if 2 <= line <= len(lines) + 1 and lines[line - 2].lstrip().startswith("#"):
        candidates.append(lines[line - 2])
    for text in candidates:
        codes = _codes(text)
        if codes is not None and (not codes or any(code.startswith(c) for c in codes)):
            return True
    return False
