"""Five ways a service keeps what it should let go: the retainer kinds lifesigns names."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

_store: dict[str, bytes] = {}


def build_payload(key: str, size: int) -> bytes:
    """The victim: builds a response body (allocates, keeps nothing)."""
    return (key * (size // max(1, len(key)) + 1)).encode()[:size]


def remember(key: str, size: int = 1000) -> bytes:
    """A module-level dict used as a cache that never evicts."""
    payload = build_payload(key, size)
    _store[key] = payload
    return payload


class AuditLog:
    """A class attribute list that only grows."""

    entries: ClassVar[list[bytes]] = []

    @classmethod
    def record(cls, key: str, size: int = 1000) -> None:
        cls.entries.append(build_payload(key, size))


def make_recorder() -> Any:
    """A closure whose cell holds a growing list."""
    seen: list[bytes] = []

    def record(key: str, size: int = 1000) -> None:
        seen.append(build_payload(key, size))

    return record


record_in_closure = make_recorder()


@functools.cache
def render(key: str) -> bytes:
    """An unbounded lru_cache: every distinct key stays."""
    return build_payload(key, 1000)


class State:
    """Starlette's ``app.state`` in miniature: attributes kept in a ``_state`` dict."""

    def __init__(self) -> None:
        super().__setattr__("_state", {"reports": []})

    def __getattr__(self, name: str) -> Any:
        try:
            return self._state[name]
        except KeyError:
            raise AttributeError(name) from None


state = State()


def keep_report(key: str, size: int = 1000) -> None:
    """A list on app.state."""
    state.reports.append(build_payload(key, size))
