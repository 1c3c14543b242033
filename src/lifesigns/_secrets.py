"""Keeping secrets out of everything lifesigns prints, logs or serves: the one masker.

Every line lifesigns writes, every dump it serves and every ``lifesigns probe`` message
passes through :func:`mask_secrets` (the forms below) and, where an instance knows its
secrets, through :meth:`SecretRedactor.redact` (registered secrets first, then the forms).

What is masked, with ``***`` in place of the secret:

* **URL passwords**, raw or percent-encoded, with ``@``, ``:`` or ``/`` inside:
  ``postgresql://app:p@ss:w/rd@db/app`` → ``postgresql://app:***@db/app``. With several
  ``@``, the last one before the host ends the user information (as ``urllib.parse``
  splits it): the last ``@`` before the query (``?``) or fragment (``#``), or, when the
  password holds a raw ``?`` or ``#`` (which libpq accepts), the last ``@`` before the
  path, whichever masks more. A URL whose path (or, with no path, whose query) holds an
  ``@`` is over-masked (host hidden) rather than risk a leak.
* **Query-string secrets**: ``?password=...``, ``&sslpassword=...``, ``&token=...`` (any
  key ending in ``password``, ``passwd``, ``pwd``, ``secret``, ``token``, ``api_key``); the
  value ends at ``&``, ``#`` or white space.
* **Keyword form** (libpq conninfo, Python reprs, ``KEY=value`` lines): ``password=...``
  up to white space, or a quoted value (``password='it\\'s'``) up to its closing quote;
  also ``"password": "..."`` in JSON or a dict's repr.
* **HTTP credentials**: ``Bearer <token>`` and ``Basic <base64>``.
* **Registered secrets** (:class:`SecretRedactor`), wherever they appear: as given,
  percent-encoded (either hex case), ``+``-encoded, or backslash-escaped as in a repr.

What cannot be masked without knowing the secret: a raw URL password with white space, or
with both ``/`` and ``?`` (no parser reads those as one password). Register such secrets.

Standard library only, and cheap to import: ``lifesigns probe`` imports this module, so
the regular expressions are compiled (and :mod:`re` imported) only when a text holds
something that could be a secret.
"""

from __future__ import annotations

import _thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Iterable

MASK = "***"

MIN_SECRET_LENGTH = 3
"""Registered secrets shorter than this are ignored: replacing every ``ab`` in a message
would mangle it while hiding almost nothing."""

_SECRET_KEY = r"[\w.\-]*?(?:password|passwd|pwd|secret|token|api[_\-]?key)"  # noqa: S105
# Cheap tests (no regular expression) that a text may hold a secret key.
_KEY_WORDS = ("passw", "pwd", "secret", "token", "apikey", "api_key", "api-key")
_SINGLE_QUOTED = r"'(?:[^'\\]|\\.)*(?:'|\Z)"
_QUOTED = _SINGLE_QUOTED + r"|\"(?:[^\"\\]|\\.)*(?:\"|\Z)"


class _Patterns:
    """The regular expressions of the masker, compiled on first use."""

    def __init__(self) -> None:
        import re

        flags = re.IGNORECASE | re.DOTALL
        # scheme://user:   (the password, if any, starts right after; the user may hold
        # "@", as in Azure's "user@server"; "[" and "]" are excluded so "http://[::1]:80"
        # is a host)
        self.url_head = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#\[\]]*:")
        self.whitespace = re.compile(r"\s")
        # key=value: libpq keywords (only "'" quotes there), query strings, keyword
        # arguments' reprs. The key starts the text or follows a separator, so
        # "u:pwd=x@db" (a URL password that happens to hold "pwd=") is left to the URL rule.
        self.keyword = re.compile(
            rf"(?:^|(?<=[\s?&;,(\[{{'\"]))(?P<key>{_SECRET_KEY})(?P<eq>[ \t]*=[ \t]*)"
            rf"(?P<value>{_SINGLE_QUOTED}|\S+)",
            flags,
        )
        self.closed = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)
        self.query_value = re.compile(r"[^&#\s]+")
        self.double_quoted = re.compile(r"\"(?:[^\"\\]|\\.)*(?:\"|\Z)", re.DOTALL)
        # "key": value, as in JSON or the repr of a dict
        self.quoted_key = re.compile(
            rf"(?P<q>['\"])(?P<key>{_SECRET_KEY})(?P=q)(?P<sep>\s*:\s*)"
            rf"(?P<value>{_QUOTED}|[^\s,}}\]]+)",
            flags,
        )
        self.auth_header = re.compile(
            r"\b(?P<scheme>Bearer|Basic)(?P<sp>[ \t]+)[A-Za-z0-9._~+/=\-]{3,}"
        )
        self.key_name = re.compile(rf"{_SECRET_KEY}\Z", re.IGNORECASE)


