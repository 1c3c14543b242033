"""Requests in flight as a metric and a dump: who is being served right now, for how long.

Reads the host's :attr:`~lifesigns.host.Host.requests`, which
:class:`~lifesigns.http.LifesignsMiddleware` keeps; adds nothing to the request path (the
gauge is computed when scraped).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import Gauge

from ..host import HasHost, Host, RequestsView, as_host


def requests_dump(requests: RequestsView) -> Mapping[str, Any]:
    """Every request in flight, oldest first: method, route, path, request id, age."""
    now = time.monotonic()
    infos = requests.in_flight()
    return {"in_flight": len(infos), "requests": [info.as_dict(now) for info in infos]}


class InFlight:
    """The requests layer of one host: the gauge and the ``requests`` dump."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.gauge = Gauge(
            "lifesigns_requests_in_flight",
            "Requests being served right now.",
            registry=host.registry,
        )
        self.gauge.set_function(lambda: len(host.requests))

    def dump(self) -> Mapping[str, Any]:
        """The ``/debug/requests`` dump."""
        return requests_dump(self.host.requests)


def attach(owner: Host | HasHost) -> InFlight:
    """Add the ``lifesigns_requests_in_flight`` gauge and the ``/debug/requests`` dump.

    Attaching again returns the same layer (``Lifesigns()`` attaches it already); must
    precede the lifespan like every ``attach``.
    """
    host = as_host(owner)

    def build() -> InFlight:
        layer = InFlight(host)
        host.add_dump("requests", layer.dump)
        return layer

    return host.layer("requests", None, build)
