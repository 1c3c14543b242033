"""Dockerfiles, read with ``dockerfile-parse``.

Why that library: it is the parser of Red Hat's container build system (OSBS, atomic-reactor),
pure Python, MIT-compatible (BSD), and it handles what a hand-written splitter gets wrong:
line continuations, comments inside continued instructions, parser directives (a
custom ``# escape=`` character) and JSON versus shell form. It gives each instruction
with its first and last line, which is all the rules need. (``dockerfile`` on PyPI wraps
BuildKit's Go parser, more exact still, but ships a compiled extension per platform.)
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import commands


@dataclass(frozen=True)
class Instruction:
    """A command-bearing instruction: ``CMD``, ``ENTRYPOINT`` or ``HEALTHCHECK``."""

    kind: str
    line: int
    tokens: tuple[str, ...]  # empty for HEALTHCHECK NONE
    text: str


@dataclass
class Dockerfile:
    """What the rules need from the final stage of one Dockerfile."""

    path: Path
    rel: str
    final_from: int = 1
    healthchecks: list[Instruction] = field(default_factory=list)
    commands: list[Instruction] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    env_lines: dict[str, int] = field(default_factory=dict)

    @property
    def server(self) -> Instruction | None:
        """The CMD or ENTRYPOINT that starts a web server, if the image runs one."""
        combined = tuple(t for c in self.commands for t in c.tokens)
        if not commands.is_server(combined):
            return None
        return next((c for c in self.commands if commands.is_server(c.tokens)), self.commands[-1])


def _command_tokens(value: str) -> tuple[str, ...]:
    value = value.strip()
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return commands.tokens(parsed)
    return commands.tokens(value)


def _healthcheck_command(value: str) -> tuple[str, ...]:
    words = value.split()
    while words and words[0].startswith("--"):
        words.pop(0)
    if not words or words[0].upper() == "NONE":
        return ()
    rest = value[value.upper().index("CMD") + 3 :] if "CMD" in value.upper() else value
    return _command_tokens(rest)


def parse(path: Path, rel: str, source: str) -> Dockerfile:
    """The final stage's healthchecks, commands and environment."""
    from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]

    parser = DockerfileParser(fileobj=io.BytesIO(source.encode("utf-8")))
    model = Dockerfile(path, rel)
    for item in parser.structure:
        kind = item["instruction"]
        line = item["startline"] + 1
        value = item["value"]
        if kind == "FROM":
            model = Dockerfile(path, rel, final_from=line)  # only the last stage runs
        elif kind == "HEALTHCHECK":
            model.healthchecks.append(Instruction(kind, line, _healthcheck_command(value), value))
        elif kind in ("CMD", "ENTRYPOINT"):
            model.commands = [c for c in model.commands if c.kind != kind]
            model.commands.append(Instruction(kind, line, _command_tokens(value), value))
        elif kind == "ENV":
            for key, val in _env(value).items():
                model.env[key] = val
                model.env_lines[key] = line
    return model


def _env(value: str) -> dict[str, str]:
    words = commands.split(value)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}  # legacy ENV KEY value
    return dict(word.partition("=")[::2] for word in words if "=" in word)
