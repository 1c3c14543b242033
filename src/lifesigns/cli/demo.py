"""``lifesigns demo``: the demo service, with lifesigns wired in, on SQLite by default."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import tempfile
from pathlib import Path


def default_database_url() -> str:
    """An SQLite file in the temporary folder: nothing to install, nothing left in the work tree."""
    return f"sqlite+aiosqlite:///{Path(tempfile.gettempdir()) / 'lifesigns-demo.sqlite3'}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lifesigns demo",
        description="Run the demo service (an orders API) with lifesigns' probes and metrics.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("LIFESIGNS_DEMO_DATABASE_URL") or None,
        help="SQLAlchemy URL, e.g. postgresql+asyncpg://user:pw@host/db "
        "(default: an SQLite file in the temporary folder)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("LIFESIGNS_TOKEN") or None,
        help="bearer token for details and dumps (default: a fresh random one, printed at start)",
    )
    parser.add_argument(
        "--side-port", type=int, default=None, help="port of the out-of-band server"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser


def run(argv: list[str]) -> int:
    """Parse ``argv``, print where everything is, and serve until interrupted."""
    args = _parser().parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"lifesigns demo: --port {args.port} is not a port; use 1-65535", file=sys.stderr)
        return 2
    side_port = args.port + 1 if args.side_port is None else args.side_port
    if not 0 <= side_port < 65536 or side_port == args.port:
        print(
            f"lifesigns demo: --side-port {side_port} is not usable; use 1-65535 other than "
            f"--port, or 0 to switch it off",
            file=sys.stderr,
        )
        return 2
    try:
        import uvicorn

        from lifesigns.lab.app import create_app
    except ImportError as error:
        print(
            f"lifesigns demo needs the demo extras ({error.name} is missing): "
            "pip install 'lifesigns[demo]'",
            file=sys.stderr,
        )
        return 2
    from lifesigns._secrets import mask_url

    token = args.token or secrets.token_urlsafe(24)
    database_url = args.database_url or default_database_url()
    app = create_app(database_url=database_url, token=token, side_port=side_port or None)
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base = f"http://{host}:{args.port}"
    side = (
        [
            f"  side port  http://{host}:{side_port}/livez   (answers while the loop is frozen)",
            f"  freeze it  curl '{base}/lab/freeze?seconds=3'  (time.sleep in an async def)",
        ]
        if side_port
        else []
    )
    print(
        "\n".join(
            [
                "lifesigns demo: an orders service watched by lifesigns",
                f"  database   {mask_url(database_url)}",
                f"  service    {base}/orders      (POST /orders to add one)",
                f"  liveness   {base}/livez",
                f"  readiness  {base}/readyz?verbose",
                f"  start-up   {base}/startupz?verbose",
                f"  health     {base}/health",
                *(
                    [f"  metrics    http://{host}:{side_port}/metrics   (side port only)"]
                    if side_port
                    else []
                ),
                f"  details    curl -H 'Authorization: Bearer {token}' {base}/health",
                *side,
                "",
            ]
        ),
        flush=True,
    )
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on")
    return 0
