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
from ..errors import LifesignsError

DESCRIPTION = """\
Run a server under the lifesigns agent: one side port for all its workers, stalls named
from outside (py-spy), evidence kept before any frozen worker is replaced.

example:
  lifesigns run --port 9000 -- uvicorn app.main:app --workers 4
  lifesigns run -- gunicorn -w 4 -k uvicorn_worker.UvicornWorker app.main:app

Every option may come from the environment: --host and --port from LIFESIGNS_SIDE_HOST and
LIFESIGNS_SIDE_PORT, the others from LIFESIGNS_ and the option's name (--max-restarts:
LIFESIGNS_MAX_RESTARTS; --dry-run: LIFESIGNS_DRY_RUN=1); a flag wins. Dumps need
LIFESIGNS_TOKEN as a bearer token (never put it on the command line)."""


class UsageError(LifesignsError, ValueError):
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
    p.add_argument("--max-incidents", help="incident files kept (20)")
    p.add_argument("--max-restarts", help="replacements allowed per window (3)")
    p.add_argument("--restart-window", help="the window, in seconds (300)")
    p.add_argument("--cooldown", help="seconds after a replacement, doubled each time (5)")
    p.add_argument("--dry-run", action="store_true", help="record incidents, replace nothing")
    p.add_argument("--slots", help="heartbeat slots: most workers at once (64)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the server command")
    return p


def run(argv: Sequence[str]) -> int:
    """``lifesigns run ARGS``: the command's entry point (see :func:`main`)."""
    return main(argv)


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


def _pick(
    given: str | None, env: Mapping[str, str], flag: str, name: str, default: str | None
) -> tuple[str, str | None]:
    """The value of an option and where it came from (the flag, or ``LIFESIGNS_<NAME>``)."""
    if given is not None:
        return flag, given
    from_env = _env(env, name, None)
    if from_env is not None:
        return f"LIFESIGNS_{name}", from_env
    return flag, default


def _run(args: argparse.Namespace, command: list[str], env: dict[str, str]) -> int:
    from .. import _logging
    from .._config import Settings
    from .._secrets import SecretRedactor
    from ..agent import sampler
    from ..agent.incidents import IncidentWriter
    from ..agent.monitor import AgentSettings, LogRing, Monitor
    from ..agent.process import ServerProcess, exit_like
    from ..agent.server import AgentHost, AgentSidePort
    from ..agent.slots import SlotTable
    from ..errors import ConfigError

    def seconds(flag: str, name: str, default: str, low: float, high: float) -> float:
        where, value = _pick(getattr(args, flag[2:].replace("-", "_")), env, flag, name, default)
        return _seconds(where, value, low=low, high=high)

    def integer(flag: str, name: str, default: str | None, low: int, high: int) -> int | None:
        where, value = _pick(getattr(args, flag[2:].replace("-", "_")), env, flag, name, default)
        return None if value is None else _integer(where, value, low=low, high=high)

    host = _pick(args.host, env, "--host", "SIDE_HOST", "127.0.0.1")[1] or "127.0.0.1"
    port = integer("--port", "SIDE_PORT", "9000", 0, 65535) or 0
    threshold = seconds("--stall-threshold", "STALL_THRESHOLD", "0.25", 0.005, 600)
    live = seconds("--live-fail-after", "LIVE_FAIL_AFTER", "10", 0.01, 86400)
    dry_where, dry = _pick("1" if args.dry_run else None, env, "--dry-run", "DRY_RUN", "0")
    if (dry or "").lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise UsageError(f"{dry_where}={dry!r} is not a boolean; allowed: 1/0, true/false")
    try:
        settings = AgentSettings(
            stall_threshold=threshold,
            live_fail_after=live,
            min_ready=integer("--min-ready", "MIN_READY", None, 0, 4096),
            dry_run=(dry or "").lower() in ("1", "true", "yes", "on"),
            max_restarts=integer("--max-restarts", "MAX_RESTARTS", "3", 0, 1000) or 0,
            restart_window=seconds("--restart-window", "RESTART_WINDOW", "300", 0.001, 86400),
            cooldown=seconds("--cooldown", "COOLDOWN", "5", 0, 86400),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    slots = integer("--slots", "SLOTS", "64", 1, 4096) or 64
    max_incidents = integer("--max-incidents", "MAX_INCIDENTS", "20", 1, 10000) or 20
    incident_dir = Path(
        _pick(args.incident_dir, env, "--incident-dir", "INCIDENT_DIR", None)[1]
        or Path(tempfile.gettempdir()) / "lifesigns-incidents"
    )
    try:
        # prefix, paths, token, service: as the workers read them, so both ports agree.
        probe_settings = Settings.from_arguments({}, env)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    token = probe_settings.token

    logger = logging.getLogger("lifesigns.agent")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    log_where, log_format = _pick(None, env, "--log-format", "LOG_FORMAT", "text")
    if log_format not in _logging.LOG_FORMATS:
        raise UsageError(
            f"{log_where}={log_format!r} is not a log format; allowed: "
            + ", ".join(_logging.LOG_FORMATS)
        )
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(
        _logging.JsonFormatter() if log_format == "json" else _logging.TextFormatter()
    )
    ring = LogRing()
    logger.addHandler(to_stderr)
    logger.addHandler(ring)
    # The shared side-port server's own lines speak of workers; the agent names a bind
    # failure itself, so only its errors are kept.
    side_logger = logging.getLogger("lifesigns.sideport")
    side_logger.setLevel(logging.ERROR)
    side_logger.propagate = False
    side_logger.addHandler(to_stderr)

    # Which package the server serves (uvicorn app.main:app) is the application's.
    sampler.use_classifier(sampler.classifier_for(command))
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
    side = AgentSidePort(
        AgentHost(monitor, probe_settings, incidents=incidents, redactor=redactor), host, port
    )
    try:
        side.start()
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
    monitor.start()
    logger.info(
        "agent %d: side port on http://%s:%d for server pid %d (%s); "
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
    logger.info("the server exited with %d", returncode)
    return exit_like(returncode)
