"""Many concurrent HTTP requests, fast: raw asyncio sockets, one request per connection.

httpx's connection pool is far too slow to open a thousand connections at once (tens of
seconds here), which would measure the client rather than the server. This speaks just
enough HTTP/1.1 for probes and small endpoints.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """One response: its status code, the time it took, and its body."""

    status: int
    seconds: float
    body: bytes


async def request(host: str, port: int, path: str, timeout: float = 30.0) -> Answer:
    """``GET path`` over a new connection; a connection error or timeout gives status 0."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                raw = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return Answer(0, time.monotonic() - started, b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 else 0
    return Answer(status, time.monotonic() - started, body)


async def flood(host: str, port: int, path: str, count: int, timeout: float = 30.0) -> list[Answer]:
    """Send ``count`` requests for ``path`` all at once, each on its own connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if soft < wanted and (hard == resource.RLIM_INFINITY or hard >= wanted):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return list(await asyncio.gather(*(request(host, port, path, timeout) for _ in range(count))))
