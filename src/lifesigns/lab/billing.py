"""Billing: charging an order, with a session left open on the error path
(incident ``session-leak``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


class PaymentDeclined(Exception):
    """The card was declined."""


async def charge(sessions: async_sessionmaker[AsyncSession], order_id: int, card: str) -> int:
    """Charge the order; raises :class:`PaymentDeclined` for a declined card.

    The bug: the session is opened without ``async with``, and the decline is raised
    before ``close()``, so its connection stays checked out after the request ended.
    """
    from .app import Order

    session = sessions()
    order = await session.scalar(select(Order).where(Order.id == order_id))  # checks out
    if card.endswith("0000"):
        raise PaymentDeclined(f"card ending {card[-4:]} declined")  # the leak: never closed
    await session.close()
    return order.id if order is not None else 0
