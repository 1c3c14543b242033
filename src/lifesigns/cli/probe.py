"""``lifesigns probe URL``: an HTTP health probe with a hard deadline.

A replacement for ``curl -f --max-time S URL`` in a Docker ``HEALTHCHECK`` for
images that have Python but no curl (``python:*-slim``, distroless).

Why not ``python -c "urllib.request.urlopen(url)"``: ``urlopen`` has no timeout
unless one is passed, and even with one the timeout applies to each socket
operation, so a server that accepts the connection and then trickles a byte
every half second keeps the probe alive forever. Probes then pile up.

Here the whole probe (name resolution, connect, TLS, send, status line and
headers, at most 64 KiB of body) must finish within ``--timeout`` seconds:

* In the main thread, ``setitimer(ITIMER_REAL)`` interrupts whatever is
  blocking when the deadline passes; the previous ``SIGALRM`` handler and
  timer are restored afterwards.
* Every socket operation also gets the *remaining* budget as its timeout, so
  ``run()`` keeps its deadline when called from another thread, where signals
  cannot be used.
* Name resolution runs in a separate thread that is abandoned at the deadline
  (``getaddrinfo`` cannot be interrupted and retries internally).

Exit status: 0 for a 2xx answer, 1 for anything else (redirects are not
followed and count as failures), 2 for usage errors. The outcome is always
exactly one line: stdout on success (nothing with ``--quiet``), stderr on
failure.

Start-up cost matters: this runs every few seconds in every container, and a
probe should cost about what curl costs. So this module speaks HTTP/1.1 itself
over a raw socket (``http.client`` imports the ``email`` package, ``ssl`` and
more), parses its arguments by hand (``argparse`` imports ``re`` and
``gettext``), and uses the C modules ``_socket``, ``_signal`` and ``_thread``
directly: their Python wrappers import ``enum``, ``selectors`` and more, which
alone cost as much as the rest of the probe. ``ssl`` is imported only for
``https://`` URLs, ``re`` only to mask a secret or read an HTML error page.
From ``lifesigns`` it imports only the masker and the error base class.
"""

from __future__ import annotations

import _socket
import _thread
import os
import sys
import time

from lifesigns._secrets import SecretRedactor, percent_encode
from lifesigns._secrets import mask_url as mask_url  # re-exported: the probe's masker
from lifesigns.errors import LifesignsError

# ``typing`` alone costs several milliseconds of start-up; mypy treats any
# name ``TYPE_CHECKING`` as true, so the annotations below are checked without
# importing it at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable
    from types import FrameType
    from typing import TextIO, TypeVar

    _T = TypeVar("_T")
else:
    import _signal

__all__ = ["DEFAULT_TIMEOUT", "MAX_BODY_BYTES", "MAX_TIMEOUT", "TOKEN_ENV", "mask_url", "run"]

PROG = "lifesigns probe"
DEFAULT_TIMEOUT = 3.0
MAX_TIMEOUT = 300.0
MAX_BODY_BYTES = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024  # status line and headers together
MAX_HEADERS = 100
MAX_DETAIL_CHARS = 200
TOKEN_ENV = "LIFESIGNS_TOKEN"  # noqa: S105 (a variable name, not a secret)
USER_AGENT = "lifesigns-probe"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Phases of a probe, used to say where the time went when the deadline passes.
_RESOLVING = "resolving"
_CONNECTING = "connecting"
_TLS = "tls"
_SENDING = "sending"
_HEADERS = "headers"
_BODY = "body"


# --------------------------------------------------------------------------- arguments


class _UsageError(LifesignsError):
    """A bad command line; the message is printed as ``lifesigns probe: error: ...``."""


_HEX = frozenset("0123456789abcdefABCDEF")


