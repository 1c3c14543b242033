"""The ``lifesigns`` command: ``probe``, ``demo`` and ``run``.

Only the standard library is imported until a subcommand is chosen, so that
``lifesigns probe`` (run by a Docker HEALTHCHECK every few seconds) starts quickly.
"""

from __future__ import annotations

import sys

USAGE = """usage: lifesigns COMMAND [options]

commands:
  probe URL [--timeout S]   exit 0 if URL answers 2xx within S seconds, else 1 (Docker HEALTHCHECK)
  demo [--port N]           run the demo service with lifesigns on an embedded SQLite database
  run [options] -- CMD      run server CMD under the lifesigns agent (one side port, stalls named)

`lifesigns COMMAND --help` tells more."""


def main(argv: list[str] | None = None) -> None:
    """Run the command named by ``argv[0]`` (default: the process arguments)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        raise SystemExit(0 if args else 2)
    if args[0] in ("-V", "--version"):
        from lifesigns import __version__

        print(f"lifesigns {__version__}")
        raise SystemExit(0)
    command, rest = args[0], args[1:]
    if command == "probe":
        from .probe import run

        raise SystemExit(run(rest))
    if command == "run":
        from .run import main as run_agent

        raise SystemExit(run_agent(rest))
    if command == "demo":
        from .demo import run as run_demo

        raise SystemExit(run_demo(rest))
    print(
        f"lifesigns: unknown command {command!r}; commands: probe, demo, run\n\n{USAGE}",
        file=sys.stderr,
    )
    raise SystemExit(2)
