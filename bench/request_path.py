"""The request path alone: CPU per request of lifesigns' middleware, in one process.

``bench.overhead`` measures whole servers under wrk; its ratios move by a few hundredths
between runs on a shared machine, more than one change to the request path is worth.
This benchmark drives one small FastAPI app's ASGI callable directly (no server, no
socket), one task per request as uvicorn makes them, 50 at a time, for each variant
in alternating batches in one process, so that drift hits each alike:

* ``bare``: the app alone;
* ``probes``: :class:`~lifesigns.http.LifesignsMiddleware` serving the probes only
  (``track_requests=False``): what any pure ASGI middleware costs;
* ``record``: + the request record (in flight, status, the tally);
* ``deadline``: + a 30 s request deadline;
* ``context``: + the request context variable (pool forensics turns it on).

The watchdog, memory monitor and census are off here (they run beside requests, not in
them): ``bench.overhead`` has them. Usage: ``python -m bench.request_path [--rounds 12]
[--batch 3000]``; prints a Markdown table of the median CPU µs per request and the
cost over ``bare``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

VARIANTS = ("bare", "probes", "record", "deadline", "context")


def build(variant: str) -> Any:
    """The app for ``variant``."""
    from fastapi import FastAPI

    from lifesigns import Lifesigns
    from lifesigns.http import LifesignsMiddleware

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": f"item {item_id}", "tags": ["a", "b"]}

    if variant == "bare":
        return app
    signs = Lifesigns(
        service="bench",
        token="bench-token-0123456789abcdef",
        drain_delay=0,
        watchdog=False,
        memory=False,
        deadline=30.0 if variant in ("deadline", "context") else None,
    )
    if variant == "context":
        signs.requests.current  # noqa: B018 - asking for it turns the context variable on
    app.router.lifespan_context = signs.wrap_lifespan(app.router.lifespan_context)
    app.add_middleware(LifesignsMiddleware, signs=signs, track_requests=variant != "probes")
    return app


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": "/items/42",
        "raw_path": b"/items/42",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")],
        "state": {},
    }


class Lifespan:
    """One app's lifespan, driven by hand: started before the batches, ended after."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _expect(self, sent: str, wanted: str) -> None:
        await self.inbox.put({"type": sent})
        message = await asyncio.wait_for(self.outbox.get(), 30)
        if message["type"] != wanted:
            raise RuntimeError(f"{sent} failed: {message}")

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.get_running_loop().create_task(
            self.app(scope, self.inbox.get, self.outbox.put)
        )
        await self._expect("lifespan.startup", "lifespan.startup.complete")

    async def stop(self) -> None:
        await self._expect("lifespan.shutdown", "lifespan.shutdown.complete")
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    return None


async def _batch(app: Any, requests: int) -> float:
    loop = asyncio.get_running_loop()
    began = time.process_time()
    for _ in range(requests // 50):
        await asyncio.gather(*[loop.create_task(app(_scope(), _receive, _send)) for _ in range(50)])
    return (time.process_time() - began) / requests * 1e6


async def run(rounds: int, batch: int) -> dict[str, list[float]]:
    """CPU µs per request of each variant, one figure per round."""
    apps = {variant: build(variant) for variant in VARIANTS}
    lifespans = [Lifespan(app) for app in apps.values()]
    for lifespan in lifespans:
        await lifespan.start()
        await _batch(lifespan.app, 2000)  # warm-up
    results: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    try:
        for round_no in range(rounds):
            shift = round_no % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                results[variant].append(await _batch(apps[variant], batch))
    finally:
        for lifespan in lifespans:
            await lifespan.stop()
    return results


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--batch", type=int, default=3000)
    args = parser.parse_args()
    if args.rounds < 1 or args.batch < 50:
        raise SystemExit(
            f"--rounds must be >= 1 and --batch >= 50; got {args.rounds}, {args.batch}"
        )
    results = asyncio.run(run(args.rounds, args.batch))
    bare = statistics.median(results["bare"])
    print(f"{args.rounds} rounds of {args.batch} requests per variant, alternating, one process\n")
    print("| variant | CPU µs/request (median) | over bare (µs) |")
    print("|---|---:|---:|")
    for variant, figures in results.items():
        median = statistics.median(figures)
        print(f"| {variant} | {median:.1f} | {median - bare:+.1f} |")


if __name__ == "__main__":
    main()