def _percent_decode(text: str) -> str:
    """``urllib.parse.unquote``: ``%XX`` escapes as UTF-8 bytes, anything else kept."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        hexpair = text[i + 1 : i + 3]
        if (
            text[i] == "%"
            and len(hexpair) == 2
            and all(c in "0123456789abcdefABCDEF" for c in hexpair)
        ):
            out.append(int(hexpair, 16))
            i += 3
        else:
            out += text[i].encode("utf-8", "surrogatepass")
            i += 1
    return out.decode("utf-8", "replace")


class _Target:
    """A validated probe URL."""

    __slots__ = ("display", "host", "password", "path", "port", "tls", "username")

    def __init__(self, url: str) -> None:
        shown = mask_url(url)
        if any(ch.isspace() or not ch.isprintable() for ch in url):
            raise _UsageError(
                f"{shown!r} contains spaces or control characters; percent-encode them"
            )
        lowered = url.lower()
        scheme = "https" if lowered.startswith("https://") else "http"
        if not lowered.startswith(scheme + "://"):
            raise _UsageError(
                f"{shown!r} is not an http:// or https:// URL "
                "(give a full URL such as http://127.0.0.1:8000/livez)"
            )
        # Split as urllib.parse.urlsplit does: the authority ends at the first "/", "?"
        # or "#"; the user information at the authority's last "@".
        without_fragment = url.partition("#")[0]
        rest = without_fragment[len(scheme) + 3 :]
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, target = rest[:cut], rest[cut:]
        userinfo, at, hostport = authority.rpartition("@")
        host, port_text = self._split_hostport(hostport, shown)
        if not host:
            raise _UsageError(
                f"{shown!r} has no host (give a full URL such as http://127.0.0.1:8000/livez)"
            )
        if port_text and not (port_text.isascii() and port_text.isdigit()):
            raise _UsageError(f"{shown!r} has a bad port ({port_text!r} is not a number)")
        port = int(port_text) if port_text else None
        if port is not None and not 0 < port <= 65535:
            raise _UsageError(f"{shown!r} has a bad port ({port}: valid ports are 1 to 65535)")
        self.tls = scheme == "https"
        self.host = host.lower()
        self.port = port if port is not None else (443 if self.tls else 80)
        path, _, query = target.partition("?")
        target = (path or "/") + (f"?{query}" if query else "")
        # The request target goes out as ASCII: percent-encode the rest, as http.client's
        # callers do with urllib.parse.quote.
        self.path = percent_encode(target, safe="!#$%&'()*+,/:;=?@[]~")
        user, colon, password = userinfo.partition(":")
        self.username = _percent_decode(user) if at else ""
        self.password = _percent_decode(password) if at and colon else None
        self.display = mask_url(without_fragment)

    @staticmethod
    def _split_hostport(hostport: str, shown: str) -> tuple[str, str]:
        if hostport.startswith("["):  # an IPv6 literal
            inside, bracket, after = hostport[1:].partition("]")
            if not bracket or (after and not after.startswith(":")):
                raise _UsageError(f"{shown!r} has a bad host ({hostport!r})")
            return inside, after[1:]
        host, _, port = hostport.partition(":")
        return host, port


def _parse_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    # "not (a < v <= b)" also rejects nan; inf is rejected by the upper bound.
    if not (0.0 < value <= MAX_TIMEOUT):
        raise _UsageError(
            f"argument --timeout: invalid value {text!r}: give seconds, more than 0 and at "
            f"most {MAX_TIMEOUT:g} (e.g. 3 or 0.5; default {DEFAULT_TIMEOUT:g})"
        )
    return value


_USAGE = f"usage: {PROG} [-h] [--timeout S] [--token TOKEN] [--quiet] URL"

_HELP = f"""{_USAGE}

Probe an HTTP health endpoint once, with a hard deadline for the whole request,
and say in one line why it failed. A stand-in for `curl -f --max-time S URL` in
images without curl.

positional arguments:
  URL            http:// or https:// URL to GET, e.g. http://127.0.0.1:8000/livez

options:
  -h, --help     show this help message and exit
  --timeout S    deadline in seconds for the whole probe: DNS, connect, TLS,
                 request, headers and body (default {DEFAULT_TIMEOUT:g}, at most {MAX_TIMEOUT:g})
  --token TOKEN  send 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV} if set)
  --quiet, -q    print nothing on success

exit status: 0 for a 2xx answer; 1 for anything else (no answer, refused,
timed out, 3xx redirects, which are not followed, 4xx, 5xx); 2 for usage errors.

