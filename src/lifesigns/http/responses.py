"""Raw ASGI types, and sending a router answer over ASGI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..router import Answer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_answer(send: Send, answer: Answer, *, head: bool = False) -> None:
    """Send a router :class:`~lifesigns.router.Answer` (headers only for ``HEAD``)."""
    await send(
        {
            "type": "http.response.start",
            "status": answer.status,
            "headers": [
                *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers),
                (b"content-length", str(len(answer.body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else answer.body})
