"""The ``lifesigns`` command: ``probe``, ``run``, ``demo``, ``lab``, ``doctor`` and ``rules``.

Only the standard library is imported until a subcommand is chosen, so that
``lifesigns probe`` (run by a Docker HEALTHCHECK every few seconds) starts quickly.
"""

from __future__ import annotations

import sys

USAGE = """usage: lifesigns COMMAND [options]

commands:
  probe URL [--timeout S]   exit 0 if URL answers 2xx within S seconds, else 1 (Docker HEALTHCHECK)
  run [options] -- CMD      run server CMD under the lifesigns agent (one side port, stalls named)
  demo [--port N]           run the demo service with lifesigns on an embedded SQLite database
  lab [INCIDENT] [--list]   trigger one of the seeds' incidents on a running demo
  rules [--dashboard]       print the Prometheus alert rules (or the Grafana dashboard)
  doctor [PATH...]          find the incident anti-patterns in code, Dockerfiles, manifests, scripts

`lifesigns COMMAND --help` tells more."""

COMMANDS = {
    "probe": "probe",
    "demo": "demo",
    "run": "run",
    "lab": "lab",
    "rules": "rules",
    "doctor": "doctor",
}
"""Each command and the module of ``lifesigns.cli`` whose ``run(argv) -> int`` serves it."""


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
    module = COMMANDS.get(command)
    if module is None:
        print(
            f"lifesigns: unknown command {command!r}; commands: {', '.join(COMMANDS)}\n\n{USAGE}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    # __import__ rather than importlib: the probe's start-up counts every module.
    chosen = __import__(f"{__name__}.{module}", fromlist=["run"])
    raise SystemExit(chosen.run(rest))
