"""``lifesigns probe`` against real sockets on 127.0.0.1 (no mocks).

Every server here lives in a fixture and is bounded: handlers that hang on
purpose wait on an event that the fixture sets at teardown (and never longer
than ``HANG_LIMIT``), so a failing test cannot leave a thread behind.
"""

from __future__ import annotations

import base64
import http.server
import itertools
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lifesigns.cli import probe
from lifesigns.cli.probe import run

HANG_LIMIT = 20.0  # seconds a deliberately hanging handler may live at most
TRICKLE_EVERY = 0.3  # seconds between two bytes of the trickling server
SLACK = 0.5  # how late after its deadline a probe may return
TOKEN = "tok-7f3a9c1e5b"
PASSWORD = "hunter2-secret"
STALL_LINE = "loop stalled 12.4 s in app/x.py:88"
NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


class Server:
    """A small threaded HTTP server with routes that misbehave in specific ways."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.scheme = "https" if tls else "http"
        self.stop = threading.Event()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.trickled = 0
        self.alarm_while_hanging: float | None = None
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                state.requests.append((self.path, dict(self.headers.items())))
                route = getattr(self, "route_" + self.path.strip("/").split("?")[0], None)
                if route is None:
                    self.answer(404, b"no such route\n")
                else:
                    route()

            def answer(self, status: int, body: bytes, **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(body)

            def route_livez(self) -> None:
                self.answer(200, b'{"status": "up"}\n', Content_Type="application/json")

            def route_stalled(self) -> None:
                self.answer(503, f"{STALL_LINE}\nTraceback (most recent call last):\n".encode())

            def route_empty503(self) -> None:
                self.answer(503, b"")

            def route_nginx(self) -> None:
                self.answer(502, NGINX_502, Content_Type="text/html")

            def route_long(self) -> None:
                self.answer(500, b"x" * 5000 + b"\nsecond line\n")

            def route_redirect(self) -> None:
                self.answer(302, b"", Location="/livez")

            def route_whoami(self) -> None:  # a server that echoes credentials back
                auth = self.headers.get("Authorization", "")
                self.answer(403, f"credentials {auth!r} are not allowed here\n".encode())

            def route_hang(self) -> None:  # reads the request, never answers
                # What the probe's process has armed while it waits for us.
                state.alarm_while_hanging = signal.getitimer(signal.ITIMER_REAL)[0]
                state.stop.wait(HANG_LIMIT)

            def route_trickle(self) -> None:  # one header byte every 0.3 s, forever
                pieces = itertools.chain(b"HTTP/1.1 200 OK\r\n", itertools.cycle(b"X-Slow: a\r\n"))
                deadline = time.monotonic() + HANG_LIMIT
                for byte in pieces:
                    try:
                        self.wfile.write(bytes([byte]))
                    except OSError:  # the probe hung up, as it should
                        return
                    state.trickled += 1
                    if state.stop.wait(TRICKLE_EVERY) or time.monotonic() > deadline:
                        return

            def route_bigstall(self) -> None:  # 10 MiB announced, 68 KiB sent, then silence
                self.send_response(200)
                self.send_header("Content-Length", str(10 * 1024 * 1024))
                self.end_headers()
                self.wfile.write(b"y" * (probe.MAX_BODY_BYTES + 4096))
                state.stop.wait(HANG_LIMIT)

            def route_short(self) -> None:  # promises 1000 bytes, sends 10, closes
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"0123456789")
                self.close_connection = True

            def route_hangup(self) -> None:  # closes without a word
                self.close_connection = True

            def route_garbage(self) -> None:
                self.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n")
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str, userinfo: str = "") -> str:
        return f"{self.scheme}://{userinfo}127.0.0.1:{self.port}{path}"

    def auth_headers(self) -> list[str]:
        return [headers.get("Authorization", "") for _, headers in self.requests]


def _serve(srv: Server) -> Iterator[Server]:
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.stop.set()
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[Server]:
    yield from _serve(Server())


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    """A self-signed certificate (and key, same file) for 127.0.0.1, made by openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    pem = tmp_path / "localhost.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(pem), "-out", str(pem)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return pem


@pytest.fixture
def tls_server(certificate: Path) -> Iterator[Server]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate)
    yield from _serve(Server(tls=context))


