"""LS211: shell loops that restart containers when a health check fails.

A line scanner, not a shell parser: it tracks ``while``/``until``/``for`` ... ``done``
nesting and shell functions, which is all this rule needs. The one maintained Python
bash parser, ``bashlex``, is GPL-3.0 and cannot be a dependency of an MIT library, and
it rejects much of real-world bash anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from .findings import Finding

_RESTART = re.compile(
    r"\b(docker(?:-compose|\s+compose)?\s+(?:[\w.-]+\s+)*?(?:restart|kill)\b"
    r"|kubectl\s+(?:rollout\s+restart|delete\s+pods?)\b|systemctl\s+restart\b)"
)
_HEALTH = re.compile(r"\b(curl|wget|health|healthy|unhealthy|lifesigns\s+probe|pg_isready)\b")
_LOOP_START = re.compile(r"^\s*(while|until|for)\b")
_DONE = re.compile(r"(^|[\s;])done\b")
_FUNCTION = re.compile(r"^\s*(?:function\s+)?([A-Za-z_][\w-]*)\s*\(\)\s*\{?")


@dataclass
class _Loop:
    start: int
    health: bool = False


def _strip_comment(line: str) -> str:
    quote = None
    for index, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def _restarting_functions(lines: list[str]) -> dict[str, str]:
    """Shell functions whose body restarts something: name -> the restart command."""
    found: dict[str, str] = {}
    current: str | None = None
    depth = 0
    for raw in lines:
        line = _strip_comment(raw)
        match = _FUNCTION.match(line)
        if match and current is None:
            current, depth = match.group(1), 0
        if current is not None:
            depth += line.count("{") - line.count("}")
            restart = _RESTART.search(line)
            if restart:
                found.setdefault(current, restart.group(0))
            if depth <= 0 and "}" in line:
                current = None
    return found


def check(rel: str, source: str) -> Iterator[Finding]:
    """Restarts inside a loop that also checks health."""
    lines = source.splitlines()
    functions = _restarting_functions(lines)
    calls = re.compile(r"\b(" + "|".join(map(re.escape, functions)) + r")\b") if functions else None
    stack: list[_Loop] = []
    pending: list[tuple[int, str, _Loop]] = []
    function_depth = 0
    for number, raw in enumerate(lines, start=1):
        line = _strip_comment(raw)
        if function_depth > 0 or _FUNCTION.match(line):
            function_depth += line.count("{") - line.count("}")
            function_depth = max(function_depth, 0)
            continue
        if _LOOP_START.match(line):
            stack.append(_Loop(number))
        if stack:
            if _HEALTH.search(line):
                for loop in stack:
                    loop.health = True
            restart = _RESTART.search(line)
            if restart:
                pending.append((number, restart.group(0), stack[0]))
            elif calls and (call := calls.search(line)):
                pending.append((number, f"{call.group(1)} ({functions[call.group(1)]})", stack[0]))
        if _DONE.search(line) and stack:
            stack.pop()
    for number, what, loop in pending:
        if loop.health:
            yield Finding(
                rel,
                number,
                1,
                "LS211",
                f"{what} in a health-check loop (from line {loop.start}): the restart destroys "
                "the evidence of the hang; let liveness restart, after capturing stacks",
            )
