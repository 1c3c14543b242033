"""The db layer: SQLAlchemy readiness, start-up waits, pool forensics and bulkheads.

It registers on a :class:`~lifesigns.host.Host` and never imports
:mod:`lifesigns.core` nor another layer. :func:`attach_engine` watches one engine end to
end; :func:`~lifesigns.db.bulkhead.bulkhead` caps a class of work.
"""

from .engine import WatchedEngine, engine_url, ping
from .layer import AttachedEngine, attach_engine, engines_of

__all__ = ["AttachedEngine", "WatchedEngine", "attach_engine", "engine_url", "engines_of", "ping"]