@pytest.fixture
def backlog_url() -> Iterator[str]:
    """A port whose kernel completes the TCP handshake, but nobody ever calls accept()."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/livez"
    finally:
        listener.close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


Invoke = Callable[..., tuple[int, str, str, float]]


@pytest.fixture
def invoke(capsys: pytest.CaptureFixture[str]) -> Invoke:
    """Run ``run(argv)``, in this (main) thread or in a worker; return code, out, err, seconds."""

    def call(*argv: str, in_thread: bool = False) -> tuple[int, str, str, float]:
        capsys.readouterr()
        codes: list[int] = []
        started = time.monotonic()
        if in_thread:
            worker = threading.Thread(target=lambda: codes.append(run(list(argv))), daemon=True)
            worker.start()
            worker.join(timeout=probe.MAX_TIMEOUT)
            assert not worker.is_alive()
        else:
            codes.append(run(list(argv)))
        elapsed = time.monotonic() - started
        out, err = capsys.readouterr()
        assert (out + err).count("\n") <= 1, "more than one line of output"
        return codes[0], out, err, elapsed

    return call


# ---------------------------------------------------------------- answers


def test_2xx_is_ok_with_one_line_on_stdout(server: Server, invoke: Invoke) -> None:
    code, out, err, _ = invoke(server.url("/livez"))
    assert code == 0
    assert re.fullmatch(rf"ok: 200 from {re.escape(server.url('/livez'))} in \d+ ms\n", out)
    assert err == ""
    path, headers = server.requests[0]
    assert path == "/livez"
    assert headers["User-Agent"] == probe.USER_AGENT
    assert "Authorization" not in headers


def test_quiet_prints_nothing_on_success(server: Server, invoke: Invoke) -> None:
    assert invoke("--quiet", server.url("/livez"))[:3] == (0, "", "")


def test_quiet_still_explains_a_failure(server: Server, invoke: Invoke) -> None:
    code, out, err, _ = invoke("-q", server.url("/stalled"))
    assert (code, out) == (1, "")
    assert STALL_LINE in err


def test_503_fails_with_the_first_line_of_the_body(server: Server, invoke: Invoke) -> None:
    code, out, err, _ = invoke(server.url("/stalled"))
    assert code == 1
    assert out == ""
    assert err == f"failed: 503 from {server.url('/stalled')}: {STALL_LINE}\n"


def test_503_without_body_says_so(server: Server, invoke: Invoke) -> None:
    code, _, err, _ = invoke(server.url("/empty503"))
    assert code == 1
    assert err.startswith("failed: 503 Service Unavailable from ")
    assert "(empty body)" in err


def test_html_error_page_is_reduced_to_its_text(server: Server, invoke: Invoke) -> None:
    code, _, err, _ = invoke(server.url("/nginx"))
    assert code == 1
    assert err == f"failed: 502 from {server.url('/nginx')}: 502 Bad Gateway\n"


def test_long_first_line_is_trimmed_to_200_chars(server: Server, invoke: Invoke) -> None:
    code, _, err, _ = invoke(server.url("/long"))
    assert code == 1
    detail = err.rstrip("\n").split(": ", 2)[2]
    assert len(detail) == probe.MAX_DETAIL_CHARS
    assert detail.endswith("...")
    assert "second line" not in err


def test_redirect_is_a_failure_and_not_followed(server: Server, invoke: Invoke) -> None:
    code, _, err, _ = invoke(server.url("/redirect"))
    assert code == 1
    assert "302" in err
    assert "redirect to /livez" in err
    assert "not followed" in err
    assert [path for path, _ in server.requests] == ["/redirect"]


def test_body_read_stops_at_64_kib(server: Server, invoke: Invoke) -> None:
    # The server sends 68 KiB of a promised 10 MiB and then stalls: a probe that
    # read past 64 KiB would hit its deadline and fail.
    code, out, err, _ = invoke("--timeout", "5", server.url("/bigstall"))
    assert (code, err) == (0, "")
    assert out.startswith("ok: 200 from ")


def test_body_cut_short_is_a_failure(server: Server, invoke: Invoke) -> None:
    code, _, err, _ = invoke(server.url("/short"))
    assert code == 1
    assert "closed mid-body" in err
    assert "10 bytes" in err


def test_server_hanging_up_without_answer(server: Server, invoke: Invoke) -> None:
    code, _, err, _ = invoke(server.url("/hangup"))
    assert code == 1
    assert "closed the connection without answering" in err


def test_server_not_speaking_http(server: Server, invoke: Invoke) -> None:
    code, _, err, _ = invoke(server.url("/garbage"))
    assert code == 1
    assert "did not answer in HTTP" in err


# ---------------------------------------------------------------- no answer


def test_closed_port_is_refused_and_named(closed_port: int, invoke: Invoke) -> None:
    code, out, err, _ = invoke(f"http://127.0.0.1:{closed_port}/livez")
    assert (code, out) == (1, "")
    assert err == f"failed: connection refused by 127.0.0.1:{closed_port} (nothing listening?)\n"


@pytest.mark.parametrize("in_thread", [False, True], ids=["main-thread", "worker-thread"])
def test_server_that_never_answers_is_cut_at_the_deadline(
    server: Server, invoke: Invoke, in_thread: bool
) -> None:
    code, _, err, elapsed = invoke("--timeout", "1", server.url("/hang"), in_thread=in_thread)
    assert code == 1
    assert 1.0 <= elapsed < 1.0 + SLACK
    assert err.startswith(f"failed: no answer from {server.url('/hang')} within 1.0 s (timed out")
    assert "not one byte came back" in err
    if not in_thread:  # the main thread also arms SIGALRM for the deadline
        assert server.alarm_while_hanging is not None
        assert 0 < server.alarm_while_hanging <= 1.0


def test_port_that_never_accepts_is_cut_at_the_deadline(backlog_url: str, invoke: Invoke) -> None:
    # What a blocked event loop looks like from outside: the kernel accepts
    # the connection, the application never reads it.
    code, _, err, elapsed = invoke("--timeout", "0.8", backlog_url)
    assert code == 1
    assert 0.8 <= elapsed < 0.8 + SLACK
    assert "within 0.8 s (timed out" in err


@pytest.mark.parametrize("in_thread", [False, True], ids=["main-thread", "worker-thread"])
def test_trickling_server_is_cut_at_the_deadline(
    server: Server, invoke: Invoke, in_thread: bool
) -> None:
    # Each byte arrives well within any per-read timeout; only a deadline for
    # the whole probe stops this.
    code, _, err, elapsed = invoke("--timeout", "1.2", server.url("/trickle"), in_thread=in_thread)
    assert code == 1
    assert 1.2 <= elapsed < 1.2 + SLACK
    assert server.trickled >= 3
    assert "within 1.2 s (timed out: only " in err
    assert "bytes of status line and headers came back" in err


def test_tls_handshake_that_never_happens_is_cut_at_the_deadline(
    backlog_url: str, invoke: Invoke
) -> None:
    code, _, err, elapsed = invoke("--timeout", "0.8", backlog_url.replace("http:", "https:"))
    assert code == 1
    assert 0.8 <= elapsed < 0.8 + SLACK
    assert "(timed out: in the TLS handshake with 127.0.0.1:" in err


def test_https_with_a_trusted_certificate(
    tls_server: Server, certificate: Path, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))  # read by the default SSL context
    code, out, err, _ = invoke(tls_server.url("/livez"))
    assert (code, err) == (0, "")
    assert out.startswith(f"ok: 200 from https://127.0.0.1:{tls_server.port}/livez in ")
    code, _, err, _ = invoke(tls_server.url("/stalled"))
    assert code == 1
    assert STALL_LINE in err


def test_https_with_an_untrusted_certificate(tls_server: Server, invoke: Invoke) -> None:
    code, _, err, _ = invoke(tls_server.url("/livez"))
    assert code == 1
    assert "failed: TLS certificate of 127.0.0.1 not accepted: " in err
    assert tls_server.requests == []


def test_unresolvable_host_names_the_host(invoke: Invoke) -> None:
    # Either the resolver says no, or it does not answer within the deadline.
    code, _, err, elapsed = invoke("--timeout", "2", "http://nohost.invalid/livez")
    assert code == 1
    assert elapsed < 2 + SLACK
    assert err.startswith('failed: cannot resolve host "nohost.invalid"')


def test_previous_alarm_handler_and_timer_are_restored(server: Server, invoke: Invoke) -> None:
    fired: list[int] = []

    def handler(signum: int, frame: object) -> None:
        fired.append(signum)

    outer_handler = signal.signal(signal.SIGALRM, handler)
    outer_timer = signal.setitimer(signal.ITIMER_REAL, 60)
    try:
        assert invoke("--timeout", "0.5", server.url("/hang"))[0] == 1
        assert signal.getsignal(signal.SIGALRM) is handler
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 55 < remaining <= 60
        assert fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_timer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *outer_timer)


# ---------------------------------------------------------------- usage errors


@pytest.mark.parametrize("value", ["-1", "0", "abc", "301", "nan", "inf", "1e9", ""])
def test_bad_timeout_is_a_usage_error_naming_value_and_range(invoke: Invoke, value: str) -> None:
    code, out, err, _ = invoke("--timeout", value, "http://127.0.0.1:1/livez")
    assert (code, out) == (2, "")
    assert f"invalid value {value!r}" in err
    assert "more than 0 and at most 300" in err


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://127.0.0.1/livez", "is not an http:// or https:// URL"),
        ("file:///etc/passwd", "is not an http:// or https:// URL"),
        ("localhost:8000/livez", "is not an http:// or https:// URL"),
        ("127.0.0.1:8000/livez", "is not an http:// or https:// URL"),
        ("/livez", "is not an http:// or https:// URL"),
        ("http:///livez", "has no host"),
        ("http://127.0.0.1:99999/livez", "has a bad port"),
        ("http://127.0.0.1/a b", "contains spaces"),
    ],
)
def test_non_http_url_is_a_usage_error(invoke: Invoke, url: str, why: str) -> None:
    code, out, err, _ = invoke(url)
    assert (code, out) == (2, "")
    assert repr(url) in err
    assert why in err


def test_missing_url_is_a_usage_error(invoke: Invoke) -> None:
    assert invoke()[0] == 2


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    assert "HEALTHCHECK" in capsys.readouterr().out


# ---------------------------------------------------------------- secrets


def test_token_is_sent_as_bearer_and_never_printed(server: Server, invoke: Invoke) -> None:
    code, out, err, _ = invoke("--token", TOKEN, server.url("/livez"))
    assert code == 0
    assert server.auth_headers() == [f"Bearer {TOKEN}"]
    assert TOKEN not in out + err


def test_token_comes_from_the_environment(
    server: Server, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(probe.TOKEN_ENV, TOKEN)
    assert invoke(server.url("/livez"))[0] == 0
    assert invoke("--token", "flag-wins", server.url("/livez"))[0] == 0
    assert server.auth_headers() == [f"Bearer {TOKEN}", "Bearer flag-wins"]


def test_token_echoed_by_the_server_is_not_printed(server: Server, invoke: Invoke) -> None:
    code, _, err, _ = invoke("--token", TOKEN, server.url("/whoami"))
    assert code == 1
    assert "403" in err
    assert TOKEN not in err
    assert "Bearer ***" in err


def test_token_with_line_break_is_a_usage_error(invoke: Invoke) -> None:
    bad = TOKEN + "\r\nX-Evil: 1"
    code, _, err, _ = invoke("--token", bad, "http://127.0.0.1:1/livez")
    assert code == 2
    assert "--token" in err
    assert TOKEN not in err


def test_password_in_url_is_masked_and_sent_as_basic_auth(server: Server, invoke: Invoke) -> None:
    url = server.url("/stalled", userinfo=f"admin:{PASSWORD}@")
    code, _, err, _ = invoke(url)
    assert code == 1
    assert f"from http://admin:***@127.0.0.1:{server.port}/stalled: {STALL_LINE}" in err
    assert PASSWORD not in err
    expected = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    assert server.auth_headers() == [f"Basic {expected}"]


def test_password_is_masked_in_usage_errors_too(invoke: Invoke) -> None:
    code, _, err, _ = invoke(f"ftp://admin:{PASSWORD}@127.0.0.1/x")
    assert code == 2
    assert "ftp://admin:***@127.0.0.1/x" in err
    assert PASSWORD not in err


def test_mask_url() -> None:
    assert probe.mask_url("http://u:p@h/x") == "http://u:***@h/x"
    assert probe.mask_url("see https://u:p@ss@h:1/x?y") == "see https://u:***@h:1/x?y"
    assert probe.mask_url("http://u@h/x") == "http://u@h/x"
    assert probe.mask_url("http://h/x?a=b:c@d") == "http://h/x?a=b:c@d"


# ---------------------------------------------------------------- real processes


def _probe_command() -> list[str]:
    """The installed ``lifesigns probe`` console script (or the same entry point via -c)."""
    script = Path(sys.executable).parent / "lifesigns"
    if script.exists():
        return [str(script), "probe"]
    run_probe = "from lifesigns.cli.probe import run; import sys; sys.exit(run(sys.argv[1:]))"
    return [sys.executable, "-c", run_probe]


def test_subprocess_probe_ok_and_failed(server: Server) -> None:
    ok = subprocess.run(
        [*_probe_command(), server.url("/livez")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"ok: 200 from {server.url('/livez')} in ")
    assert ok.stderr == ""

    failed = subprocess.run(
        [*_probe_command(), "--timeout", "1", server.url("/trickle")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "timed out" in failed.stderr
    assert failed.stderr.count("\n") == 1


def test_import_pulls_in_only_the_standard_library() -> None:
    script = "import sys, lifesigns.cli.probe; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    modules = set(done.stdout.split())
    heavy = {
        m for m in modules if m.split(".")[0] in {"sqlalchemy", "prometheus_client", "tenacity"}
    }
    assert heavy == set()
    ours = {m for m in modules if m.split(".")[0] == "lifesigns"}
    # The one masker and the error base class, nothing else of lifesigns.
    assert ours <= {
        "lifesigns",
        "lifesigns.cli",
        "lifesigns.cli.probe",
        "lifesigns._secrets",
        "lifesigns.errors",
    }
    # What made the probe cost 9x curl's start-up (http.client pulls in email and ssl).
    slow = {"http.client", "email", "ssl", "argparse", "typing", "enum", "re", "urllib"}
    assert {m for m in modules if m.split(".")[0] in slow or m in slow} == set()
