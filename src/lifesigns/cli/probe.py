"""``lifesigns probe URL``: an HTTP health probe with a hard deadline.

A replacement for ``curl -f --max-time S URL`` in a Docker ``HEALTHCHECK`` for
images that have Python but no curl (``python:*-slim``, distroless).

Why not ``python -c "urllib.request.urlopen(url)"``: ``urlopen`` has no timeout
unless one is passed, and even with one the timeout applies to each socket
operation, so a server that accepts the connection and then trickles a byte
every half second keeps the probe alive forever. Probes then pile up.

Here the whole probe (name resolution, connect, TLS, send, status line and
headers, at most 64 KiB of body) must finish within ``--timeout`` seconds:

* In the main thread, ``signal.setitimer(ITIMER_REAL)`` interrupts whatever
  is blocking when the deadline passes; the previous ``SIGALRM`` handler and
  timer are restored afterwards.
* Every socket operation also gets the *remaining* budget as its timeout, so
  ``run()`` keeps its deadline when called from another thread, where signals
  cannot be used.
* Name resolution runs in a daemon thread that is abandoned at the deadline
  (``getaddrinfo`` cannot be interrupted and retries internally).

Exit status: 0 for a 2xx answer, 1 for anything else (redirects are not
followed and count as failures), 2 for usage errors. The outcome is always
exactly one line: stdout on success (nothing with ``--quiet``), stderr on
failure.

Import cost matters (this runs every few seconds in every container), so this
module imports only the standard library and nothing else from ``lifesigns``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse

# ``typing`` alone costs several milliseconds of start-up; mypy treats any
# name ``TYPE_CHECKING`` as true, so the annotations below are checked without
# importing it at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import NoReturn, TextIO, TypeVar

    from _typeshed import ReadableBuffer, WriteableBuffer

    _T = TypeVar("_T")

__all__ = ["DEFAULT_TIMEOUT", "MAX_BODY_BYTES", "MAX_TIMEOUT", "TOKEN_ENV", "run"]

PROG = "lifesigns probe"
DEFAULT_TIMEOUT = 3.0
MAX_TIMEOUT = 300.0
MAX_BODY_BYTES = 64 * 1024
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

# scheme://user:password@  ->  scheme://user:***@   (greedy up to the last "@"
# of the authority, as urllib.parse splits it)
_USERINFO_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*:)[^/?#\s]*@")


def mask_url(text: str) -> str:
    """Replace the password of every ``scheme://user:password@`` in *text* with ``***``."""
    return _USERINFO_PASSWORD.sub(r"\g<head>***@", text)


# --------------------------------------------------------------------------- arguments


class _Target:
    """A validated probe URL."""

    __slots__ = ("display", "host", "password", "path", "port", "tls", "username")

    def __init__(self, url: str) -> None:
        shown = mask_url(url)
        if any(ch.isspace() or not ch.isprintable() for ch in url):
            raise argparse.ArgumentTypeError(
                f"{shown!r} contains spaces or control characters; percent-encode them"
            )
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not url.lower().startswith(scheme + "://"):
            raise argparse.ArgumentTypeError(
                f"{shown!r} is not an http:// or https:// URL "
                "(give a full URL such as http://127.0.0.1:8000/livez)"
            )
        host = parts.hostname
        if not host:
            raise argparse.ArgumentTypeError(
                f"{shown!r} has no host (give a full URL such as http://127.0.0.1:8000/livez)"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{shown!r} has a bad port ({exc})") from None
        if port == 0:
            raise argparse.ArgumentTypeError(f"{shown!r} has a bad port (0)")
        self.tls = scheme == "https"
        self.host = host
        self.port = port if port is not None else (443 if self.tls else 80)
        # http.client sends the request target as ASCII: percent-encode the rest.
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.path = urllib.parse.quote(path, safe="!#$%&'()*+,/:;=?@[]~")
        self.username = urllib.parse.unquote(parts.username) if parts.username else ""
        self.password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        # Drop the fragment (never sent), keep everything else as given.
        self.display = mask_url(urllib.parse.urlunsplit(parts._replace(fragment="")))


def _parse_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    # "not (a < v <= b)" also rejects nan; inf is rejected by the upper bound.
    if not (0.0 < value <= MAX_TIMEOUT):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: give seconds, more than 0 and at most {MAX_TIMEOUT:g} "
            f"(e.g. 3 or 0.5; default {DEFAULT_TIMEOUT:g})"
        )
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line (a HEALTHCHECK log keeps only the first 4096 bytes), URL
        # passwords masked even when argparse echoes an argument back.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {mask_url(message)} (see --help)\n")


