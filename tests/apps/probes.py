"""A FastAPI service whose probes are compared across ports: the application port and the side port.

Configured by environment variables (all optional):

- ``PROBES_PREFIX``: the probes' prefix (default none);
- ``PROBES_PATHS``: JSON mapping of renamed probe paths (``{"livez": "/alive"}``);
- ``PROBES_SIDE_PORT``: a side port given in code (``side_port=``); without it, the side
  port comes from ``LIFESIGNS_SIDE_PORT`` if set;
- ``PROBES_EXPOSE``: what the application port serves (default ``all``: the tests compare
  every surface on both ports).

It registers a passing critical check ``payments`` (with details), a degraded non-critical
check ``cache``, and three dumps: ``example``, ``slow`` (sleeps 30 s, to time out) and
``leaky`` (returns a password and the token, to be masked).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from fastapi import FastAPI

from lifesigns import Degraded, Lifesigns

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

TOKEN = "probes-test-token-0123456789"
PASSWORD = "s3cr3t-Pa55word-xyz"

options: dict[str, Any] = {"expose": os.environ.get("PROBES_EXPOSE", "all")}
if os.environ.get("PROBES_PREFIX"):
    options["prefix"] = os.environ["PROBES_PREFIX"]
if os.environ.get("PROBES_PATHS"):
    options["paths"] = json.loads(os.environ["PROBES_PATHS"])
if os.environ.get("PROBES_SIDE_PORT"):
    options["side_port"] = int(os.environ["PROBES_SIDE_PORT"])

signs = Lifesigns(service="probes", version="2.0.1", token=TOKEN, **options)
signs.host.add_secrets([PASSWORD])


@signs.check("payments")
async def payments() -> dict[str, int]:
    """Always passes, with a detail."""
    return {"latency_ms": 3}


@signs.check("cache", critical=False)
async def cache() -> None:
    """Always degraded: warns in /health, never fails readiness."""
    raise Degraded("hit rate 12 %")


def _slow() -> dict[str, Any]:
    time.sleep(30)
    return {"never": "seen"}


signs.add_dump("example", lambda: {"answer": 42})
signs.add_dump("slow", _slow)
signs.add_dump(
    "leaky",
    lambda: {"dsn": f"postgresql://app:{PASSWORD}@db:5432/orders", "token": TOKEN},
)

app = FastAPI()
signs.install(app)


@app.get("/hello")
async def hello() -> dict[str, str]:
    """An ordinary endpoint."""
    return {"hello": "world"}
