"""The lab's routes: the business endpoints each incident runs through, and the triggers.

``POST /lab/incidents/{name}`` starts one incident in the background and answers at once
(202) with what to look for. The incident runs as a client would make it happen: it
sends requests to this service's own endpoints (``/invoices/7``, 45 concurrent
``/exports/orders.csv``...) through the worker's whole ASGI stack, in process, so
lifesigns sees each one as it would in production, with its route, and the incident
stays in the worker that was asked (its logs say which pid). Each incident runs at most
once at a time and ends by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import psutil
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from lifesigns import Lifesigns

from . import billing, catalog, exports, inventory, invoices, nightly, recommend, signup
from .billing import PaymentDeclined, charge
from .incidents import INCIDENTS, Incident, by_name

logger = logging.getLogger("lifesigns.lab")

Driver = Callable[[httpx.AsyncClient], Awaitable[object]]


def add_lab(
    app: FastAPI,
    signs: Lifesigns,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    *,
    base_url: str | None = None,
) -> None:
    """Add the incident endpoints and their triggers to the demo ``app``.

    ``base_url`` is where the application port answers (``http://127.0.0.1:8000``), for
    the trigger links of the live page's lab tab (served from the side port, another
    origin); without it the links are relative.
    """
    postgres = engine.dialect.name == "postgresql"
    # Under the agent the supervisor is uvicorn's, our parent; alone, this process.
    supervised = os.environ.get("LIFESIGNS_AGENT_DIR") is not None
    running: dict[str, asyncio.Task[None]] = {}
    nightly_bulkhead = signs.bulkhead("nightly", max_connections=2, timeout=30.0)

    @signs.periodic(every=2.0, timeout=5.0, max_restarts=5, within=60.0, critical=False)
    async def inventory_sync() -> None:
        await inventory.sync_inventory()

    # -- the business endpoints the incidents go through ---------------------------

    @app.get("/invoices/{order_id}")
    async def invoice(order_id: int, currency: str = "USD") -> dict[str, Any]:
        total = await invoices.invoice_total(100.0 + order_id, currency)
        return {"order": order_id, "currency": currency, "total": total}

    @app.get("/orders/{order_id}/similar")
    async def similar(order_id: int, seconds: float = 2.0) -> dict[str, Any]:
        return {"similar": await recommend.similar_orders(order_id, min(seconds, 5.0))}

    @app.post("/signup")
    async def sign_up(request: Request) -> dict[str, Any]:
        body = await request.json()
        email = str(body.get("email", ""))[:64]
        if not signup.valid_email(email):
            raise HTTPException(status_code=422, detail="not an e-mail address")
        return {"welcome": email}

    @app.get("/exports/orders.csv")
    def export_orders() -> PlainTextResponse:
        return PlainTextResponse(exports.write_orders_csv(), media_type="text/csv")

    @app.post("/orders/{order_id}/charge")
    async def charge_order(order_id: int, card: str = "4242424242424242") -> dict[str, Any]:
        try:
            charged = await charge(sessions, order_id, card)
        except PaymentDeclined as exc:
            raise HTTPException(status_code=402, detail=str(exc)) from None
        return {"charged": charged}

    @app.get("/catalog/{sku}")
    async def product(sku: str) -> Response:
        return Response(catalog.product_page(sku)[:200], media_type="text/html")

    @app.get("/reports/quarterly")
    async def quarterly_report(seconds: float = 1.5) -> dict[str, Any]:
        await asyncio.sleep(min(seconds, 5.0))  # a report that takes a while, and finishes
        return {"report": "quarterly", "took_s": seconds}

    @app.get("/reports/slow")
    async def slow_report() -> dict[str, Any]:
        await asyncio.sleep(5.0)  # a slow upstream; the route's 1.5 s deadline answers 504
        return {"report": "done"}

    @app.get("/lab/naive-health")
    async def naive_health() -> dict[str, str]:
        """Seed 004's health check: says healthy whatever the database does."""
        return {"status": "healthy"}

    # -- the triggers ----------------------------------------------------------------

    async def database_down(seconds: float) -> None:
        # PostgreSQL refuses ALLOW_CONNECTIONS false on the database one is connected to:
        # the switch is thrown from the maintenance database, by the same role (the owner).
        name = engine.url.database
        # lifesigns: ignore[LS108] ALTER DATABASE and pg_terminate_backend only, time-boxed
        admin_engine = create_async_engine(engine.url.set(database="postgres"), poolclass=NullPool)
        quoted = engine.dialect.identifier_preparer.quote(str(name))
        try:
            async with admin_engine.connect() as admin:
                await admin.execution_options(isolation_level="AUTOCOMMIT")
                await admin.execute(text(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS false"))
                try:
                    await admin.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :name AND pid <> pg_backend_pid()"
                        ),
                        {"name": name},
                    )
                    await asyncio.sleep(seconds)
                finally:
                    await admin.execute(text(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS true"))
        finally:
            await admin_engine.dispose()

    async def database_down_at_start(seconds: float) -> None:
        # The switch back runs in a process of its own: this worker is about to be replaced.
        env = {**os.environ, "LIFESIGNS_LAB_DATABASE_URL": engine.url.render_as_string(False)}
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lifesigns.lab.dbswitch",
            str(seconds),
            str(os.getppid()),
            env=env,
            start_new_session=True,
            stdin=asyncio.subprocess.DEVNULL,
        )

    async def terminate_soon() -> None:
        await asyncio.sleep(0.5)  # the 202 answers first
        target = os.getpid()
        if supervised:
            # The agent runs uvicorn's supervisor, which runs this worker: SIGTERM goes to
            # the agent, as a container's PID 1 gets it.
            target = psutil.Process(os.getppid()).ppid()
        logger.warning("lab: sending SIGTERM to pid %d, as an orchestrator would", target)
        os.kill(target, signal.SIGTERM)

    async def many(client: httpx.AsyncClient, count: int, method: str, path: str) -> None:
        async def one() -> None:
            with contextlib.suppress(httpx.HTTPError):
                await client.request(method, path, timeout=30.0)

        await asyncio.gather(*(one() for _ in range(count)))

    async def api_calls_during(client: httpx.AsyncClient, seconds: float) -> None:
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            with contextlib.suppress(httpx.HTTPError):
                await client.get("/orders?limit=5", timeout=10.0)
            await asyncio.sleep(0.2)

    async def decline_a_card(client: httpx.AsyncClient) -> None:
        await client.post("/orders/1/charge", params={"card": "4000000000000000"})
        # Bounded: after a while the support page's list is emptied, the traceback and its
        # session are collected, and the pool gets its connection back.
        await asyncio.sleep(by_name("session-leak").lasts_s)
        billing.recent_declines.clear()
        gc.collect()

    async def leak_memory(client: httpx.AsyncClient) -> None:
        ends = time.monotonic() + by_name("memory-leak").lasts_s
        n = 0
        while time.monotonic() < ends:
            await client.get(f"/catalog/sku-{os.getpid()}-{n}")
            n += 1
            await asyncio.sleep(0.125)

    drivers: dict[str, Driver] = {
        "blocking-call": lambda c: _after(invoices.make_upstream_flaky, c.get("/invoices/7")),
        "cpu-bound": lambda c: c.get("/orders/7/similar"),
        "regex-gil": lambda c: c.post("/signup", json={"email": "a" * 26 + "!"}),
        "thread-starvation": lambda c: _after(
            lambda: exports.hold_the_lock(7.0), many(c, 45, "GET", "/exports/orders.csv")
        ),
        "session-leak": decline_a_card,
        "batch-starves-pool": lambda c: _together(
            nightly.rebuild_statistics(engine, chunks=8, seconds=4.0),
            api_calls_during(c, 4.0),
        ),
        "batch-with-bulkhead": lambda c: _together(
            nightly.rebuild_statistics(
                engine, chunks=8, seconds=2.0, limit=lambda: nightly_bulkhead
            ),
            api_calls_during(c, 6.0),
        ),
        "import-time-task": lambda c: _import_legacy_jobs(),
        "database-down": lambda c: database_down(by_name("database-down").lasts_s),
        "database-down-at-start": lambda c: database_down_at_start(
            by_name("database-down-at-start").lasts_s
        ),
        "sigterm-under-load": lambda c: terminate_soon(),
        "memory-leak": leak_memory,
        "crash-loop": lambda c: _after(lambda: inventory.break_feed(20.0), asyncio.sleep(0)),
        "deadline": lambda c: c.get("/reports/slow"),
    }
    missing = {i.name for i in INCIDENTS} - drivers.keys()
    assert not missing, missing

    def lab_dump() -> dict[str, Any]:
        base = (base_url or "").rstrip("/")
        return {
            "database": engine.dialect.name,
            "incidents": [
                {
                    **incident.as_dict(),
                    "seed": incident.seeds,
                    "available": _available(incident, postgres, supervised),
                    "running": name_running(incident.name),
                    "trigger": f"{base}/lab/incidents/{incident.name}",
                }
                for incident in INCIDENTS
            ],
        }

    signs.add_dump("lab", lab_dump)

    @app.get("/lab/incidents")
    async def list_incidents(request: Request) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        return {
            "database": engine.dialect.name,
            "pid": os.getpid(),
            "incidents": [
                {
                    **incident.as_dict(),
                    "available": _available(incident, postgres, supervised),
                    "running": name_running(incident.name),
                    "trigger": f"{base}/lab/incidents/{incident.name}",
                }
                for incident in INCIDENTS
            ],
        }

    def name_running(name: str) -> bool:
        task = running.get(name)
        return task is not None and not task.done()

    @app.post("/lab/incidents/{name}", status_code=202)
    async def trigger(name: str, request: Request) -> JSONResponse:
        try:
            incident = by_name(name)
        except KeyError as exc:
            raise HTTPException(status_code=404, detail=str(exc.args[0])) from None
        if incident.needs and incident.needs.startswith("postgresql") and not postgres:
            raise HTTPException(
                status_code=409,
                detail=f"{name} needs PostgreSQL; this demo runs on {engine.dialect.name}: "
                "start it with --database-url postgresql+asyncpg://user:password@host/db",
            )
        if incident.needs and "--workers" in incident.needs and not supervised:
            raise HTTPException(
                status_code=409,
                detail=f"{name} needs the demo's workers under the agent: start it without "
                "--workers 1",
            )
        if name_running(name):
            raise HTTPException(status_code=409, detail=f"{name} is already running")
        running[name] = asyncio.get_running_loop().create_task(
            _run(incident, drivers[name], app), name=f"lab incident {name}"
        )
        return JSONResponse(
            {
                "incident": incident.name,
                "seeds": incident.seeds,
                "what_happens": incident.what_happens,
                "look_for": incident.look_for,
                "lasts_s": incident.lasts_s,
                "pid": os.getpid(),
            },
            status_code=202,
            headers={"Access-Control-Allow-Origin": "*"},
        )

    @app.exception_handler(PaymentDeclined)
    async def declined(request: Request, exc: PaymentDeclined) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=402)


