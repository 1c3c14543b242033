"""The demo's tables and the shapes its API speaks."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field
from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the demo's tables."""


class Order(Base):
    """An order: an item and how many."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item: Mapped[str] = mapped_column(String(100))
    quantity: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: dt.datetime.now(dt.UTC)
    )


class OrderIn(BaseModel):
    """What a client sends to place an order."""

    item: str = Field(min_length=1, max_length=100)
    quantity: int = Field(ge=1, le=10_000)


class OrderOut(OrderIn):
    """An order as stored."""

    id: int
    created_at: dt.datetime
