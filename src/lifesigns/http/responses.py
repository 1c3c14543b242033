"""Sending a whole response over raw ASGI, and reading what a request asks for."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TEXT = "text/plain; charset=utf-8"


async def send_response(
    send: Send,
    status: int,
    body: bytes | str,
    content_type: str = TEXT,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send ``body`` with ``status``; probe answers are never cached by proxies."""
    data = body.encode() if isinstance(body, str) else body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(data)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def send_json(
    send: Send, status: int, document: object, content_type: str = "application/json"
) -> None:
    """Send ``document`` as JSON."""
    await send_response(send, status, json.dumps(document, indent=2) + "\n", content_type)


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of request header ``name`` (lower case), decoded as latin-1."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def query(scope: Scope) -> dict[str, list[str]]:
    """The query string as a mapping of lists (``?verbose`` gives ``{"verbose": [""]}``)."""
    raw = scope.get("query_string", b"")
    return parse_qs(raw.decode("latin-1"), keep_blank_values=True) if raw else {}


def exclusions(params: dict[str, list[str]]) -> set[str]:
    """Every name in ``?exclude=a&exclude=b`` (and ``?exclude=a,b``)."""
    names: set[str] = set()
    for value in params.get("exclude", ()):
        names.update(part for part in value.split(",") if part)
    return names
