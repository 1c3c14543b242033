"""``lifesigns demo``: the demo service and its incident lab, watched by lifesigns.

By default the demo runs as production services should: two uvicorn workers under the
agent (``lifesigns run``), which owns the side port for both and names stalls from outside
the process. ``--workers 1`` runs one worker in this process instead, with lifesigns' own
side port. The database is an SQLite file unless ``--database-url`` names another; a few
incidents of the lab need PostgreSQL (``lifesigns lab --list`` says which).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import NoReturn


def default_database_url() -> str:
    """An SQLite file in the temporary folder: nothing to install, nothing left in the work tree."""
    return f"sqlite+aiosqlite:///{Path(tempfile.gettempdir()) / 'lifesigns-demo.sqlite3'}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lifesigns demo",
        description="Run the demo service (an orders API and the incident lab) with lifesigns.",
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
        "--side-port",
        type=int,
        default=None,
        help="port of the out-of-band server (default --port + 1; 0: none)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="uvicorn workers (default 2, under the agent `lifesigns run`; 1: in this process)",
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
    if not 1 <= args.workers <= 16:
        print(f"lifesigns demo: --workers {args.workers} is not allowed; use 1-16", file=sys.stderr)
        return 2
    if args.workers > 1 and not side_port:
        print(
            "lifesigns demo: --side-port 0 needs --workers 1 (the agent's side port is the "
            "out-of-band truth for several workers)",
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
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base = f"http://{host}:{args.port}"
    side_base = f"http://{host}:{side_port}"
    shape = (
        f"{args.workers} uvicorn workers under the agent (lifesigns run)"
        if args.workers > 1
        else "one uvicorn worker in this process"
    )
    side = (
        [
            f"  side port  {side_base}/livez   (answers while a worker is frozen)",
            f"  metrics    {side_base}/metrics",
            f"  live page  {side_base}/lifesigns/   (with the token above)",
        ]
        if side_port
        else []
    )
    print(
        "\n".join(
            [
                f"lifesigns demo: an orders service watched by lifesigns, {shape}",
                f"  database   {mask_url(database_url)}",
                f"  service    {base}/orders      (POST /orders to add one)",
                f"  liveness   {base}/livez",
                f"  readiness  {base}/readyz?verbose",
                f"  start-up   {base}/startupz?verbose",
                f"  health     {base}/health",
                f"  details    curl -H 'Authorization: Bearer {token}' {base}/health",
                *side,
                f"  incidents  uv run lifesigns lab --list --url {base}",
                "",
            ]
        ),
        flush=True,
    )
    if args.workers > 1:
        return _under_the_agent(args, token, database_url, base, side_port)
    app = create_app(
        database_url=database_url, token=token, side_port=side_port or None, base_url=base
    )
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on")
    return 0


def _under_the_agent(
    args: argparse.Namespace, token: str, database_url: str, base: str, side_port: int
) -> NoReturn:
    """Become the agent running ``uvicorn --workers N`` (exec: this never returns)."""
    env = {
        **os.environ,
        "LIFESIGNS_TOKEN": token,
        "LIFESIGNS_SERVICE": "orders-demo",  # the agent's name for the service, as the workers'
        "LIFESIGNS_DEMO_DATABASE_URL": database_url,
        "LIFESIGNS_DEMO_BASE_URL": base,
    }
    command = [
        sys.executable,
        "-m",
        "lifesigns",
        "run",
        "--host",
        args.host,
        "--port",
        str(side_port),
        "--",
        sys.executable,
        "-m",
        "uvicorn",
        "lifesigns.lab.app:app_from_env",
        "--factory",
        "--workers",
        str(args.workers),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--log-level",
        args.log_level,
    ]
    # exec, not a child: Ctrl-C and SIGTERM reach the agent, which passes them on.
    os.execve(sys.executable, command, env)  # noqa: S606 - our own interpreter and arguments
