"""Compose files and Kubernetes manifests, read with PyYAML keeping each key's line.

A YAML file is a compose file when a document has a ``services`` mapping, a Kubernetes
manifest when a document has ``apiVersion`` and ``kind``; anything else (CI workflows,
Helm templates that are not YAML until rendered) is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import commands


class LineDict(dict[Any, Any]):
    """A mapping that remembers the line of each key (``lines[key]``) and its own."""

    line: int = 1
    lines: dict[Any, int]


class LineList(list[Any]):
    """A sequence that remembers the line of each item and its own."""

    line: int = 1
    lines: list[int]


def line_of(node: object, key: object = None, default: int = 1) -> int:
    """The line of ``key`` in a :class:`LineDict` (or of the node itself)."""
    if isinstance(node, LineDict):
        return node.lines.get(key, node.line) if key is not None else node.line
    if isinstance(node, LineList):
        return node.line
    return default


def _loader() -> Any:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc, valid-type]
        pass

    def mapping(loader: Any, node: Any) -> LineDict:
        loader.flatten_mapping(node)
        result = LineDict()
        result.line = node.start_mark.line + 1
        result.lines = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                result[key] = loader.construct_object(value_node, deep=True)
            except TypeError:
                continue  # an unhashable key: not something we read
            result.lines[key] = key_node.start_mark.line + 1
        return result

    def sequence(loader: Any, node: Any) -> LineList:
        result = LineList(loader.construct_object(child, deep=True) for child in node.value)
        result.line = node.start_mark.line + 1
        result.lines = [child.start_mark.line + 1 for child in node.value]
        return result

    Loader.add_constructor("tag:yaml.org,2002:map", mapping)
    Loader.add_constructor("tag:yaml.org,2002:seq", sequence)
    return Loader


_LOADER: Any = None


def load_documents(source: str) -> list[Any]:
    """Every document of a YAML stream, or ``[]`` when it is not valid YAML."""
    import yaml

    global _LOADER
    if _LOADER is None:
        _LOADER = _loader()
    try:
        return [doc for doc in yaml.load_all(source, Loader=_LOADER) if doc is not None]
    except yaml.YAMLError:
        return []


@dataclass(frozen=True)
class Located:
    """A value and the line it sits on."""

    value: Any
    line: int


@dataclass
class Service:
    """A compose service, or a Kubernetes container with its workload."""

    rel: str
    name: str
    line: int
    platform: str  # "compose" or "kubernetes"
    command: Located | None = None  # tokens
    healthcheck: Located | None = None  # compose: tokens, () when disabled
    probes: dict[str, Located] = field(default_factory=dict)  # kubernetes: kind -> LineDict
    replicas: int = 1
    env: dict[str, str] = field(default_factory=dict)
    image: str = ""
    build_dockerfile: Path | None = None
    grace: Located | None = None  # seconds before SIGKILL, when set
    max_connections: int | None = None  # for a PostgreSQL service started with -c

    @property
    def tokens(self) -> tuple[str, ...]:
        """The command's tokens (empty when the image's own command runs)."""
        return tuple(self.command.value) if self.command else ()


def _duration(value: object) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    text = value.strip()
    index = 0
    while index < len(text):
        char = text[index]
        if char.isdigit() or char == ".":
            number += char
            index += 1
            continue
        unit = text[index : index + 2] if text[index : index + 2] in units else char
        if unit not in units or not number:
            return None
        total += float(number) * units[unit]
        number = ""
        index += len(unit)
    return total + (float(number) if number else 0.0)


def _max_connections(words: tuple[str, ...]) -> int | None:
    for index, word in enumerate(words):
        setting = word
        if word == "-c" and index + 1 < len(words):
            setting = words[index + 1]
        name, _, value = setting.lstrip("-").partition("=")
        if name.replace("-", "_") == "max_connections" and value.isdigit():
            return int(value)
    return None


def _command(mapping: LineDict, key: str) -> Located | None:
    value = mapping.get(key)
    if isinstance(value, str | list):
        return Located(commands.tokens(value), line_of(mapping, key))
    return None


def compose_services(doc: LineDict, path: Path, rel: str) -> list[Service]:
    """The services of one compose document."""
    services = []
    for name, spec in (doc.get("services") or {}).items():
        if not isinstance(spec, LineDict):
            continue
        service = Service(rel, str(name), line_of(doc["services"], name), "compose")
        service.command = _command(spec, "command")
        entry = _command(spec, "entrypoint")
        if entry is not None:
            joined = (*entry.value, *service.tokens)
            service.command = Located(
                joined, service.command.line if service.command else entry.line
            )
        check = spec.get("healthcheck")
        if isinstance(check, LineDict):
            test = check.get("test")
            words: tuple[str, ...] = ()
            if check.get("disable") is not True and isinstance(test, str | list):
                words = commands.tokens(test)
                if words and words[0] in ("CMD", "CMD-SHELL"):
                    words = words[1:]
                if words == ("NONE",):
                    words = ()
            service.healthcheck = Located(words, line_of(check, "test", check.line))
        deploy = spec.get("deploy")
        replicas = deploy.get("replicas") if isinstance(deploy, dict) else spec.get("scale")
        service.replicas = replicas if isinstance(replicas, int) and replicas > 0 else 1
        service.env = commands.env_pairs(spec.get("environment"))
        service.image = str(spec.get("image") or "")
        service.build_dockerfile = _build(spec.get("build"), path.parent)
        if "stop_grace_period" in spec:
            seconds = _duration(spec["stop_grace_period"])
            service.grace = Located(seconds, line_of(spec, "stop_grace_period"))
        service.max_connections = _max_connections(service.tokens)
        services.append(service)
    return services


def _build(value: object, base: Path) -> Path | None:
    if isinstance(value, str):
        return (base / value / "Dockerfile").resolve()
    if isinstance(value, dict):
        context = base / str(value.get("context", "."))
        return (context / str(value.get("dockerfile", "Dockerfile"))).resolve()
    return None


_POD_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


def kube_containers(doc: LineDict, rel: str) -> list[Service]:
    """The containers of one Kubernetes workload, each with its pod's settings."""
    kind = doc.get("kind")
    if kind not in _POD_PATHS:
        return []
    pod: Any = doc
    for key in _POD_PATHS[str(kind)]:
        pod = pod.get(key) if isinstance(pod, dict) else None
    if not isinstance(pod, LineDict):
        return []
    spec = doc.get("spec")
    replicas = spec.get("replicas", 1) if isinstance(spec, dict) else 1
    grace = None
    if "terminationGracePeriodSeconds" in pod:
        grace = Located(
            _duration(pod["terminationGracePeriodSeconds"]),
            line_of(pod, "terminationGracePeriodSeconds"),
        )
    name = (doc.get("metadata") or {}).get("name", kind)
    found = []
    containers = pod.get("containers") or []
    for index, container in enumerate(containers):
        if not isinstance(container, LineDict):
            continue
        service = Service(
            rel, f"{name}/{container.get('name', index)}", container.line, "kubernetes"
        )
        words: list[str] = []
        line = None
        for key in ("command", "args"):
            located = _command(container, key)
            if located is not None:
                words.extend(located.value)
                line = line or located.line
        if line is not None:
            service.command = Located(tuple(words), line)
        for probe in PROBES:
            if isinstance(container.get(probe), LineDict):
                service.probes[probe] = Located(container[probe], line_of(container, probe))
        service.replicas = replicas if isinstance(replicas, int) and replicas > 0 else 1
        service.env = commands.env_pairs(container.get("env"))
        service.image = str(container.get("image") or "")
        service.grace = grace
        service.max_connections = _max_connections(service.tokens)
        found.append(service)
    return found


def parse(path: Path, rel: str, source: str) -> list[Service]:
    """Every compose service and Kubernetes container in one YAML file."""
    services: list[Service] = []
    for doc in load_documents(source):
        if not isinstance(doc, LineDict):
            continue
        if isinstance(doc.get("services"), dict):
            services += compose_services(doc, path, rel)
        elif "apiVersion" in doc and "kind" in doc:
            services += kube_containers(doc, rel)
    return services