_compiled: list[_Patterns] = []


def _patterns() -> _Patterns:
    if not _compiled:
        _compiled.append(_Patterns())
    return _compiled[0]


def _userinfo_end(text: str, start: int) -> int:
    """Index of the ``@`` that ends a password starting at ``start``, or -1 if none does.

    Two readings, and the one that masks more wins: the last ``@`` before the query or
    fragment (a raw ``/`` in the password, as SQLAlchemy reads it) and the last ``@``
    before the path (a raw ``?`` or ``#``, as libpq reads it).
    """
    space = _patterns().whitespace.search(text, start)
    segment = text[start : space.start() if space else len(text)]
    if "@" not in segment:
        return -1
    best = -1
    for stops in ("?#", "/"):
        end = min((i for i in map(segment.find, stops) if i >= 0), default=len(segment))
        best = max(best, segment.rfind("@", 0, end))
    return start + best if best >= 0 else -1


def _mask_url_passwords(text: str) -> str:
    parts: list[str] = []
    pos = 0
    url_head = _patterns().url_head
    while (head := url_head.search(text, pos)) is not None:
        start = head.end()
        end = _userinfo_end(text, start)
        parts.append(text[pos:start])
        if end >= 0:
            parts.append(MASK)
        pos = max(end, start)
    parts.append(text[pos:])
    return "".join(parts)


def _masked_value(value: str) -> str:
    if value[:1] in ("'", '"'):
        quote = value[0]
        closed = _patterns().closed.fullmatch(value) is not None
        return quote + MASK + (quote if closed else "")
    return MASK


def _mask_keywords(text: str) -> str:
    patterns = _patterns()
    parts: list[str] = []
    pos = 0
    while (match := patterns.keyword.search(text, pos)) is not None:
        start, value_start = match.start(), match.start("value")
        value = match["value"]
        in_query = start > 0 and text[start - 1] in "?&;"
        if in_query:  # quotes mean nothing here; the value ends at "&", "#" or a space
            word = patterns.query_value.match(text, value_start)
            value = word.group() if word is not None else ""
        elif value.startswith('"'):
            # password="it's x" (a repr) or password="ab"cd (libpq, unquoted): mask the
            # longer of the quoted string and the word, whichever this is.
            quoted = patterns.double_quoted.match(text, value_start)
            if quoted is not None and quoted.end() > match.end():
                value = quoted.group()
        parts.append(text[pos:value_start])
        if value:
            parts.append(MASK if in_query else _masked_value(value))
        pos = value_start + len(value)
    parts.append(text[pos:])
    return "".join(parts)


def _quoted_key(match: re.Match[str]) -> str:
    q = match["q"]
    return q + match["key"] + q + match["sep"] + _masked_value(match["value"])


def mask_secrets(text: str) -> str:
    """Return ``text`` with every secret of a known form replaced by ``***``.

    The forms are listed in this module's docstring: URL passwords, query-string and
    keyword secrets, HTTP credentials. Secrets in no known form need a
    :class:`SecretRedactor` that knows them.
    """
    lowered = text.lower()
    if any(word in lowered for word in _KEY_WORDS):
        # Keywords first: "db:5432?password=p@ss" must not look like a userinfo ending
        # at that "@".
        if "=" in text:
            text = _mask_keywords(text)
        if ":" in text:
            text = _patterns().quoted_key.sub(_quoted_key, text)
    if "://" in text and "@" in text:
        text = _mask_url_passwords(text)
    if "Bearer" in text or "Basic" in text:
        text = _patterns().auth_header.sub(lambda m: m["scheme"] + m["sp"] + MASK, text)
    return text


