"""Reading command lines: server commands, their flags, and healthcheck clients.

The same command appears as a Dockerfile ``CMD`` (shell or exec form), a compose
``command`` (string or list), a container's ``command`` + ``args``, or a healthcheck
``test``. Everything is reduced to tokens with :func:`shlex.split`; a token holding a
whole shell command (``sh -c "..."``, ``CMD-SHELL``) is split again.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

_SERVERS = {"uvicorn", "gunicorn", "hypercorn", "daphne", "granian"}
_SEPARATORS = {"&&", "||", ";", "|", "&"}
_URL = re.compile(r"https?://[^\s'\"\\]+")


def split(text: str) -> list[str]:
    """Shell words of ``text``; falls back to whitespace when the quoting is unbalanced."""
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError:
        return text.split()


def tokens(value: str | Iterable[object]) -> tuple[str, ...]:
    """Tokens of a command given as a string or a list (inner shell strings split too)."""
    words = split(value) if isinstance(value, str) else [str(v) for v in value]
    out: list[str] = []
    for word in words:
        out.extend(split(word) if " " in word.strip() else [word])
    return tuple(out)


def segments(words: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """The simple commands of a command line, split at ``&&``, ``||``, ``;`` and pipes."""
    current: list[str] = []
    for word in words:
        if word in _SEPARATORS:
            if current:
                yield tuple(current)
            current = []
        else:
            current.append(word.rstrip(";"))
    if current:
        yield tuple(current)


def _program(word: str) -> str:
    return word.rsplit("/", 1)[-1]


def is_server(words: tuple[str, ...]) -> bool:
    """Whether the command starts an ASGI/WSGI web server."""
    for index, word in enumerate(words):
        program = _program(word)
        if program in _SERVERS:
            return True
        if program == "fastapi" and index + 1 < len(words) and words[index + 1] in ("run", "dev"):
            return True
    return False


def under_lifesigns_run(words: tuple[str, ...]) -> bool:
    """Whether the command is ``lifesigns run -- ...``."""
    return any(
        _program(w) == "lifesigns" and i + 1 < len(words) and words[i + 1] == "run"
        for i, w in enumerate(words)
    )


def reload_flag(words: tuple[str, ...]) -> str | None:
    """``--reload`` or ``fastapi dev`` when the command has one."""
    for index, word in enumerate(words):
        if word == "--reload" or word.startswith("--reload="):
            return word
        if _program(word) == "fastapi" and index + 1 < len(words) and words[index + 1] == "dev":
            return "fastapi dev"
    return None


def option(words: tuple[str, ...], *names: str) -> str | None:
    """The value of ``--name V``, ``--name=V`` or ``-nV`` (short names given as ``-n``)."""
    for index, word in enumerate(words):
        for name in names:
            if word == name and index + 1 < len(words):
                return words[index + 1]
            if name.startswith("--") and word.startswith(name + "="):
                return word[len(name) + 1 :]
            if len(name) == 2 and word.startswith(name) and len(word) > 2 and word[2:].isdigit():
                return word[2:]
    return None


def workers(words: tuple[str, ...], env: dict[str, str]) -> int:
    """Worker processes the command starts (``--workers``, ``-w``, ``WEB_CONCURRENCY``)."""
    value = option(words, "--workers", "-w")
    if value is None and is_server(words):
        value = env.get("WEB_CONCURRENCY")
    try:
        return max(int(value), 1) if value is not None else 1
    except ValueError:
        return 1


def gunicorn_timeout_zero(words: tuple[str, ...]) -> bool:
    """Whether gunicorn is told ``--timeout 0`` (no worker timeout at all)."""
    if not any(_program(w) == "gunicorn" for w in words):
        return False
    return option(words, "--timeout", "-t") == "0"


def unbounded_client(words: tuple[str, ...]) -> str | None:
    """``curl`` or ``wget`` when a simple command runs one with no time limit of its own."""
    for segment in segments(words):
        if not segment:
            continue
        program = _program(segment[0])
        if program == "timeout":
            continue  # coreutils timeout bounds whatever it runs
        if program == "curl" and not _curl_limited(segment):
            return "curl"
        if program == "wget" and not _wget_limited(segment):
            return "wget"
    return None


def _curl_limited(segment: tuple[str, ...]) -> bool:
    for word in segment[1:]:
        if word in ("--max-time", "-m") or word.startswith("--max-time="):
            return True
        if re.fullmatch(r"-[A-Za-z]*m\d*", word):
            return True
    return False


def _wget_limited(segment: tuple[str, ...]) -> bool:
    for word in segment[1:]:
        if word in ("-T", "--timeout", "--read-timeout") or word.startswith(
            ("--timeout=", "--read-timeout=")
        ):
            return True
        if re.fullmatch(r"-[A-Za-z]*T\d*", word):
            return True
    return False


def url_paths(text: str) -> list[str]:
    """The paths of the HTTP URLs in a command (``/health``)."""
    return [urlsplit(url).path or "/" for url in _URL.findall(text)]


def env_pairs(value: object) -> dict[str, str]:
    """Environment variables from a compose or Kubernetes ``environment``/``env`` value."""
    env: dict[str, str] = {}
    if isinstance(value, dict):
        env.update({str(k): "" if v is None else str(v) for k, v in value.items()})
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                key, _, val = item.partition("=")
                env[key] = val
            elif isinstance(item, dict) and "name" in item:
                env[str(item["name"])] = str(item.get("value", ""))
    return env