Docker example (keep --timeout below the HEALTHCHECK --timeout, which also
has to cover the Python start-up):

  HEALTHCHECK --interval=10s --timeout=5s --retries=3 \\
    CMD ["lifesigns", "probe", "--timeout", "3", "http://127.0.0.1:8000/livez"]

The token can also come from the {TOKEN_ENV} environment variable; it is
sent as "Authorization: Bearer <token>" and never printed. A user:password
in the URL is sent as HTTP Basic authentication (when there is no token)
and printed masked. Proxy variables (http_proxy, ...) are ignored.
"""


class _Args:
    __slots__ = ("quiet", "target", "timeout", "token")

    def __init__(self) -> None:
        self.target: _Target | None = None
        self.timeout = DEFAULT_TIMEOUT
        self.token: str | None = None
        self.quiet = False


def _parse_args(argv: list[str]) -> _Args | None:
    """Parse the command line (``None`` for ``--help``); raise :class:`_UsageError`."""
    args = _Args()
    positional: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            positional.extend(words)
            break
        if word in ("-h", "--help"):
            return None
        if word in ("-q", "--quiet"):
            args.quiet = True
            continue
        name, equals, value = word.partition("=")
        if name in ("--timeout", "--token"):
            if not equals:
                following = next(words, None)
                if following is None:
                    raise _UsageError(f"argument {name}: expected one argument")
                value = following
            if name == "--timeout":
                args.timeout = _parse_timeout(value)
            else:
                args.token = value
            continue
        if word.startswith("-") and word != "-":
            raise _UsageError(f"unrecognized arguments: {word}")
        positional.append(word)
    if not positional:
        raise _UsageError("the following arguments are required: URL")
    if len(positional) > 1:
        raise _UsageError(f"unrecognized arguments: {' '.join(positional[1:])}")
    try:
        args.target = _Target(positional[0])
    except _UsageError as exc:
        raise _UsageError(f"argument URL: {exc}") from None
    return args


def _header_safe(value: str) -> bool:
    return all(" " < ch < "\x7f" for ch in value)


# --------------------------------------------------------------------------- deadline


class _DeadlineReached(BaseException):
    """Raised by the SIGALRM handler. A BaseException so no ``except Exception`` eats it."""


class _Budget:
    """The deadline of one probe and how far the probe got."""

    __slots__ = ("deadline", "phase", "received", "status", "timeout", "where")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.phase = _RESOLVING
        self.where = ""  # address being connected to
        self.received = 0  # bytes received from the server in this phase
        self.status = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def arm(self, sock: _socket.socket) -> None:
        """Give *sock*'s next operation the remaining budget as its timeout."""
        left = self.remaining()
        if left <= 0:
            raise TimeoutError("probe deadline reached")
        sock.settimeout(left)


def _call_with_alarm(fn: Callable[[], _T], budget: _Budget) -> _T:
    """Run *fn* with SIGALRM armed for the budget's deadline, when signals can be used.

    Signals only work in the main thread (and not on Windows). Elsewhere *fn*
    runs as is and the deadline is kept by the per-operation socket timeouts.
    """
    if not hasattr(_signal, "setitimer"):
        return fn()
    previous_handler = _signal.getsignal(_signal.SIGALRM)
    if previous_handler is None:  # installed outside Python: could not be put back
        return fn()
    try:  # setting the handler it already has: raises outside the main thread
        _signal.signal(_signal.SIGALRM, previous_handler)
    except ValueError:
        return fn()
    fired = False

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:  # one shot, so the clean-up below can retry safely
            fired = True
            raise _DeadlineReached

    # Pause any timer already running (e.g. pytest-timeout's); re-armed afterwards.
    previous_timer = _signal.setitimer(_signal.ITIMER_REAL, 0)
    started = time.monotonic()
    try:
        _signal.signal(_signal.SIGALRM, on_alarm)
        _signal.setitimer(_signal.ITIMER_REAL, max(budget.remaining(), 1e-6))
        return fn()
    finally:
        # The alarm can go off at any bytecode, including in here; it raises
        # at most once, so retrying the (idempotent) clean-up is enough. A late
        # alarm after fn() returned does not change its result.
        while True:
            try:
                _signal.setitimer(_signal.ITIMER_REAL, 0)
                _signal.signal(_signal.SIGALRM, previous_handler)
                break
            except _DeadlineReached:
                continue
        delay, interval = previous_timer
        if delay > 0:
            left = delay - (time.monotonic() - started)
            # A timer that would have expired meanwhile fires now, late rather than never.
            _signal.setitimer(_signal.ITIMER_REAL, max(left, 1e-6), interval)