_EPILOG = f"""\
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


def _build_parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description=(
            "Probe an HTTP health endpoint once, with a hard deadline for the whole "
            "request, and say in one line why it failed. A stand-in for "
            "`curl -f --max-time S URL` in images without curl."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "url",
        metavar="URL",
        type=_Target,
        help="http:// or https:// URL to GET, e.g. http://127.0.0.1:8000/livez",
    )
    parser.add_argument(
        "--timeout",
        metavar="S",
        type=_parse_timeout,
        default=DEFAULT_TIMEOUT,
        help=(
            "deadline in seconds for the whole probe: DNS, connect, TLS, request, "
            f"headers and body (default {DEFAULT_TIMEOUT:g}, at most {MAX_TIMEOUT:g})"
        ),
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        default=None,
        help=f"send 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV} if set)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    return parser


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
        self.received = 0  # bytes received from the server so far
        self.status = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def arm(self, sock: socket.socket) -> None:
        """Give *sock*'s next operation the remaining budget as its timeout."""
        left = self.remaining()
        if left <= 0:
            raise TimeoutError("probe deadline reached")
        sock.settimeout(left)


class _DeadlineSocket(socket.socket):
    """A TCP socket whose every operation gets only the remaining budget."""

    budget: _Budget | None = None

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        if self.budget is None:
            return super().recv_into(buffer, nbytes, flags)
        self.budget.arm(self)
        count = super().recv_into(buffer, nbytes, flags)
        self.budget.received += count
        return count

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        if self.budget is None:
            return super().recv(bufsize, flags)
        self.budget.arm(self)
        data = super().recv(bufsize, flags)
        self.budget.received += len(data)
        return data

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        if self.budget is not None:
            self.budget.arm(self)  # sendall's timeout covers the whole call
        super().sendall(data, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS counterpart of :class:`_DeadlineSocket` (via ``SSLContext.sslsocket_class``)."""

    budget: _Budget | None = None

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        if self.budget is None:
            return super().recv_into(buffer, nbytes, flags)
        self.budget.arm(self)
        count = super().recv_into(buffer, nbytes, flags)
        self.budget.received += count
        return count

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if self.budget is None:
            return super().recv(buflen, flags)
        self.budget.arm(self)
        data = super().recv(buflen, flags)
        self.budget.received += len(data)
        return data

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        if self.budget is not None:
            self.budget.arm(self)
        super().sendall(data, flags)


def _call_with_alarm(fn: Callable[[], _T], budget: _Budget) -> _T:
    """Run *fn* with SIGALRM armed for the budget's deadline, when signals can be used.

    Signals only work in the main thread (and not on Windows). Elsewhere *fn*
    runs as is and the deadline is kept by the per-operation socket timeouts.
    """
    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        return fn()
    previous_handler = signal.getsignal(signal.SIGALRM)
    if previous_handler is None:  # installed outside Python: could not be put back
        return fn()
    fired = False

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:  # one shot, so the clean-up below can retry safely
            fired = True
            raise _DeadlineReached

    # Pause any timer already running (e.g. pytest-timeout's); re-armed afterwards.
    previous_timer = signal.setitimer(signal.ITIMER_REAL, 0)
    started = time.monotonic()
    try:
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(budget.remaining(), 1e-6))
        return fn()
    finally:
        # The alarm can go off at any bytecode, including in here; it raises
        # at most once, so retrying the (idempotent) clean-up is enough. A late
        # alarm after fn() returned does not change its result.
        while True:
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous_handler)
                break
            except _DeadlineReached:
                continue
        delay, interval = previous_timer
        if delay > 0:
            left = delay - (time.monotonic() - started)
            # A timer that would have expired meanwhile fires now, late rather than never.
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), interval)


# --------------------------------------------------------------------------- probing

_SockAddr = tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]
_AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, _SockAddr]


def _resolve(host: str, port: int, budget: _Budget) -> list[_AddrInfo]:
    try:  # an IP literal needs no lookup
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass
    # getaddrinfo() cannot be interrupted (glibc retries on EINTR) and ignores
    # socket timeouts, so it runs in a daemon thread that we stop waiting for.
    found: list[_AddrInfo] = []
    failed: list[OSError] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name="lifesigns-probe-resolve", daemon=True).start()
    if not done.wait(max(budget.remaining(), 0.0)):
        raise TimeoutError(f"resolving {host!r}")
    if failed:
        raise failed[0]
    return found


def _format_sockaddr(sockaddr: _SockAddr) -> str:
    host, port = str(sockaddr[0]), str(sockaddr[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _ConnectFailed(Exception):
    def __init__(self, host: str, errors: list[tuple[str, OSError]]) -> None:
        super().__init__(host, errors)
        self.host = host
        self.errors = errors


def _open_socket(host: str, addresses: list[_AddrInfo], budget: _Budget) -> _DeadlineSocket:
    errors: list[tuple[str, OSError]] = []
    for family, kind, proto, _canonical, sockaddr in addresses:
        budget.where = _format_sockaddr(sockaddr)
        sock = _DeadlineSocket(family, kind, proto)
        try:
            sock.budget = budget
            budget.arm(sock)
            sock.connect(sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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


class _Connection(http.client.HTTPConnection):
    """``HTTPConnection`` that connects to pre-resolved addresses through deadline sockets."""

    def __init__(
        self,
        target: _Target,
        addresses: list[_AddrInfo],
        budget: _Budget,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(target.host, target.port, timeout=max(budget.remaining(), 1e-3))
        if tls is not None:
            self.default_port = 443  # so the Host header omits ":443"
        self._addresses = addresses
        self._budget = budget
        self._tls = tls

    def connect(self) -> None:
        sys.audit("http.client.connect", self, self.host, self.port)
        self._budget.phase = _CONNECTING
        self.sock = _open_socket(self.host, self._addresses, self._budget)
        if self._tls is None:
            return
        self._budget.phase = _TLS
        wrapped = self._tls.wrap_socket(
            self.sock, server_hostname=self.host, do_handshake_on_connect=False
        )
        self.sock = wrapped
        if isinstance(wrapped, _DeadlineSSLSocket):
            wrapped.budget = self._budget
        self._budget.arm(wrapped)  # the handshake's timeout covers all of it
        wrapped.do_handshake()


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.sslsocket_class = _DeadlineSSLSocket
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Answer:
    __slots__ = ("body", "location", "reason", "status")

    def __init__(self, status: int, reason: str, location: str | None, body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.location = location
        self.body = body


def _exchange(target: _Target, headers: dict[str, str], budget: _Budget) -> _Answer:
    budget.phase = _RESOLVING
    addresses = _resolve(target.host, target.port, budget)
    conn = _Connection(target, addresses, budget, _tls_context() if target.tls else None)
    try:
        conn.connect()
        budget.phase = _SENDING
        conn.request("GET", target.path, headers=headers)
        budget.phase = _HEADERS
        budget.received = 0
        response = conn.getresponse()
        budget.status = response.status
        budget.phase = _BODY
        budget.received = 0
        body = response.read(MAX_BODY_BYTES)
        if len(body) < MAX_BODY_BYTES and response.length:
            # read(amt) returns short, without error, when the server closes early
            raise http.client.IncompleteRead(body, response.length)
        return _Answer(response.status, response.reason, response.getheader("Location"), body)
    finally:
        conn.close()


# --------------------------------------------------------------------------- reporting


def _seconds(value: float) -> str:
    return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"


def _one_line(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_HTML_NOISE = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", re.I | re.S)


def _first_line(body: bytes) -> str:
    """The first non-blank line of *body*; for HTML, of its text (an error page's title)."""
    text = body.decode("utf-8", "replace")
    if text.lstrip().startswith("<"):
        words = _HTML_NOISE.sub("\n", text)
        for line in words.splitlines():
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
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return True
    return False


def _connect_failed(target: _Target, exc: _ConnectFailed) -> str:
    where = ", ".join(address for address, _ in exc.errors)
    # "127.0.0.1:9" for an address, "localhost at [::1]:9, 127.0.0.1:9" for a name
    shown = where if _is_ip_literal(target.host) else f"{target.host} at {where}"
    if all(isinstance(error, ConnectionRefusedError) for _, error in exc.errors):
        return f"failed: connection refused by {shown} (nothing listening?)"
    reason = "; ".join(
        f"{address}: {error.strerror or error or type(error).__name__}"
        for address, error in exc.errors
    )
    return f"failed: cannot connect to {target.display} ({reason})"


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
    reason = f" {_one_line(answer.reason)}" if answer.reason else ""
    return f"failed: {status}{reason} from {url} (empty body){hint}"


def _probe(target: _Target, timeout: float, token: str | None) -> tuple[int, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif target.password is not None or target.username:
        import base64  # only for user:password URLs

        pair = f"{target.username}:{target.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    authenticated = "Authorization" in headers

    budget = _Budget(timeout)
    started = time.perf_counter()
    url = target.display
    try:
        answer = _call_with_alarm(lambda: _exchange(target, headers, budget), budget)
    except (_DeadlineReached, TimeoutError):
        return EXIT_FAILED, _timed_out(target, budget)
    except socket.gaierror as exc:
        reason = f" ({exc.strerror})" if exc.strerror else ""
        return EXIT_FAILED, f'failed: cannot resolve host "{target.host}"{reason}'
    except _ConnectFailed as exc:
        return EXIT_FAILED, _connect_failed(target, exc)
    except ssl.SSLCertVerificationError as exc:
        detail = exc.verify_message or exc.reason or str(exc)
        return EXIT_FAILED, f"failed: TLS certificate of {target.host} not accepted: {detail}"
    except ssl.SSLError as exc:
        detail = exc.reason or str(exc)
        if detail == "WRONG_VERSION_NUMBER":
            detail += " (does the server speak plain http://?)"
        return EXIT_FAILED, f"failed: TLS handshake with {target.host} failed: {detail}"
    except http.client.RemoteDisconnected:
        return EXIT_FAILED, f"failed: {url} closed the connection without answering"
    except http.client.IncompleteRead as exc:
        return EXIT_FAILED, (
            f"failed: {budget.status} from {url}, but the connection closed mid-body "
            f"({len(exc.partial)} bytes read)"
        )
    except http.client.HTTPException as exc:
        detail = _one_line(str(exc)) or type(exc).__name__
        return EXIT_FAILED, f"failed: {url} did not answer in HTTP: {detail}"
    except ConnectionResetError:
        return EXIT_FAILED, f"failed: connection reset by {target.host} while {budget.phase}"
    except OSError as exc:
        detail = exc.strerror or str(exc) or type(exc).__name__
        return EXIT_FAILED, f"failed: {url} while {budget.phase}: {detail}"
    except Exception as exc:  # a probe reports, it does not crash with a traceback
        return EXIT_FAILED, f"failed: {url}: unexpected {type(exc).__name__}: {exc}"
    elapsed_ms = (time.perf_counter() - started) * 1000
    line = _judge(target, answer, elapsed_ms, authenticated)
    return (EXIT_OK if line.startswith("ok:") else EXIT_FAILED), line


def _scrub(line: str, secrets: list[str]) -> str:
    line = mask_url(line)
    for secret in secrets:
        if len(secret) >= 3:  # shorter ones would mangle the message
            line = line.replace(secret, "***")
    return _one_line(line, limit=1000)


def _emit(line: str, out: TextIO) -> None:
    try:
        try:
            print(line, file=out, flush=True)
        except UnicodeEncodeError:  # e.g. a non-UTF-8 locale and a non-ASCII body line
            encoding = getattr(out, "encoding", None) or "ascii"
            print(line.encode(encoding, "backslashreplace").decode(encoding), file=out, flush=True)
    except (BrokenPipeError, ValueError):  # nobody is reading; the exit status still says it
        return


def run(argv: list[str]) -> int:
    """Run ``lifesigns probe`` with *argv* (the words after ``probe``); return the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        target: _Target = args.url
        from_flag = args.token is not None
        token: str | None = args.token if from_flag else os.environ.get(TOKEN_ENV)
        if token and not _header_safe(token):
            source = "--token" if from_flag else TOKEN_ENV
            parser.error(
                f"the token from {source} has characters that cannot go in an HTTP header "
                "(spaces, control characters or non-ASCII)"
            )
    except SystemExit as exc:  # argparse's usage errors and --help
        return (
            exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
        )

    code, line = _probe(target, args.timeout, token or None)
    secrets = [s for s in (token, target.password) if s]
    if code != EXIT_OK:
        _emit(_scrub(line, secrets), sys.stderr)
    elif not args.quiet:
        _emit(_scrub(line, secrets), sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