def mask_url(url: object) -> str:
    """Return ``url`` as text with any password (and any other known secret) masked.

    Accepts strings and SQLAlchemy ``URL`` objects (whose ``str()`` already masks, but
    whose ``render_as_string(hide_password=False)`` would not).
    """
    render = getattr(url, "render_as_string", None)
    if callable(render):
        return mask_secrets(str(render(hide_password=True)))
    return mask_secrets(str(url))


def is_secret_key(name: str) -> bool:
    """Whether a field called ``name`` holds a secret (``password``, ``api_key``, ...)."""
    return _patterns().key_name.match(name) is not None


def tokens_match(given: str | None, expected: str | None) -> bool:
    """Compare a presented token with the configured one in constant time.

    With no configured token nothing matches: details stay withheld.
    """
    if not expected or given is None:
        return False
    import hmac  # here, not at the top: `lifesigns probe` never compares tokens

    return hmac.compare_digest(given.encode(), expected.encode())


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def percent_encode(text: str, safe: str = "", plus: bool = False) -> str:
    """``text`` percent-encoded as UTF-8, as :func:`urllib.parse.quote` (or ``quote_plus``)
    does, without importing :mod:`urllib.parse`."""
    out = []
    for ch in text:
        if ch in _UNRESERVED or ch in safe:
            out.append(ch)
        elif plus and ch == " ":
            out.append("+")
        else:
            out.extend(f"%{byte:02X}" for byte in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _lower_hex(text: str) -> str:
    parts = text.split("%")
    return parts[0] + "".join("%" + p[:2].lower() + p[2:] for p in parts[1:])


def _spellings(secret: str) -> set[str]:
    """The ways ``secret`` can appear in text: as given, percent-encoded, repr-escaped."""
    encoded = {
        percent_encode(secret),
        percent_encode(secret, safe="/"),
        percent_encode(secret, plus=True),
    }
    forms = {
        secret,
        *encoded,
        *(_lower_hex(form) for form in encoded),  # "%2F" and "%2f" are the same byte
        repr(secret)[1:-1],
        secret.encode("unicode_escape").decode("ascii"),
    }
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class SecretRedactor:
    """Replaces every known secret in a message with ``***``, then every known form.

    Error messages from drivers may quote a connection string; lifesigns registers every
    password and token it learns of here and passes messages through :meth:`redact`
    before they reach a log, a metric label or a response.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = _thread.allocate_lock()
        self._secrets: frozenset[str] = frozenset()
        self._forms: tuple[str, ...] = ()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Remember ``secret`` (ignored when empty or too short to redact safely)."""
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if secret in self._secrets:
                return
            self._secrets |= {secret}
            forms = set().union(*(_spellings(s) for s in self._secrets))
            # Longest first, so a secret that contains another is replaced whole.
            self._forms = tuple(sorted(forms, key=lambda f: (-len(f), f)))

    def redact(self, text: str) -> str:
        """Return ``text`` with registered secrets and every known secret form masked.

        A JSON document (text starting with ``{`` or ``[`` that parses) is masked value by
        value and serialised again, so the result is still JSON.
        """
        if text.lstrip()[:1] in ("{", "["):
            import json

            try:
                data = json.loads(text)
            except ValueError:
                pass
            else:
                return json.dumps(self.redact_data(data))
        return self._redact_text(text)

    def redact_data(self, data: object) -> object:
        """Return a copy of ``data`` (dicts, lists, strings) with every secret masked.

        Values of keys that name a secret (``password``, ``token``, ...) become ``***``.
        """
        if isinstance(data, str):
            return self._redact_text(data)
        if isinstance(data, dict):
            return {
                self._redact_text(k) if isinstance(k, str) else k: (
                    MASK
                    if isinstance(k, str) and isinstance(v, str) and v and is_secret_key(k)
                    else self.redact_data(v)
                )
                for k, v in data.items()
            }
        if isinstance(data, list | tuple):
            return [self.redact_data(item) for item in data]
        return data

    def _redact_text(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return mask_secrets(text)