# --------------------------------------------------------------------------- connecting

_SockAddr = tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]
_AddrInfo = tuple[int, int, int, str, _SockAddr]


def _resolve(name: str, port: int, budget: _Budget) -> list[_AddrInfo]:
    kind = _socket.SOCK_STREAM
    # getaddrinfo() encodes a str with the "idna" codec, which imports re, stringprep and
    # unicodedata: an ASCII name goes as bytes.
    host: str | bytes = name.encode("ascii") if name.isascii() else name
    try:  # an IP literal needs no lookup
        return _socket.getaddrinfo(host, port, 0, kind, 0, _socket.AI_NUMERICHOST)
    except _socket.gaierror:
        pass
    # getaddrinfo() cannot be interrupted (glibc retries on EINTR) and ignores
    # socket timeouts, so it runs in a thread that we stop waiting for.
    found: list[_AddrInfo] = []
    failed: list[OSError] = []
    done = _thread.allocate_lock()
    done.acquire()

    def lookup() -> None:
        try:
            found.extend(_socket.getaddrinfo(host, port, 0, kind))
        except OSError as exc:
            failed.append(exc)
        finally:
            done.release()

    _thread.start_new_thread(lookup, ())
    left = budget.remaining()
    if left <= 0 or not done.acquire(timeout=left):
        raise TimeoutError(f"resolving {name!r}")
    if failed:
        raise failed[0]
    return found


