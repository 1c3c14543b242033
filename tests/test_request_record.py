"""The request record's life: what it leaves behind once a response is sent.

Driven in process through the ASGI callable (the server's ``send`` is ours here, so that
it can capture what uvicorn's keep-alive timer captures); ``test_request_metrics.py``
covers the same record under a real uvicorn.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lifesigns import Lifesigns
from lifesigns.http import LifesignsMiddleware
from lifesigns.http.requests import _TALLY_EVERY, RequestInfo, current_request


def _signs() -> Lifesigns:
    return Lifesigns(service="record-test", watchdog=False, memory=False, drain_delay=0)


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }


async def test_the_record_leaves_the_request_context_with_its_last_body() -> None:
    # uvicorn schedules its keep-alive timer inside the last send, and the timer handle
    # copies the context: a record left in it stays alive with every idle connection.
    signs = _signs()
    current = signs.requests.current  # turns the context variable on, as pool forensics does
    seen: dict[str, Any] = {}
    after = asyncio.Event()

    def in_thread() -> RequestInfo | None:
        return current()

    async def background() -> None:
        seen["after the response"] = current()
        after.set()

    async def endpoint(request: Request) -> PlainTextResponse:
        seen["endpoint"] = current()
        seen["lent thread"] = await run_in_threadpool(in_thread)
        return PlainTextResponse("ok", background=BackgroundTask(background))

    app = LifesignsMiddleware(Starlette(routes=[Route("/orders", endpoint)]), signs=signs)
    captured: list[contextvars.Context] = []
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        elif not message.get("more_body", False):
            captured.append(contextvars.copy_context())  # what loop.call_later keeps

    await asyncio.wait_for(app(_scope("/orders"), receive, send), 10)
    await asyncio.wait_for(after.wait(), 10)

    assert statuses == [200]
    record = seen["endpoint"]
    assert isinstance(record, RequestInfo) and record.path == "/orders"
    assert seen["lent thread"] is record
    assert seen["after the response"] is record  # found by its task once the context left
    assert len(captured) == 1
    assert captured[0].get(current_request) is None
    assert current_request.get() is None
    assert len(signs.requests) == 0
    assert [(route, status) for route, _, status, _ in signs.requests.served()] == [
        ("/orders", 200)
    ]


async def test_ended_requests_wait_in_a_short_queue_and_all_are_counted() -> None:
    # Ended requests queue for the tally; a long queue is objects outliving the garbage
    # collector's young generations, which made it collect far more often under load.
    signs = _signs()

    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = LifesignsMiddleware(Starlette(routes=[Route("/items/{id}", endpoint)]), signs=signs)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    longest = 0
    total = _TALLY_EVERY * 10 + 7
    for i in range(total):
        await app(_scope(f"/items/{i}"), receive, send)
        longest = max(longest, len(signs.requests._ended))
    assert longest <= _TALLY_EVERY + 1
    rows = signs.requests.served()
    assert [(route, status) for route, _, status, _ in rows] == [("/items/{id}", 200)]
    assert sum(rows[0][3][:-1]) == total
