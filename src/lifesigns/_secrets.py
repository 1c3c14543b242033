"""Keeping secrets out of everything lifesigns prints, logs or serves."""

from __future__ import annotations

import hmac
import re
import threading
from collections.abc import Iterable

_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/?#@\s]*):(?P<pw>[^@/?#\s]*)@"
)

MASK = "***"


def mask_url(url: object) -> str:
    """Return ``url`` as text with any password replaced by ``***``.

    Accepts strings and SQLAlchemy ``URL`` objects (whose ``str()`` already masks, but
    whose ``render_as_string(hide_password=False)`` would not).
    """
    render = getattr(url, "render_as_string", None)
    if callable(render):
        return str(render(hide_password=True))
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", str(url))


def tokens_match(given: str | None, expected: str | None) -> bool:
    """Compare a presented token with the configured one in constant time.

    With no configured token nothing matches: details stay withheld.
    """
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


class SecretRedactor:
    """Replaces every known secret in a message with ``***``.

    Error messages from drivers may quote a connection string; lifesigns registers every
    password and token it learns of here and passes messages through :meth:`redact`
    before they reach a log, a metric label or a response.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Remember ``secret`` (ignored when empty or too short to redact safely)."""
        if not secret or len(secret) < 3:
            return
        with self._lock:
            if secret not in self._secrets:
                # Longest first, so a secret that contains another is replaced whole.
                self._secrets = tuple(sorted({*self._secrets, secret}, key=len, reverse=True))

    def redact(self, text: str) -> str:
        """Return ``text`` with URL passwords and known secrets masked."""
        text = mask_url(text)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text
