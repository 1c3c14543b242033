"""``lifesigns probe``'s own HTTP/1.1 client against exact bytes on a real socket.

``tests/test_probe_cli.py`` covers the behaviour against ``http.server``; here a raw
server answers with the framings a real service or proxy may use (chunked bodies,
``100 Continue``, a body that runs to the close, HTTP/1.0) and records the request bytes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from lifesigns.cli.probe import run


class RawServer:
    """Accepts connections on 127.0.0.1 and answers each with ``self.answer``, then closes."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.answer = b""
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, path: str = "/livez") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                conn.sendall(self.answer)


@pytest.fixture
def raw() -> Iterator[RawServer]:
    server = RawServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.thread.join(timeout=5)
        server.listener.close()


def probe(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_request_bytes(raw: RawServer, capsys: pytest.CaptureFixture[str]) -> None:
    raw.answer = b"HTTP/1.1 204 No Content\r\n\r\n"
    code, out, _ = probe(
        capsys, "--token=tok-7f3a9c1e5b2d4e6f", raw.url("/ready%20z/\u00e9?x=1#frag")
    )
    assert code == 0, out
    request = raw.requests[0].decode("ascii")
    lines = request.split("\r\n")
    assert lines[0] == "GET /ready%20z/%C3%A9?x=1 HTTP/1.1"  # no fragment, UTF-8 escaped
    assert f"Host: 127.0.0.1:{raw.port}" in lines
    assert "Authorization: Bearer tok-7f3a9c1e5b2d4e6f" in lines
    assert "Connection: close" in lines
    assert request.endswith("\r\n\r\n")


def test_chunked_body_first_line_is_reported(
    raw: RawServer, capsys: pytest.CaptureFixture[str]
) -> None:
    raw.answer = (
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"8;ext=1\r\nstarting\r\n5\r\n: db\n\r\n0\r\n\r\n"
    )
    code, _, err = probe(capsys, raw.url())
    assert code == 1
    assert err == f"failed: 503 from {raw.url()}: starting: db\n"


def test_chunked_body_cut_short(raw: RawServer, capsys: pytest.CaptureFixture[str]) -> None:
    raw.answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly six"
    code, _, err = probe(capsys, raw.url())
    assert code == 1
    assert "closed mid-body (8 bytes read)" in err


def test_interim_100_continue_is_skipped(
    raw: RawServer, capsys: pytest.CaptureFixture[str]
) -> None:
    raw.answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    code, out, _ = probe(capsys, raw.url())
    assert code == 0
    assert out.startswith("ok: 200 from ")


def test_http_10_body_until_close(raw: RawServer, capsys: pytest.CaptureFixture[str]) -> None:
    raw.answer = b"HTTP/1.0 500 Internal Server Error\n\nbroken: lifespan failed\n"
    code, _, err = probe(capsys, raw.url())
    assert code == 1
    assert err == f"failed: 500 from {raw.url()}: broken: lifespan failed\n"


def test_bad_content_length_is_not_http(raw: RawServer, capsys: pytest.CaptureFixture[str]) -> None:
    raw.answer = b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\nx"
    code, _, err = probe(capsys, raw.url())
    assert code == 1
    assert "did not answer in HTTP: bad Content-Length 'lots'" in err


def test_headers_cut_short(raw: RawServer, capsys: pytest.CaptureFixture[str]) -> None:
    raw.answer = b"HTTP/1.1 200 OK\r\nContent-Le"
    code, _, err = probe(capsys, raw.url())
    assert code == 1
    assert "did not answer in HTTP: the connection closed in the middle of the headers" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nope", "http://127.0.0.1:1/"], "unrecognized arguments: --nope"),
        (["http://127.0.0.1:1/", "extra"], "unrecognized arguments: extra"),
        (["--timeout"], "argument --timeout: expected one argument"),
        (["--timeout=0", "http://127.0.0.1:1/"], "invalid value '0'"),
        (["http://[::1/"], "has a bad host"),
        (["http://h:8x/"], "has a bad port ('8x' is not a number)"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = probe(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.startswith("lifesigns probe: error: ")
    assert message in err
    assert err.endswith(" (see --help)\n")


def test_token_given_as_flag_is_masked_in_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "tok-7f3a9c1e5b2d4e6f"
    code, _, err = probe(capsys, "--token", secret, "--bogus", f"--x={secret}")
    assert code == 2
    assert secret not in err


def test_double_dash_ends_options(raw: RawServer, capsys: pytest.CaptureFixture[str]) -> None:
    raw.answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert probe(capsys, "-q", "--", raw.url())[:2] == (0, "")