def _format_sockaddr(sockaddr: _SockAddr) -> str:
    host, port = str(sockaddr[0]), str(sockaddr[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _ConnectFailed(LifesignsError):
    def __init__(self, host: str, errors: list[tuple[str, OSError]]) -> None:
        super().__init__(host, errors)
        self.host = host
        self.errors = errors


def _open_socket(
    host: str, addresses: list[_AddrInfo], budget: _Budget, tls: bool
) -> _socket.socket:
    # ssl wraps only a socket.socket; plain HTTP needs no more than the C type.
    if tls:
        import socket

        socket_type: type[_socket.socket] = socket.socket
    else:
        socket_type = _socket.socket
    errors: list[tuple[str, OSError]] = []
    for family, kind, proto, _canonical, sockaddr in addresses:
        budget.where = _format_sockaddr(sockaddr)
        sock = socket_type(family, kind, proto)
        try:
            budget.arm(sock)
            sock.connect(sockaddr)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except TimeoutError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            errors.append((budget.where, exc))
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise _ConnectFailed(host, errors)


def _start_tls(sock: _socket.socket, host: str, budget: _Budget) -> _socket.socket:
    import socket
    import ssl

    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    assert isinstance(sock, socket.socket)  # made by _open_socket for TLS
    wrapped = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    budget.arm(wrapped)  # the handshake's timeout covers all of it
    wrapped.do_handshake()
    return wrapped


# --------------------------------------------------------------------------- HTTP/1.1


class _Closed(LifesignsError):
    """The server closed the connection before the first byte of an answer."""


class _NotHTTP(LifesignsError):
    """The answer is not HTTP/1.x; the message says what was wrong."""


class _CutShort(LifesignsError):
    """The connection closed before the body announced was complete."""

    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received


class _Reader:
    """Buffered reads from a socket, each within the remaining budget."""

    __slots__ = ("budget", "buffer", "eof", "sock")

    def __init__(self, sock: _socket.socket, budget: _Budget) -> None:
        self.sock = sock
        self.budget = budget
        self.buffer = bytearray()
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        self.budget.arm(self.sock)
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            return False
        self.budget.received += len(data)
        self.buffer += data
        return True

    def line(self, limit: int) -> bytes | None:
        """The next line with its ``\\n``; ``None`` when the connection closes first."""
        start = 0
        while (end := self.buffer.find(b"\n", start)) < 0:
            if len(self.buffer) > limit:
                raise _NotHTTP(f"a header line longer than {limit} bytes")
            start = len(self.buffer)
            if not self._fill():
                return None
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes: fewer only when the connection closes first."""
        while len(self.buffer) < size and self._fill():
            pass
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


class _Answer:
    __slots__ = ("body", "location", "reason", "status")

    def __init__(self, status: int, reason: str, location: str | None, body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.location = location
        self.body = body


def _request(target: _Target, headers: dict[str, str]) -> bytes:
    host = f"[{target.host}]" if ":" in target.host else target.host
    if target.port != (443 if target.tls else 80):
        host = f"{host}:{target.port}"
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        host = host.encode("idna").decode("ascii")
    lines = [f"GET {target.path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_head(reader: _Reader) -> tuple[int, str, dict[str, str]]:
    """Status, reason and headers (lower-case names) of the final (non-1xx) answer."""
    while True:
        line = reader.line(MAX_HEAD_BYTES)
        if line is None and not reader.buffer:
            raise _Closed
        text = (line or bytes(reader.buffer)).decode("latin-1").rstrip("\r\n")
        version, _, rest = text.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not (len(code) == 3 and code.isdigit()):
            raise _NotHTTP(f"status line {_one_line(text, 80)!r}")
        headers: dict[str, str] = {}
        size = len(text)
        while True:
            line = reader.line(MAX_HEAD_BYTES)
            if line is None:
                raise _NotHTTP("the connection closed in the middle of the headers")
            if line in (b"\r\n", b"\n"):
                break
            size += len(line)
            if len(headers) >= MAX_HEADERS or size > MAX_HEAD_BYTES:
                raise _NotHTTP(f"more than {MAX_HEADERS} headers or {MAX_HEAD_BYTES} bytes")
            name, colon, value = line.decode("latin-1").partition(":")
            if colon:
                key = name.strip().lower()
                value = value.strip()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
        status = int(code)
        if status >= 200 or status == 101:
            return status, reason.strip(), headers
        # 1xx (100 Continue, 103 Early Hints): the final answer follows


def _read_chunked(reader: _Reader) -> bytes:
    body = bytearray()
    while len(body) < MAX_BODY_BYTES:
        line = reader.line(MAX_HEAD_BYTES)
        if line is None:
            raise _CutShort(len(body))
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _NotHTTP(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            break
        want = min(size, MAX_BODY_BYTES - len(body))
        chunk = reader.read(want)
        body += chunk
        if len(chunk) < want:
            raise _CutShort(len(body))
        if want == size and reader.line(MAX_HEAD_BYTES) is None:  # the chunk's CRLF
            raise _CutShort(len(body))
    return bytes(body)


def _read_body(reader: _Reader, status: int, headers: dict[str, str]) -> bytes:
    if status in (204, 304) or status < 200:
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _read_chunked(reader)
    length_text = headers.get("content-length")
    if length_text is None:  # the body runs until the server closes
        return reader.read(MAX_BODY_BYTES)
    try:
        length = int(length_text.split(",")[0])
    except ValueError:
        raise _NotHTTP(f"bad Content-Length {length_text[:20]!r}") from None
    want = min(max(length, 0), MAX_BODY_BYTES)
    body = reader.read(want)
    if len(body) < want:
        raise _CutShort(len(body))
    return body


def _exchange(target: _Target, headers: dict[str, str], budget: _Budget) -> _Answer:
    budget.phase = _RESOLVING
    addresses = _resolve(target.host, target.port, budget)
    budget.phase = _CONNECTING
    sock = _open_socket(target.host, addresses, budget, target.tls)
    try:
        if target.tls:
            budget.phase = _TLS
            sock = _start_tls(sock, target.host, budget)
        budget.phase = _SENDING
        budget.arm(sock)  # sendall's timeout covers the whole call
        sock.sendall(_request(target, headers))
        budget.phase = _HEADERS
        budget.received = 0
        reader = _Reader(sock, budget)
        status, reason, answer_headers = _read_head(reader)
        budget.status = status
        budget.phase = _BODY
        budget.received = len(reader.buffer)
        body = _read_body(reader, status, answer_headers)
        return _Answer(status, reason, answer_headers.get("location"), body)
    finally:
        sock.close()


# --------------------------------------------------------------------------- reporting

_REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}  # fmt: skip


def _seconds(value: float) -> str:
    return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"


def _one_line(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(body: bytes) -> str:
    """The first non-blank line of *body*; for HTML, of its text (an error page's title)."""
    text = body.decode("utf-8", "replace")
    if text.lstrip().startswith("<"):
        import re  # only for an HTML error page

        noise = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", re.I | re.S)
        for line in noise.sub("\n", text).splitlines():
            if line.strip():
                return _one_line(line)
    for line in text.splitlines():
        if line.strip():
            return _one_line(line)
    return ""


def _timed_out(target: _Target, budget: _Budget) -> str:
    limit = _seconds(budget.timeout)
    url = target.display
    phase = budget.phase
    if phase == _RESOLVING:
        return f'failed: cannot resolve host "{target.host}" within {limit} s (timed out)'
    if phase == _CONNECTING:
        why = f"connecting to {budget.where}" if budget.where else "connecting"
    elif phase == _TLS:
        why = f"in the TLS handshake with {budget.where}"
    elif phase == _SENDING:
        why = "sending the request"
    elif phase == _HEADERS:
        if budget.received == 0:
            why = "connected and sent the request, but not one byte came back"
        else:
            why = f"only {budget.received} bytes of status line and headers came back"
    else:
        return (
            f"failed: {budget.status} from {url}, but the body did not finish within "
            f"{limit} s (timed out after {budget.received} bytes)"
        )
    return f"failed: no answer from {url} within {limit} s (timed out: {why})"


def _is_ip_literal(host: str) -> bool:
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return True
    return False


def _connect_failed(target: _Target, exc: _ConnectFailed) -> str:
    where = ", ".join(address for address, _ in exc.errors)
    # "127.0.0.1:9" for an address, "localhost at [::1]:9, 127.0.0.1:9" for a name
    shown = where if _is_ip_literal(target.host) else f"{target.host} at {where}"
    if exc.errors and all(isinstance(error, ConnectionRefusedError) for _, error in exc.errors):
        return f"failed: connection refused by {shown} (nothing listening?)"
    reason = "; ".join(
        f"{address}: {error.strerror or error or type(error).__name__}"
        for address, error in exc.errors
    )
    return f"failed: cannot connect to {target.display} ({reason or 'no address'})"


def _tls_failed(target: _Target, exc: OSError) -> str | None:
    """The line for a TLS error, or ``None`` if ``exc`` is not one (ssl may not be loaded)."""
    ssl_module = sys.modules.get("ssl")
    if ssl_module is None or not isinstance(exc, ssl_module.SSLError):
        return None
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return f"failed: TLS certificate of {target.host} not accepted: {detail}"
    detail = exc.reason or str(exc)
    if detail == "WRONG_VERSION_NUMBER":
        detail += " (does the server speak plain http://?)"
    return f"failed: TLS handshake with {target.host} failed: {detail}"


def _judge(target: _Target, answer: _Answer, elapsed_ms: float, authenticated: bool) -> str:
    url = target.display
    status = answer.status
    if 200 <= status < 300:
        return f"ok: {status} from {url} in {elapsed_ms:.0f} ms"
    if 300 <= status < 400:
        where = f" to {_one_line(mask_url(answer.location))}" if answer.location else ""
        return f"failed: {status} from {url}: redirect{where} (not followed; probe the final URL)"
    detail = _first_line(answer.body)
    hint = ""
    if status in (401, 403) and not authenticated:
        hint = f" (no --token given and {TOKEN_ENV} is not set)"
    if detail:
        return f"failed: {status} from {url}: {detail}{hint}"
    reason = _one_line(answer.reason or _REASONS.get(status, ""))
    return f"failed: {status}{' ' + reason if reason else ''} from {url} (empty body){hint}"


def _probe(target: _Target, timeout: float, token: str | None) -> tuple[int, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif target.password is not None or target.username:
        import binascii  # only for user:password URLs

        pair = f"{target.username}:{target.password or ''}".encode()
        headers["Authorization"] = "Basic " + binascii.b2a_base64(pair, newline=False).decode()
    authenticated = "Authorization" in headers

    budget = _Budget(timeout)
    started = time.perf_counter()
    url = target.display
    try:
        answer = _call_with_alarm(lambda: _exchange(target, headers, budget), budget)
    except (_DeadlineReached, TimeoutError):
        return EXIT_FAILED, _timed_out(target, budget)
    except _socket.gaierror as exc:
        reason = f" ({exc.strerror})" if exc.strerror else ""
        return EXIT_FAILED, f'failed: cannot resolve host "{target.host}"{reason}'
    except _ConnectFailed as exc:
        return EXIT_FAILED, _connect_failed(target, exc)
    except _Closed:
        return EXIT_FAILED, f"failed: {url} closed the connection without answering"
    except _CutShort as exc:
        return EXIT_FAILED, (
            f"failed: {budget.status} from {url}, but the connection closed mid-body "
            f"({exc.received} bytes read)"
        )
    except _NotHTTP as exc:
        return EXIT_FAILED, f"failed: {url} did not answer in HTTP: {exc}"
    except OSError as exc:
        tls = _tls_failed(target, exc)
        if tls is not None:
            return EXIT_FAILED, tls
        if isinstance(exc, ConnectionResetError):
            return EXIT_FAILED, f"failed: connection reset by {target.host} while {budget.phase}"
        detail = exc.strerror or str(exc) or type(exc).__name__
        return EXIT_FAILED, f"failed: {url} while {budget.phase}: {detail}"
    except Exception as exc:  # a probe reports, it does not crash with a traceback
        return EXIT_FAILED, f"failed: {url}: unexpected {type(exc).__name__}: {exc}"
    elapsed_ms = (time.perf_counter() - started) * 1000
    line = _judge(target, answer, elapsed_ms, authenticated)
    return (EXIT_OK if line.startswith("ok:") else EXIT_FAILED), line


def _emit(line: str, out: TextIO) -> None:
    try:
        try:
            print(line, file=out, flush=True)
        except UnicodeEncodeError:  # e.g. a non-UTF-8 locale and a non-ASCII body line
            encoding = getattr(out, "encoding", None) or "ascii"
            print(line.encode(encoding, "backslashreplace").decode(encoding), file=out, flush=True)
    except (BrokenPipeError, ValueError):  # nobody is reading; the exit status still says it
        return


def _usage_error(message: str, secrets: SecretRedactor) -> int:
    # One line (a HEALTHCHECK log keeps only the first 4096 bytes), secrets masked.
    _emit(f"{PROG}: error: {secrets.redact(message)} (see --help)", sys.stderr)
    return EXIT_USAGE


def run(argv: list[str]) -> int:
    """Run ``lifesigns probe`` with *argv* (the words after ``probe``); return the exit status."""
    # Everything that reaches the output passes the one masker, with the secrets this
    # probe knows of registered: the token from either source.
    secrets = SecretRedactor([os.environ.get(TOKEN_ENV)])
    for i, word in enumerate(argv):
        if word == "--token" and i + 1 < len(argv):
            secrets.add(argv[i + 1])
        elif word.startswith("--token="):
            secrets.add(word.partition("=")[2])
    try:
        args = _parse_args(argv)
        if args is None:
            _emit(_HELP.rstrip("\n"), sys.stdout)
            return EXIT_OK
        target = args.target
        assert target is not None
        from_flag = args.token is not None
        token: str | None = args.token if from_flag else os.environ.get(TOKEN_ENV)
        if token and not _header_safe(token):
            source = "--token" if from_flag else TOKEN_ENV
            raise _UsageError(
                f"the token from {source} has characters that cannot go in an HTTP header "
                "(spaces, control characters or non-ASCII)"
            )
    except _UsageError as exc:
        return _usage_error(str(exc), secrets)

    secrets.add(target.password)
    code, line = _probe(target, args.timeout, token or None)
    line = _one_line(secrets.redact(line), limit=1000)
    if code != EXIT_OK:
        _emit(line, sys.stderr)
    elif not args.quiet:
        _emit(line, sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
