"""The request record's life: what it leaves behind once a response is sent.

Driven in process through the ASGI callable (the server's ``send`` is ours here, so that
it can capture what uvicorn's keep-alive timer captures); ``test_request_metrics.py``
covers the same record under a real uvicorn.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from collections.abc import MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lifesigns import Lifesigns
from lifesigns.http import LifesignsMiddleware
from lifesigns.http.requests import RequestInfo, current_request


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

    async def send(message: MutableMapping[str, Any]) -> None:
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


async def test_every_request_is_counted_and_nothing_of_it_outlives_it() -> None:
    # Objects that outlive a request (once, 4,096 ended requests queued for a later count)
    # survive the garbage collector's young generations and made it collect far more
    # often under load: each record must be freed by reference counting alone, at its end.
    signs = _signs()
    current = signs.requests.current  # the context variable on too, as pool forensics has
    records: list[weakref.ref[RequestInfo]] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        record = current()
        assert record is not None
        records.append(weakref.ref(record))
        return PlainTextResponse("ok")

    app = LifesignsMiddleware(Starlette(routes=[Route("/items/{id}", endpoint)]), signs=signs)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    total = 647
    gc.disable()
    try:
        for i in range(total):
            await app(_scope(f"/items/{i}"), receive, send)
        alive = [ref for ref in records if ref() is not None]
    finally:
        gc.enable()
    assert len(records) == total
    assert alive == []
    rows = signs.requests.served()
    assert [(route, status) for route, _, status, _ in rows] == [("/items/{id}", 200)]
    assert sum(rows[0][3][:-1]) == total


async def test_one_route_included_at_two_prefixes_is_counted_under_each() -> None:
    # The tally knows a route by its object, or by FastAPI's route context when it came
    # through an included router: the same route object under two prefixes is two labels.
    from fastapi import APIRouter, FastAPI

    signs = _signs()
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    api = FastAPI()
    api.include_router(router, prefix="/v1")
    api.include_router(router, prefix="/v2")

    @api.get("/plain")
    async def plain() -> dict[str, int]:
        return {}

    app = LifesignsMiddleware(api, signs=signs)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    sent = {"/v1/items/1": 3, "/v2/items/2": 5, "/plain": 2, "/missing": 1}
    for path, times in sent.items():
        for _ in range(times):
            await app(_scope(path), receive, send)
    counted = {
        (route, status): int(sum(row[:-1])) for route, _, status, row in signs.requests.served()
    }
    assert counted == {
        ("/v1/items/{item_id}", 200): 3,
        ("/v2/items/{item_id}", 200): 5,
        ("/plain", 200): 2,
        ("<unmatched>", 404): 1,
    }
