"""The one secret masker: table tests for the known forms, properties over generated ones."""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lifesigns._secrets import MASK, SecretRedactor, mask_secrets, mask_url, tokens_match

# ---------------------------------------------------------------------------- known forms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # URL passwords with "@", ":" and "/" inside, raw: the last "@" ends the userinfo
        ("postgresql://app:p@ss@db/app", "postgresql://app:***@db/app"),
        ("postgresql://app:p@ss:w/rd@db:5432/app", "postgresql://app:***@db:5432/app"),
        (
            "postgresql+asyncpg://app:a/b/c@db/app?ssl=1",
            "postgresql+asyncpg://app:***@db/app?ssl=1",
        ),
        ("redis://:s3cr:et@cache:6379/0", "redis://:***@cache:6379/0"),
        # ... percent-encoded
        ("postgresql://app:p%40ss%3Aw%2Frd@db/app", "postgresql://app:***@db/app"),
        # ... with a raw "?" or "#", which libpq reads as part of the password
        ("postgresql://app:p?ss#w@db/app", "postgresql://app:***@db/app"),
        # ... with an "@" in the query, which is not the userinfo's
        ("http://u:pw@h/x?next=a@b", "http://u:***@h/x?next=a@b"),
        ("see https://u:p@ss@h:1/x?y", "see https://u:***@h:1/x?y"),
        # Azure's user@server form
        (
            "postgresql://app@srv:pw@srv.postgres.example/db",
            "postgresql://app@srv:***@srv.postgres.example/db",
        ),
        # not passwords
        ("http://u@h:8080/x", "http://u@h:8080/x"),
        ("http://h/x?a=b:c@d", "http://h/x?a=b:c@d"),
        ("http://[::1]:8000/livez", "http://[::1]:8000/livez"),
        ("http://127.0.0.1:8000/livez", "http://127.0.0.1:8000/livez"),
        # query-string passwords
        (
            "postgresql://db/app?password=hunter2&sslmode=require",
            "postgresql://db/app?password=***&sslmode=require",
        ),
        ("postgresql://db:5432?sslpassword=p@ss", "postgresql://db:5432?sslpassword=***"),
        ("https://api.example/x?api_key=abc123#top", "https://api.example/x?api_key=***#top"),
        ("GET /cb?access_token=eyJabc&state=1", "GET /cb?access_token=***&state=1"),
        # libpq keyword form
        (
            "host=db port=5432 password=hunter2 dbname=app",
            "host=db port=5432 password=*** dbname=app",
        ),
        ("host=db password = 'it\\'s a secret' user=app", "host=db password = '***' user=app"),
        ("password='' host=db", "password='***' host=db"),
        ("PGPASSWORD=hunter2 psql", "PGPASSWORD=*** psql"),
        # keyword arguments' and dicts' reprs, JSON
        ("connect(user='app', password='p@ss')", "connect(user='app', password='***')"),
        ('connect(password="it\'s x", host="db")', 'connect(password="***", host="db")'),
        ("{'password': 'p@ss', 'host': 'db'}", "{'password': '***', 'host': 'db'}"),
        ('{"db_password": "p@ss", "n": 1}', '{"db_password": "***", "n": 1}'),
        # HTTP credentials
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer ***"),
        ("Authorization: Basic YWRtaW46aHVudGVyMg==", "Authorization: Basic ***"),
    ],
)
def test_known_forms_are_masked(text: str, expected: str) -> None:
    assert mask_secrets(text) == expected
    assert SecretRedactor().redact(text) == expected


def test_registered_password_with_at_sign_is_masked_whole() -> None:
    # The bug: "app:***@ss@db" showed the part of the password after its "@".
    redactor = SecretRedactor(["p@ss"])
    assert redactor.redact("postgresql://app:p@ss@db") == "postgresql://app:***@db"
    assert redactor.redact("connect failed for p@ss") == "connect failed for ***"


@pytest.mark.parametrize(
    "shown",
    ["p@ss w/rd", "p%40ss%20w%2Frd", "p%40ss%20w%2frd", "p%40ss+w%2Frd", "p@ss w/rd".upper()],
)
def test_registered_secret_is_masked_in_every_spelling(shown: str) -> None:
    redactor = SecretRedactor(["p@ss w/rd", "P@SS W/RD"])
    assert redactor.redact(f"error: {shown} rejected") == f"error: {MASK} rejected"


def test_short_secrets_are_not_registered() -> None:
    redactor = SecretRedactor(["ab", "", None])
    assert redactor.redact("ab cab") == "ab cab"


def test_json_stays_json() -> None:
    redactor = SecretRedactor(["s3cr3t\u00e9"])
    document = json.dumps(
        {
            "error": "FATAL password=abc",
            "url": "postgresql://app:p@ss@db/app",
            "token": "t0k3n",
            "nested": [{"why": "s3cr3t\u00e9 refused"}],
        }
    )
    cleaned = json.loads(redactor.redact(document))
    assert cleaned == {
        "error": "FATAL password=***",
        "url": "postgresql://app:***@db/app",
        "token": "***",
        "nested": [{"why": "*** refused"}],
    }


def test_sqlalchemy_url_objects() -> None:
    from sqlalchemy.engine import make_url

    url = make_url("postgresql+asyncpg://app:hunter2@db/app")
    assert mask_url(url) == "postgresql+asyncpg://app:***@db/app"


