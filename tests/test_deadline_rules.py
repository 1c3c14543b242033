"""Which deadline applies to a path, and the 504 over plain ASGI (no server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from lifesigns.errors import ConfigError
from lifesigns.http.deadline import DeadlineMiddleware


async def _noop(scope: Any, receive: Any, send: Any) -> None:
    return None


def test_templates_then_longest_prefix_then_default() -> None:
    mw = DeadlineMiddleware(
        _noop,
        default=10.0,
        routes={
            "/reports": 60.0,
            "/reports/live": None,
            "/orders/{order_id}": 2.0,
            "/files/{rest:path}": 30.0,
        },
    )
    assert mw.deadline_for("/orders/42") == (2.0, "/orders/{order_id}")
    assert mw.deadline_for("/orders/42/lines") == (10.0, None)
    assert mw.deadline_for("/files/a/b/c") == (30.0, "/files/{rest:path}")
    assert mw.deadline_for("/reports") == (60.0, "/reports")
    assert mw.deadline_for("/reports/2024") == (60.0, "/reports")
    assert mw.deadline_for("/reports/live/feed") == (None, "/reports/live")
    assert mw.deadline_for("/reportsx") == (10.0, None)
    assert DeadlineMiddleware(_noop).deadline_for("/anything") == (None, None)


def test_bad_rules_are_refused_with_their_name() -> None:
    with pytest.raises(ConfigError, match="routes\\['/x'\\]"):
        DeadlineMiddleware(_noop, routes={"/x": -1})
    with pytest.raises(ConfigError, match="must be a path"):
        DeadlineMiddleware(_noop, routes={"x": 1.0})


async def test_a_slow_handler_is_cancelled_and_answered_504() -> None:
    cancelled = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    mw = DeadlineMiddleware(slow, default=0.05)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await mw({"type": "http", "path": "/slow", "method": "GET"}, receive, send)
    assert loop.time() - began < 0.15
    assert cancelled.is_set()
    assert sent[0]["status"] == 504
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["deadline_s"] == 0.05
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # our cancellation left no trace


async def test_a_fast_handler_is_untouched() -> None:
    async def fast(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    await DeadlineMiddleware(fast, default=1.0)({"type": "http", "path": "/"}, receive, send)
    assert [m.get("status") for m in sent] == [200, None]
