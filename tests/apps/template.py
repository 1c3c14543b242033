"""A service shaped like the popular FastAPI project template, for the pool tests (issue 10).

Sync endpoints (``def``, run in anyio's 40 worker threads), a sync SQLAlchemy engine on
psycopg 3 with the default 5 + 10 pool (``pool_timeout`` 30 s), sessions from a
``yield`` dependency, and lifesigns added exactly as its README says.

``DATABASE_URL``: the SQLAlchemy URL (``postgresql+psycopg://...``). lifesigns' own
options come from ``LIFESIGNS_*``.

Endpoints:

- ``GET /items/``: a query that takes ``ITEM_QUERY_SECONDS`` (0.1 s) on the server, the
  ordinary traffic;
- ``GET /orders/{order_id}``: a per-thread session (``scoped_session``) that the 404
  path forgets to remove, so its connection stays checked out: the leak of issue 10;
- ``GET /orders/{order_id}/crash``: another per-thread session, never removed, and an
  exception (a 500).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from lifesigns import Lifesigns

logging.basicConfig(
    level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
)

ITEM_QUERY_SECONDS = float(os.environ.get("ITEM_QUERY_SECONDS", "0.1"))

engine = create_engine(os.environ["DATABASE_URL"])  # QueuePool: 5 + 10, pool_timeout 30
thread_sessions = scoped_session(sessionmaker(engine))
crash_sessions = scoped_session(sessionmaker(engine))

signs = Lifesigns(service="template")
signs.watch_engine(engine)
app = FastAPI()
signs.install(app)


def get_db() -> Iterator[Session]:
    """The template's session dependency."""
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


@app.get("/items/")
def read_items(session: SessionDep) -> dict[str, Any]:
    row = session.execute(
        text("SELECT 7 AS items FROM pg_sleep(:s)"), {"s": ITEM_QUERY_SECONDS}
    ).one()
    return {"count": row.items}


@app.get("/orders/{order_id}")
def read_order(order_id: int) -> dict[str, Any]:
    session = thread_sessions()
    query = text("SELECT :id AS id WHERE :id < 100")
    found = session.execute(query, {"id": order_id}).first()  # checkout: order
    if found is None:
        raise HTTPException(status_code=404, detail="Order not found")  # remove() skipped
    thread_sessions.remove()
    return {"id": found.id}


@app.get("/orders/{order_id}/crash")
def crash_on_order(order_id: int) -> dict[str, Any]:
    session = crash_sessions()
    session.execute(text("SELECT :id AS crashed"), {"id": order_id})  # checkout: crash
    raise RuntimeError(f"order {order_id} could not be priced")
