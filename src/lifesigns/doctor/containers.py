"""The container and orchestration rules (LS201-LS210, LS212).

They read Dockerfiles, compose services and Kubernetes containers together with what
the Python pass learnt (:class:`~.facts.Facts`): which route a healthcheck path hits and
whether it queries the database, the pool sizes, whether lifesigns is in use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import commands
from .config import DoctorConfig
from .dockerfile import Dockerfile
from .facts import Facts, ServerCommand, Where
from .findings import Finding
from .manifests import LineDict, Service, line_of

_TIMING = {
    "initialDelaySeconds",
    "periodSeconds",
    "timeoutSeconds",
    "failureThreshold",
    "successThreshold",
    "terminationGracePeriodSeconds",
}


@dataclass
class Scan:
    """Every container file of the project."""

    dockerfiles: list[Dockerfile]
    services: list[Service]
    scripts: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # name: rel, lines

    def script_servers(self, words: tuple[str, ...]) -> list[tuple[tuple[str, ...], Where]]:
        """Server commands inside the shell scripts a command runs (``CMD ["./start.sh"]``)."""
        found = []
        for word in words:
            script = self.scripts.get(word.rsplit("/", 1)[-1]) if word.endswith(".sh") else None
            if script is None:
                continue
            rel, lines = script
            for number, line in enumerate(lines, start=1):
                tokens = commands.tokens(line.split(" #")[0]) if line.strip() else ()
                if tokens and not tokens[0].startswith("#") and commands.is_server(tokens):
                    found.append((tokens, Where(rel, number)))
        return found


def _find(path: str, line: int, code: str, message: str) -> Finding:
    return Finding(path, line, 1, code, message)


def record_commands(scan: Scan, facts: Facts) -> None:
    """Put every server command into ``facts`` (for LS202 and LS212)."""
    for dockerfile in scan.dockerfiles:
        server = dockerfile.server
        if server is not None:
            words = tuple(t for c in dockerfile.commands for t in c.tokens)
            facts.commands.append(
                ServerCommand(
                    words,
                    Where(dockerfile.rel, server.line),
                    commands.workers(words, dockerfile.env),
                    1,
                    tuple(dockerfile.env.items()),
                    tuple((c.tokens, Where(dockerfile.rel, c.line)) for c in dockerfile.commands),
                )
            )
        else:
            words = tuple(t for c in dockerfile.commands for t in c.tokens)
            for tokens, where in scan.script_servers(words):
                env = dockerfile.env
                facts.commands.append(
                    ServerCommand(tokens, where, commands.workers(tokens, env), 1,
                                  tuple(env.items()))
                )  # fmt: skip
        if "LIFESIGNS_SIDE_PORT" in dockerfile.env and facts.side_port is None:
            facts.side_port = Where(dockerfile.rel, dockerfile.env_lines["LIFESIGNS_SIDE_PORT"])
    for service in scan.services:
        if service.max_connections is not None:
            facts.max_connections = (service.max_connections, Where(service.rel, service.line))
        for tokens, where in scan.script_servers(service.tokens):
            env = service.env
            facts.commands.append(
                ServerCommand(tokens, where, commands.workers(tokens, env), service.replicas,
                              tuple(env.items()))
            )  # fmt: skip
        if service.command and commands.is_server(service.tokens):
            facts.commands.append(
                ServerCommand(
                    service.tokens,
                    Where(service.rel, service.command.line),
                    commands.workers(service.tokens, service.env),
                    service.replicas,
                    tuple(service.env.items()),
                )
            )
        if "LIFESIGNS_SIDE_PORT" in service.env and facts.side_port is None:
            facts.side_port = Where(service.rel, service.line)


def check(scan: Scan, facts: Facts, config: DoctorConfig) -> list[Finding]:
    """Run every container rule."""
    findings: list[Finding] = []
    findings += _server_commands(facts)
    for dockerfile in scan.dockerfiles:
        findings += _dockerfile(dockerfile, scan, facts)
    for service in scan.services:
        if service.healthcheck is not None:
            findings += _healthcheck(
                service.rel, service.healthcheck.line, service.healthcheck.value, facts
            )
        if service.platform == "kubernetes":
            findings += _probes(service, facts, config)
        findings += _grace(service, facts, config)
    findings += _pool_sizing(facts, config)
    return findings


_DEVELOPMENT = {"override", "dev", "development", "local", "debug"}


def development_file(path: str) -> bool:
    """Whether a file is for local development by its name (``compose.override.yml``)."""
    name = path.rsplit("/", 1)[-1].lower()
    return bool(_DEVELOPMENT & set(re.split(r"[._-]", name)))


def _server_commands(facts: Facts) -> Iterator[Finding]:
    """LS201, LS202, LS203 on every command that starts the server."""
    for command in facts.commands:
        where, words = command.where, command.tokens
        flag = commands.reload_flag(words)
        if flag and not development_file(where.path):
            at = command.line_of("--reload", "dev")
            yield _find(
                at.path,
                at.line,
                "LS201",
                f"{flag} in the production command: a reloader restarts the worker on "
                "any file change and runs a single process",
            )
        if commands.gunicorn_timeout_zero(words):
            at = command.line_of("--timeout", "-t")
            yield _find(
                at.path,
                at.line,
                "LS203",
                "gunicorn --timeout 0: the arbiter never kills a frozen worker",
            )
        if (
            command.workers > 1
            and facts.side_port is not None
            and not commands.under_lifesigns_run(words)
        ):
            yield _find(
                where.path,
                where.line,
                "LS202",
                f"{command.workers} workers and a side port ({facts.side_port}) without "
                "`lifesigns run`: only one worker can bind the side port",
            )


def _healthcheck(path: str, line: int, words: tuple[str, ...], facts: Facts) -> Iterator[Finding]:
    """LS204 and LS205 on a Docker or compose healthcheck command."""
    client = commands.unbounded_client(words)
    if client:
        limit = "--max-time" if client == "curl" else "-T"
        yield _find(
            path,
            line,
            "LS204",
            f"healthcheck runs {client} without {limit}: Docker's --timeout may not stop "
            "it, and checks pile up",
        )
    for url_path in commands.url_paths(" ".join(words)):
        reason = facts.checks_dependencies(url_path)
        if reason:
            yield _find(
                path,
                line,
                "LS205",
                f"container healthcheck on {url_path}, which checks dependencies: {reason}",
            )


def _dockerfile(dockerfile: Dockerfile, scan: Scan, facts: Facts) -> Iterator[Finding]:
    for check in dockerfile.healthchecks:
        yield from _healthcheck(dockerfile.rel, check.line, check.tokens, facts)
    if dockerfile.healthchecks or dockerfile.server is None:
        return
    for service in scan.services:
        if service.platform == "kubernetes":
            return  # Kubernetes ignores HEALTHCHECK: its probes are read instead
        if service.build_dockerfile == dockerfile.path.resolve() and service.healthcheck:
            return
    yield _find(
        dockerfile.rel,
        dockerfile.final_from,
        "LS206",
        "the image serves HTTP but has no HEALTHCHECK: a frozen server stays 'running'",
    )


def _handler(probe: LineDict) -> str:
    return json.dumps({k: v for k, v in probe.items() if k not in _TIMING}, sort_keys=True)


def _probe_path(probe: LineDict) -> str | None:
    get = probe.get("httpGet")
    if isinstance(get, dict):
        return str(get.get("path", "/"))
    run = probe.get("exec")
    if isinstance(run, dict) and isinstance(run.get("command"), list):
        paths = commands.url_paths(" ".join(map(str, run["command"])))
        return paths[0] if paths else None
    return None


def _is_app(service: Service) -> bool:
    if commands.is_server(service.tokens):
        return True
    return any(_probe_path(p.value) for p in service.probes.values())


def _setting(service: Service, facts: Facts, config: DoctorConfig, name: str) -> float:
    raw = service.env.get(f"LIFESIGNS_{name.upper()}")
    try:
        if raw:
            return float(raw)
    except ValueError:
        pass
    return float(facts.lifesigns_settings.get(name, getattr(config, name)))


def _probes(service: Service, facts: Facts, config: DoctorConfig) -> Iterator[Finding]:
    """LS205, LS207, LS208, LS209 on one container's probes."""
    probes = service.probes
    live = probes.get("livenessProbe")
    ready = probes.get("readinessProbe")
    rel = service.rel
    if live is not None and ready is not None and _handler(live.value) == _handler(ready.value):
        yield _find(
            rel,
            live.line,
            "LS207",
            f"{service.name}: livenessProbe is the same check as readinessProbe "
            f"(line {ready.line}): a dependency outage restarts the pod",
        )
    if live is not None:
        path = _probe_path(live.value)
        reason = facts.checks_dependencies(path) if path else None
        if reason:
            yield _find(
                rel,
                live.line,
                "LS205",
                f"{service.name}: livenessProbe on {path}, which checks dependencies: {reason}",
            )
        if "startupProbe" not in probes and facts.startup_waits and _is_app(service):
            yield _find(
                rel,
                live.line,
                "LS208",
                f"{service.name}: no startupProbe while start-up waits for the database "
                f"({facts.startup_waits}): liveness may kill the pod before it is up",
            )
    if not facts.uses_lifesigns:
        return
    budget = _setting(service, facts, config, "probe_budget")
    for kind in ("readinessProbe", "startupProbe"):
        probe = probes.get(kind)
        if probe is None:
            continue
        timeout = probe.value.get("timeoutSeconds", 1)
        if isinstance(timeout, int | float) and timeout <= budget:
            line = line_of(probe.value, "timeoutSeconds", probe.line)
            yield _find(
                rel,
                line,
                "LS209",
                f"{service.name}: {kind} timeoutSeconds {timeout} is not above the probe "
                f"budget {budget:g} s: slow but correct answers count as failures",
            )


