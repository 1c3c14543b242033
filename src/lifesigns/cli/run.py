"""``lifesigns run [options] -- <server command>``: the agent, outside the server it judges.

It starts the server as its child and, from its own process (which imports neither the
application nor any web framework): serves one side port for every worker, reads each
worker's heartbeat from shared memory, names stalls with py-spy while they last, keeps an
incident file before any worker is replaced, and passes signals on. It exits as the
server exits. See :mod:`lifesigns.agent`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..agent import ENV_DIR

DESCRIPTION = """\
Run a server under the lifesigns agent: one side port for all its workers, stalls named
from outside (py-spy), evidence kept before any frozen worker is replaced.

example:
  lifesigns run --port 9000 -- uvicorn app.main:app --workers 4
  lifesigns run -- gunicorn -w 4 -k uvicorn_worker.UvicornWorker app.main:app

Every option may come from LIFESIGNS_<NAME> (LIFESIGNS_SIDE_PORT, LIFESIGNS_STALL_THRESHOLD,
...); dumps need LIFESIGNS_TOKEN as a bearer token (never put it on the command line)."""


class UsageError(ValueError):
    """A bad option: the message names it, the value and what is allowed."""


def _env(environ: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = environ.get(f"LIFESIGNS_{name}")
    return value if value not in (None, "") else default


def _seconds(option: str, value: str | None, *, low: float, high: float) -> float:
    try:
        number = float(value or "")
    except ValueError:
        raise UsageError(f"{option}={value!r} is not a number of seconds") from None
    if not low <= number <= high:
        raise UsageError(f"{option}={value!r} is out of range; allowed: {low:g} to {high:g} s")
    return number


def _integer(option: str, value: str | None, *, low: int, high: int) -> int:
    try:
        number = int(value or "", 10)
    except ValueError:
        raise UsageError(f"{option}={value!r} is not an integer") from None
    if not low <= number <= high:
        raise UsageError(f"{option}={value!r} is out of range; allowed: {low} to {high}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The ``lifesigns run`` argument parser."""
    p = argparse.ArgumentParser(
        prog="lifesigns run",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", help="side port address (LIFESIGNS_SIDE_HOST; 127.0.0.1)")
    p.add_argument("--port", help="side port (LIFESIGNS_SIDE_PORT; 9000; 0 picks a free one)")
    p.add_argument("--stall-threshold", help="seconds without a heartbeat that make a stall (0.25)")
    p.add_argument(
        "--live-fail-after",
        help="seconds frozen before the worker is replaced, evidence first (10)",
    )
    p.add_argument("--min-ready", help="workers that must be ready for /readyz (default: all)")
    p.add_argument(
        "--incident-dir",
        help="where incident files go (LIFESIGNS_INCIDENT_DIR; $TMPDIR/lifesigns-incidents)",
    )
    p.add_argument("--max-incidents", default="20", help="incident files kept (20)")
    p.add_argument("--max-restarts", default="3", help="replacements allowed per window (3)")
    p.add_argument("--restart-window", default="300", help="the window, in seconds (300)")
    p.add_argument(
        "--cooldown", default="5", help="seconds after a replacement, doubled each time (5)"
    )
    p.add_argument("--dry-run", action="store_true", help="record incidents, replace nothing")
    p.add_argument("--slots", default="64", help="heartbeat slots: most workers at once (64)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the server command")
    return p


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """Run the agent; returns (or ends the process with) the server's exit status."""
    env = dict(os.environ if environ is None else environ)
    parser = build_parser()
    args = parser.parse_args(list(argv))
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.print_usage(sys.stderr)
        print("lifesigns run: no server command; put it after --", file=sys.stderr)
        return 2
    try:
        return _run(args, command, env)
    except UsageError as exc:
        print(f"lifesigns run: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, command: list[str], env: dict[str, str]) -> int:
    from .._secrets import SecretRedactor
    from ..agent.incidents import IncidentWriter
    from ..agent.monitor import AgentSettings, LogRing, Monitor
    from ..agent.process import ServerProcess, exit_like
    from ..agent.server import AgentRouter, SidePortServer
    from ..agent.slots import SlotTable

    host = str(args.host or _env(env, "SIDE_HOST", "127.0.0.1"))
    port = _integer("--port", args.port or _env(env, "SIDE_PORT", "9000"), low=0, high=65535)
    threshold = _seconds(
        "--stall-threshold",
        args.stall_threshold or _env(env, "STALL_THRESHOLD", "0.25"),
        low=0.005,
        high=600,
    )
    live = _seconds(
        "--live-fail-after",
        args.live_fail_after or _env(env, "LIVE_FAIL_AFTER", "10"),
        low=0.01,
        high=86400,
    )
    try:
        settings = AgentSettings(
            stall_threshold=threshold,
            live_fail_after=live,
            min_ready=(
                None
                if args.min_ready is None
                else _integer("--min-ready", args.min_ready, low=0, high=4096)
            ),
            dry_run=args.dry_run,
            max_restarts=_integer("--max-restarts", args.max_restarts, low=0, high=1000),
            restart_window=_seconds("--restart-window", args.restart_window, low=0.001, high=86400),
            cooldown=_seconds("--cooldown", args.cooldown, low=0, high=86400),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    slots = _integer("--slots", args.slots, low=1, high=4096)
    max_incidents = _integer("--max-incidents", args.max_incidents, low=1, high=10000)
    incident_dir = Path(
        args.incident_dir
        or _env(env, "INCIDENT_DIR", None)
        or Path(tempfile.gettempdir()) / "lifesigns-incidents"
    )
    token = _env(env, "TOKEN", None)

    logger = logging.getLogger("lifesigns.agent")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    ring = LogRing()
    logger.addHandler(to_stderr)
    logger.addHandler(ring)

    shm = Path("/dev/shm")  # noqa: S108 -- tmpfs: the slots stay in memory; mkdtemp is private
    runtime = Path(
        tempfile.mkdtemp(
            prefix="lifesigns-agent-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        )
    )
    table = SlotTable.create(runtime / "slots", slots)
    redactor = SecretRedactor([token] if token else [])
    incidents = IncidentWriter(incident_dir, redact=redactor.redact, max_files=max_incidents)
    child_env = {**env, ENV_DIR: str(runtime)}
    child_env.pop("LIFESIGNS_SIDE_PORT", None)  # the agent owns the side port
    child_env.setdefault("LIFESIGNS_STALL_THRESHOLD", str(threshold))
    child_env.setdefault("LIFESIGNS_LIVE_FAIL_AFTER", str(live))
    server = ServerProcess(command, child_env)
    monitor = Monitor(
        table,
        settings,
        runtime_dir=runtime,
        incidents=incidents,
        server_pid=lambda: server.pid,
        log_ring=ring,
    )
    side = SidePortServer(
        AgentRouter(monitor, token=token, incidents=incidents, redactor=redactor), host, port
    )
    try:
        side.bind()
    except OSError as exc:
        shutil.rmtree(runtime, ignore_errors=True)
        raise UsageError(f"cannot bind the side port {host}:{port}: {exc}") from None
    server.install_forwarding()
    try:
        server.start()
    except OSError as exc:
        side.stop()
        shutil.rmtree(runtime, ignore_errors=True)
        print(f"lifesigns run: cannot start {command[0]!r}: {exc}", file=sys.stderr)
        return 127
    side.start()
    monitor.start()
    logger.info(
        "lifesigns agent %d: side port on http://%s:%d for server pid %d (%s); "
        "stall_threshold=%g s, live_fail_after=%g s, incidents in %s%s",
        os.getpid(),
        host,
        side.port,
        server.pid,
        " ".join(command),
        threshold,
        live,
        incident_dir,
        " (dry run)" if settings.dry_run else "",
    )
    try:
        returncode = server.wait()
    finally:
        monitor.stop()
        side.stop()
        server.kill_leftovers()
        table.close()
        shutil.rmtree(runtime, ignore_errors=True)
    logger.info("lifesigns agent: the server exited with %d", returncode)
    return exit_like(returncode)
