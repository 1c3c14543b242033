"""Requests in flight as a metric and a dump: who is being served right now, for how long.

Reads :attr:`lifesigns.Lifesigns.requests`, which :class:`~lifesigns.http.LifesignsMiddleware`
keeps; adds nothing to the request path (the gauge is computed when scraped).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

if TYPE_CHECKING:
    from ..core import Lifesigns

_attached: weakref.WeakSet[Lifesigns] = weakref.WeakSet()


def requests_dump(signs: Lifesigns) -> Mapping[str, Any]:
    """Every request in flight, oldest first: method, route, path, request id, age."""
    now = time.monotonic()
    infos = signs.requests.in_flight()
    return {"in_flight": len(infos), "requests": [info.as_dict(now) for info in infos]}


def attach(signs: Lifesigns) -> None:
    """Add the ``lifesigns_requests_in_flight`` gauge and the ``/debug/requests`` dump.

    Idempotent; must precede the lifespan like every ``attach``.
    """
    if signs in _attached:
        return
    gauge = Gauge(
        "lifesigns_requests_in_flight",
        "Requests being served right now.",
        registry=signs.registry,
    )
    gauge.set_function(lambda: len(signs.requests))
    signs.add_dump("requests", lambda: requests_dump(signs))
    _attached.add(signs)