def _grace(service: Service, facts: Facts, config: DoctorConfig) -> Iterator[Finding]:
    """LS210: SIGKILL before lifesigns has drained."""
    if not facts.uses_lifesigns or not _is_app(service):
        return
    needed = _setting(service, facts, config, "drain_delay") + _setting(
        service, facts, config, "grace"
    )
    default = 30.0 if service.platform == "kubernetes" else 10.0
    grace = service.grace.value if service.grace else default
    if isinstance(grace, float) and grace < needed:
        name = (
            "terminationGracePeriodSeconds"
            if service.platform == "kubernetes"
            else "stop_grace_period"
        )
        line = service.grace.line if service.grace else service.line
        shown = f"{grace:g} s" + ("" if service.grace else " (the default)")
        yield _find(
            service.rel,
            line,
            "LS210",
            f"{service.name}: {name} {shown} is below drain delay + grace "
            f"({needed:g} s): in-flight requests are cut",
        )


def _pool_sizing(facts: Facts, config: DoctorConfig) -> Iterator[Finding]:
    """LS212: the pools of every worker of every replica against max_connections."""
    if config.max_connections is not None:
        limit, source = config.max_connections, "given to doctor"
    elif facts.max_connections is not None:
        limit, source = facts.max_connections[0], str(facts.max_connections[1])
    else:
        return
    known = [e for e in facts.engines if e.capacity]
    if not known:
        return
    engine = max(known, key=lambda e: e.capacity or 0)
    workers = config.workers or max((c.workers for c in facts.commands), default=1)
    replicas = config.replicas or max((c.replicas for c in facts.commands), default=1)
    capacity = engine.capacity or 0
    total = capacity * workers * replicas
    if total <= limit:
        return
    origin = f" ({source})"
    yield Finding(
        engine.where.path,
        engine.where.line,
        engine.where.col,
        "LS212",
        f"pool_size {engine.pool_size} + max_overflow {engine.max_overflow} = {capacity} "
        f"connections per process x {workers} worker{'s' if workers > 1 else ''} x {replicas} "
        f"replica{'s' if replicas > 1 else ''} = {total} > max_connections {limit}{origin}",
    )
