"""Logs that work out of the box: one stderr handler when nobody configured any.

lifesigns logs under the ``lifesigns`` logger (``lifesigns.loop``, ``lifesigns.pool``,
``lifesigns.startup``, ...) and, as a library should, leaves handlers to the
application. But when neither the application nor the server configured a handler that
would show those records, Python prints warnings bare (no level, logger or time, through
``logging.lastResort``) and drops INFO lines. So at lifespan start (never at import),
:func:`ensure_handler` looks along the ``lifesigns`` logger chain up to the root; if no
handler is there, it adds one on ``lifesigns``, at level INFO, writing to stderr in the
README's format::

    2026-12-03 06:00:00,123 WARNING lifesigns.loop: loop stalled 1.2 s in app/api.py:41

Servers: uvicorn's default log config puts handlers on the ``uvicorn`` loggers only, so
lifesigns still adds its own; a ``--log-config`` that configures the root or
``lifesigns`` loggers is found and used as is; and a ``--log-level`` above INFO given to
uvicorn applies to lifesigns too. A logger disabled by a ``dictConfig`` stays disabled.
If the application configures logging later, the fallback handler steps aside, so no line
is printed twice.

``log_format="json"`` (or ``LIFESIGNS_LOG_FORMAT=json``) writes one JSON object per line
for log shippers: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, the
structured fields of the record (see below) and ``exception`` when there is one.

**Structured fields.** lifesigns passes them as ``extra={"lifesigns": {...}}``: one dict
under one key, so nothing collides with the ``LogRecord``'s own attributes, with
snake_case keys, plain JSON values (seconds as floats, code sites as ``"path.py:41"``)
and an ``event`` naming the kind of line. Start-up waits give ``{"event":
"startup_attempt", "dependency": ..., "attempt": ..., "error": ...}``; a stall report
would give ``{"event": "stall", "site": ..., "request": ...}`` and a pool report its
holders. A handler of the application's reads them as ``record.lifesigns``.

Every formatted line passes through the secret masker.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Final, TextIO

from ._secrets import SecretRedactor, mask_secrets

LOGGER: Final = "lifesigns"
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS: Final = ("text", "json")
EXTRA_KEY: Final = "lifesigns"
"""The ``extra=`` key under which lifesigns passes a record's structured fields."""

_lock = threading.Lock()


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (as ``logging.lastResort`` does),
    so a test's captured stderr or a replaced ``sys.stderr`` gets the lines."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class FallbackHandler(_Stderr):
    """The handler lifesigns adds when nobody configured one; steps aside once somebody has."""

    set_logger_level = False
    """Whether lifesigns also set the ``lifesigns`` logger's level (undone on removal)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record``, unless a handler of the root logger now shows it."""
        if logging.getLogger().handlers:  # configured after lifesigns started
            return
        super().emit(record)


class TextFormatter(logging.Formatter):
    """The README's format, ``2026-12-03 06:00:00,123 WARNING lifesigns.loop: ...``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The record on one line (a traceback follows on its own lines), secrets masked."""
        return mask_secrets(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the record's structured fields."""

    _redactor = SecretRedactor()

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON, secrets masked."""
        created = time.gmtime(record.created)
        millis = int(record.msecs)
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", created) + f".{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, EXTRA_KEY, None)
        if isinstance(fields, dict):
            entry[EXTRA_KEY] = fields
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        cleaned = self._redactor.redact_data(entry)
        return json.dumps(cleaned, default=str, ensure_ascii=False)


def _checked_format(value: object) -> str:
    if value not in LOG_FORMATS:
        from .errors import ConfigError

        raise ConfigError(f"log_format={value!r} is not allowed; allowed: 'text' or 'json'")
    return str(value)


def _shown_by_existing_handlers(logger: logging.Logger) -> bool:
    """Whether a record of ``logger`` reaches a handler (as ``Logger.callHandlers`` walks)."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(not isinstance(h, FallbackHandler) for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


def _server_level() -> int:
    """The level uvicorn (or gunicorn) was told to log at, if above INFO; else INFO."""
    known = logging.Logger.manager.loggerDict
    for name in ("uvicorn.error", "gunicorn.error"):
        server = known.get(name)
        if isinstance(server, logging.Logger) and server.level != logging.NOTSET:
            return max(logging.INFO, server.level)
    return logging.INFO


def installed() -> FallbackHandler | None:
    """The fallback handler on the ``lifesigns`` logger, if lifesigns added one."""
    for handler in logging.getLogger(LOGGER).handlers:
        if isinstance(handler, FallbackHandler):
            return handler
    return None


def ensure_handler(fmt: str = "text") -> FallbackHandler | None:
    """Add the stderr handler if no configured handler would show lifesigns' records.

    Returns the handler added (or already there), ``None`` when logging was configured
    by the application or the server. ``fmt`` is ``"text"`` or ``"json"``; with the
    handler already there, the format is switched to ``fmt``.
    """
    fmt = _checked_format(fmt)
    logger = logging.getLogger(LOGGER)
    with _lock:
        if logger.disabled:
            return None
        handler = installed()
        if handler is None:
            if _shown_by_existing_handlers(logger):
                return None
            handler = FallbackHandler()
            logger.addHandler(handler)
            if logger.level == logging.NOTSET:  # else the root's WARNING would drop INFO
                logger.setLevel(_server_level())
                handler.set_logger_level = True
        handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
        return handler


def remove_handler() -> None:
    """Take the fallback handler off again (for tests, and for an application that asks)."""
    logger = logging.getLogger(LOGGER)
    with _lock:
        handler = installed()
        if handler is not None:
            logger.removeHandler(handler)
            if handler.set_logger_level:
                logger.setLevel(logging.NOTSET)
            handler.close()