def test_tokens_match() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abd", "abc")
    assert not tokens_match(None, "abc")
    assert not tokens_match("abc", None)


# ---------------------------------------------------------------------------- properties

_NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
_HOST = st.one_of(
    st.builds(
        lambda a, b: f"{a}.{b}",
        st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10),
        st.sampled_from(["internal", "example.com", "svc.cluster.local"]),
    ),
    st.sampled_from(["db", "127.0.0.1", "[::1]", "[2001:db8::5]", "localhost"]),
)
_PORT = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
_SCHEME = st.sampled_from(
    ["postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg", "mysql+aiomysql",
     "redis", "amqp", "http", "https"]
)  # fmt: skip
_QUERY = st.sampled_from(["", "?sslmode=require", "?application_name=web&connect_timeout=5"])
# What makes masking hard, weighted up; then anything printable but white space.
_HARD = st.sampled_from(list("@:/%?#&=;'\"\\+*[]{}$!"))
_RAW_CHAR = st.one_of(
    _HARD, st.characters(codec="utf-8").filter(lambda c: c.isprintable() and not c.isspace())
)
_ANY_CHAR = st.one_of(_HARD, st.characters(codec="utf-8"))
_RAW_PASSWORD = st.text(_RAW_CHAR, min_size=3, max_size=24).filter(
    # No parser reads a raw "/" together with a raw "?" or "#" as one password.
    lambda p: not ("/" in p and ("?" in p or "#" in p))
)
_ANY_PASSWORD = st.text(_ANY_CHAR, min_size=3, max_size=24)


@st.composite
def _case(draw: st.DrawFn) -> tuple[str, str, str, list[str]]:
    """(text, password, expected masked text, parts that must stay visible)."""
    form = draw(st.sampled_from(["url-raw", "url-encoded", "query", "keyword", "keyword-quoted"]))
    scheme, user, host, port = draw(_SCHEME), draw(_NAME), draw(_HOST), draw(_PORT)
    db = draw(_NAME)
    if form in ("url-raw", "url-encoded"):
        password = draw(_RAW_PASSWORD if form == "url-raw" else _ANY_PASSWORD)
        shown = password if form == "url-raw" else urllib.parse.quote(password, safe="")
        user = draw(st.one_of(st.just(""), _NAME))
        query = draw(_QUERY)
        text = f"{scheme}://{user}:{shown}@{host}{port}/{db}{query}"
        expected = f"{scheme}://{user}:{MASK}@{host}{port}/{db}{query}"
        return text, password, expected, [f"{scheme}://", host, db]
    if form == "query":
        password = draw(_ANY_PASSWORD)
        encoded = draw(st.booleans())
        if not encoded:
            assume(
                not any(ch in password for ch in "&#") and not any(c.isspace() for c in password)
            )
        shown = urllib.parse.quote(password, safe="") if encoded else password
        key = draw(st.sampled_from(["password", "sslpassword", "PASSWORD"]))
        before = draw(st.sampled_from(["?", "?sslmode=require&"]))
        after = draw(st.sampled_from(["", "&application_name=web", "#frag"]))
        head = f"{scheme}://{user}@{host}{port}/{db}{before}{key}="
        return f"{head}{shown}{after}", password, f"{head}{MASK}{after}", [host, db]
    keywords = [f"host={host.strip('[]')}", f"dbname={db}", f"user={user}", "sslmode=require"]
    if form == "keyword":
        password = draw(_RAW_PASSWORD.filter(lambda p: "'" not in p and "\\" not in p))
        assume(not password.startswith('"'))
        value, masked = password, MASK
    else:
        password = draw(_ANY_PASSWORD)
        value = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
        masked = f"'{MASK}'"
    where = draw(st.integers(0, len(keywords)))
    text = " ".join([*keywords[:where], f"password={value}", *keywords[where:]])
    expected = " ".join([*keywords[:where], f"password={masked}", *keywords[where:]])
    return text, password, expected, [host.strip("[]"), db]


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_case())
def test_no_generated_password_leaks(case: tuple[str, str, str, list[str]]) -> None:
    text, password, expected, visible = case
    # A password that is part of what must stay visible cannot be told apart from it.
    assume(password not in expected)
    masked = mask_secrets(text)
    assert password not in masked
    assert urllib.parse.quote(password, safe="") not in masked
    for part in visible:
        assert part in masked
    assert masked == expected


@settings(max_examples=2_000, deadline=None)
@given(
    secret=st.text(_ANY_CHAR, min_size=3),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
    spelling=st.sampled_from(["raw", "quote", "quote_plus", "repr", "lower-hex"]),
)
def test_registered_secrets_never_leak(secret: str, before: str, after: str, spelling: str) -> None:
    shown = {
        "raw": secret,
        "quote": urllib.parse.quote(secret, safe=""),
        "quote_plus": urllib.parse.quote_plus(secret, safe=""),
        "repr": repr(secret)[1:-1],
        "lower-hex": re.sub(
            r"%[0-9A-F]{2}", lambda m: m.group().lower(), urllib.parse.quote(secret, safe="")
        ),
    }[spelling]
    assume("*" not in secret and secret not in before + after and shown not in before + after)
    assume(not (before + shown + after).lstrip().startswith(("{", "[")))  # JSON: another test
    masked = SecretRedactor([secret]).redact(before + shown + after)
    assert secret not in masked
    assert shown not in masked