def _available(incident: Incident, postgres: bool, supervised: bool) -> bool:
    needs = incident.needs or ""
    return (postgres or "postgresql" not in needs) and (supervised or "--workers" not in needs)


async def _after(first: Callable[[], object], then: Awaitable[Any]) -> None:
    first()
    await then


async def _together(*work: Awaitable[Any]) -> None:
    await asyncio.gather(*work, return_exceptions=True)


async def _import_legacy_jobs() -> None:
    name = "lifesigns.lab.legacy_jobs"
    if name in sys.modules:
        importlib.reload(sys.modules[name])
    else:
        importlib.import_module(name)


async def _run(incident: Incident, driver: Driver, app: FastAPI) -> None:
    logger.info(
        "lab: incident %s started (seeds %s): %s",
        incident.name,
        incident.seeds,
        incident.what_happens,
    )
    try:
        # The incident's requests go through this worker's whole ASGI stack, in process:
        # with several workers a request over the network could land in another one,
        # while the incident's state (a flaky upstream, a held lock) lives in this one.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://lab.local", timeout=30.0
        ) as client:
            async with asyncio.timeout(incident.lasts_s + 60.0):
                await driver(client)
    except Exception:
        logger.exception("lab: incident %s failed to run", incident.name)
    else:
        logger.info("lab: incident %s over", incident.name)
