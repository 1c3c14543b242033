"""A service with each kind of memory retainer, for the unasked leak-naming tests.

Every endpoint keeps what it should let go, each in a different place: a module-level
dict, a class attribute list, a list on ``app.state``, a closure's cell, an unbounded
``lru_cache``, and memory allocated with ``malloc`` outside the Python heap. ``/stable``
keeps a large cache that stops growing: it must never be called a leak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable
from typing import Any, ClassVar

from fastapi import FastAPI, Request

from lifesigns import Lifesigns

KB = int(os.environ.get("LEAKS_KB", "100"))

# The tests read /debug/memory on the application port (by default only the side port
# serves the dumps).
signs = Lifesigns(service="leaks", expose="all")
app = FastAPI()
signs.install(app)
app.state.reports = []

_responses: dict[str, bytes] = {}
_stable: dict[int, bytes] = {}


def render_page(key: str) -> bytes:
    """Builds a response body: allocates the payload, keeps nothing itself."""
    return os.urandom(KB * 1024) + key.encode()


class AuditTrail:
    """Keeps every audited body, forever."""

    entries: ClassVar[list[bytes]] = []


def _make_recorder() -> Callable[[bytes], None]:
    seen: list[bytes] = []

    def remember(body: bytes) -> None:
        seen.append(body)

    return remember


remember_body = _make_recorder()


@functools.cache
def cached_page(key: str) -> bytes:
    """Caches every distinct key: unbounded."""
    return render_page(key)


@app.get("/cache/{key}")
async def cache(key: str) -> dict[str, int]:
    body = render_page(key)
    _responses[key] = body
    return {"entries": len(_responses)}


@app.get("/audit/{key}")
async def audit(key: str) -> dict[str, int]:
    AuditTrail.entries.append(render_page(key))
    return {"entries": len(AuditTrail.entries)}


@app.get("/state/{key}")
async def state(key: str, request: Request) -> dict[str, int]:
    request.app.state.reports.append(render_page(key))
    return {"entries": len(request.app.state.reports)}


@app.get("/closure/{key}")
async def closure(key: str) -> dict[str, bool]:
    remember_body(render_page(key))
    return {"ok": True}


@app.get("/lru/{key}")
async def lru(key: str) -> dict[str, int]:
    return {"size": len(cached_page(key))}


_libc: Any = ctypes.CDLL(ctypes.util.find_library("c"))
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]


@app.get("/native/{key}")
async def native(key: str) -> dict[str, bool]:
    size = KB * 1024
    pointer = _libc.malloc(size)
    ctypes.memset(pointer, 1, size)  # touched, so it is resident; never freed
    return {"ok": True}


if os.environ.get("LEAKS_PREFILL") == "1":
    # Warmed up at start, as a real cache is after its first minutes: from here on it
    # only replaces entries.
    for _n in range(200):
        _stable[_n] = render_page(str(_n))


@app.get("/stable/{key}")
async def stable(key: str) -> dict[str, int]:
    _stable[hash(key) % 200] = render_page(key)
    return {"entries": len(_stable)}
