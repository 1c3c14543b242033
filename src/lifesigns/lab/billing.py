"""Billing: charging an order, with a session left open on the error path
(incident ``session-leak``).

The session is opened without ``async with`` and closed only on success. On its own that
would be cleaned up when the frame goes; what keeps it checked out is a common piece of
error reporting: the last declines are kept, exceptions and all, for a support page, and
an exception's traceback holds the frame whose local is the session.
"""

from __future__ import annotations

from collections import deque

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .models import Order


class PaymentDeclined(Exception):
    """The card was declined."""


recent_declines: deque[PaymentDeclined] = deque(maxlen=20)
"""The last declines, for the support team's page (with their tracebacks: the leak)."""


async def charge(sessions: async_sessionmaker[AsyncSession], order_id: int, card: str) -> int:
    """Charge the order; raises :class:`PaymentDeclined` for a declined card.

    The bug: the session is opened without ``async with``, and the decline is raised
    before ``close()``, so its connection stays checked out after the request ended.
    """
    session = sessions()
    order = await session.scalar(select(Order).where(Order.id == order_id))  # checks out
    if card.endswith("0000"):
        declined = PaymentDeclined(f"card ending {card[-4:]} declined")
        try:
            raise declined  # the leak: the session is never closed on this path
        except PaymentDeclined as error:
            recent_declines.append(error)  # keeps the traceback, its frame, the session
            raise
    await session.close()
    return order.id if order is not None else 0
