"""An orders service on SQLAlchemy, wired with lifesigns the way an adopter would."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool

from lifesigns import Lifesigns
from lifesigns.http.deadline import DeadlineMiddleware
from lifesigns.tasks.once import advisory_key

from .models import Base, Order, OrderIn, OrderOut
from .routes import add_lab


def create_app(
    database_url: str,
    *,
    token: str | None = None,
    side_port: int | None = None,
    engine: AsyncEngine | None = None,
    base_url: str | None = None,
) -> FastAPI:
    """Build the demo service: the orders API plus lifesigns' probes and metrics."""
    signs = Lifesigns(service="orders-demo", version="0.1.0", token=token, side_port=side_port)
    if engine is None:
        # A bounded pool, also over SQLite, so that the lab's pool incidents show: five
        # connections, and a checkout waits at most five seconds.
        # lifesigns: ignore[LS108] SQLite by default (no statement timeout); /lab holds on purpose
        engine = create_async_engine(
            database_url,
            pool_pre_ping=True,
            poolclass=AsyncAdaptedQueuePool,
            pool_size=5,
            max_overflow=0,
            pool_timeout=5,
        )
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    signs.watch_engine(engine)

    @signs.startup_step("schema", timeout=30)
    async def create_schema() -> None:
        # Several workers start at once. On PostgreSQL, two concurrent CREATE TABLEs
        # fail one of them on a unique index of the catalog (an IntegrityError, not
        # "already exists"): the workers take turns under a transaction's advisory
        # lock, and the later ones find the table made. SQLite serialises writers
        # itself; the one that lost the race finds "already exists", no failure.
        try:
            async with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": advisory_key("orders-demo", "schema")},
                    )
                await conn.run_sync(Base.metadata.create_all)
        except (OperationalError, ProgrammingError) as exc:
            if "already exists" not in str(exc):
                raise

    @signs.check("orders-table", critical=False, timeout=0.5)
    async def orders_table() -> dict[str, Any]:
        async with sessions() as session:
            count = await session.scalar(select(func.count()).select_from(Order))
        return {"orders": count}

    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as s:
            yield s

    app = FastAPI(title="lifesigns demo: orders")
    signs.install(app)
    app.state.signs = signs
    app.add_middleware(DeadlineMiddleware, signs=signs, routes={"/reports/slow": 1.5})
    add_lab(app, signs, engine, sessions, base_url=base_url)

    @app.get("/")
    async def index() -> dict[str, Any]:
        return {
            "service": "orders-demo",
            "endpoints": [
                "/orders",
                "/orders/{id}",
                "/orders/stats",
                "/livez",
                "/readyz",
                "/health",
            ],
        }

    @app.get("/orders", response_model=list[OrderOut])
    async def list_orders(limit: int = 50, db: AsyncSession = Depends(session)) -> list[Order]:  # noqa: B008
        rows = await db.scalars(
            select(Order).order_by(Order.id.desc()).limit(max(1, min(limit, 500)))
        )
        return list(rows)

    @app.post("/orders", response_model=OrderOut, status_code=201)
    async def place_order(order: OrderIn, db: AsyncSession = Depends(session)) -> Order:  # noqa: B008
        row = Order(item=order.item, quantity=order.quantity)
        db.add(row)
        await db.commit()
        return row

    @app.get("/orders/stats")
    async def order_stats(db: AsyncSession = Depends(session)) -> dict[str, Any]:  # noqa: B008
        total, quantity = (
            await db.execute(
                select(func.count(Order.id), func.coalesce(func.sum(Order.quantity), 0))
            )
        ).one()
        return {"orders": total, "quantity": quantity}

    @app.get("/lab/freeze")
    async def freeze(seconds: float = 3.0) -> dict[str, float]:
        """Incident 000/003: blocking code in an ``async def`` freezes the whole loop."""
        seconds = max(0.0, min(seconds, 30.0))
        time.sleep(seconds)  # noqa: ASYNC251  # lifesigns: ignore[LS102] the incident itself
        return {"froze_for_s": seconds}

    @app.get("/orders/{order_id}", response_model=OrderOut)
    async def get_order(order_id: int, db: AsyncSession = Depends(session)) -> Order:  # noqa: B008
        row = await db.get(Order, order_id)
        if row is None:
            raise HTTPException(status_code=404, detail=f"no order {order_id}")
        return row

    return app


def app_from_env() -> FastAPI:
    """The demo app as ``lifesigns demo`` runs it in each worker: settings from the environment.

    ``LIFESIGNS_DEMO_DATABASE_URL``, ``LIFESIGNS_DEMO_BASE_URL`` (where the application
    port answers) and ``LIFESIGNS_TOKEN``; the side port belongs to the agent
    (``lifesigns run``), so the workers bind none.
    """
    import os
    import tempfile
    from pathlib import Path

    default = f"sqlite+aiosqlite:///{Path(tempfile.gettempdir()) / 'lifesigns-demo.sqlite3'}"
    return create_app(
        os.environ.get("LIFESIGNS_DEMO_DATABASE_URL") or default,
        token=os.environ.get("LIFESIGNS_TOKEN") or None,
        base_url=os.environ.get("LIFESIGNS_DEMO_BASE_URL"),
    )
