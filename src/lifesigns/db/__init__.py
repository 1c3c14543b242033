"""SQLAlchemy: readiness checks and start-up waits for watched engines."""

from .engine import WatchedEngine, engine_url, ping

__all__ = ["WatchedEngine", "engine_url", "ping"]
