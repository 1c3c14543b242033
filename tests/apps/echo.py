"""A raw ASGI app with no dependencies, for testing the server harness itself.

- ``GET /livez`` answers ``200 ok``;
- ``GET /env/<NAME>`` answers the value of environment variable ``NAME``, or 404;
- anything else is a 404.

The lifespan protocol is supported: start-up prints ``echo: started`` and shut-down
prints ``echo: stopped``, so tests can watch both in the server log. ``create_app`` is
the same app for ``uvicorn --factory``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http":
        status, body = _route(scope["path"])
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Factory for ``uvicorn --factory tests.apps.echo:create_app``."""
    return app


def _route(path: str) -> tuple[int, bytes]:
    if path == "/livez":
        return 200, b"ok"
    if path.startswith("/env/"):
        value = os.environ.get(path.removeprefix("/env/"))
        if value is not None:
            return 200, value.encode()
    return 404, b"not found"


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            print("echo: started", flush=True)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            print("echo: stopped", flush=True)
            await send({"type": "lifespan.shutdown.complete"})
            return
