"""What one pass learns about the project, shared between the Python and container rules.

The Python pass records routes, engines and lifesigns settings; the container pass
records server commands, replicas and PostgreSQL's ``max_connections``. Cross-file
rules (a healthcheck on a path whose route queries the database, pool size x workers x
replicas) read both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .callgraph import Chain


@dataclass(frozen=True)
class Where:
    """A place in a file (1-based)."""

    path: str
    line: int
    col: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Route:
    """An HTTP route of the application and the dependency it touches, if any."""

    path: str
    function: str
    is_async: bool
    where: Where
    dependency: Chain | None


@dataclass(frozen=True)
class Engine:
    """A ``create_engine`` call and its pool capacity, when the arguments are literals."""

    where: Where
    capacity: int | None  # pool_size + max_overflow
    pool_size: int | None
    max_overflow: int | None


@dataclass(frozen=True)
class ServerCommand:
    """A command that starts the web server (Dockerfile CMD, compose command, container args)."""

    tokens: tuple[str, ...]
    where: Where
    workers: int
    replicas: int
    env: tuple[tuple[str, str], ...] = ()
    parts: tuple[tuple[tuple[str, ...], Where], ...] = ()  # Dockerfile: ENTRYPOINT, CMD

    def line_of(self, *flags: str) -> Where:
        """Where the part holding any of ``flags`` is (the command's start otherwise)."""
        for words, where in self.parts:
            if any(w == f or w.startswith(f + "=") for w in words for f in flags):
                return where
        return self.where


@dataclass
class Facts:
    """Everything cross-file rules need."""

    routes: list[Route] = field(default_factory=list)
    engines: list[Engine] = field(default_factory=list)
    uses_lifesigns: bool = False
    lifesigns_settings: dict[str, float] = field(default_factory=dict)
    startup_waits: str | None = None  # what makes start-up wait for the database
    commands: list[ServerCommand] = field(default_factory=list)
    max_connections: tuple[int, Where | None] | None = None
    side_port: Where | None = None  # where a side port is configured

    def route_for(self, path: str) -> Route | None:
        """The route serving ``path`` (exact, or the route's path ends it: router prefixes)."""
        path = path.split("?")[0].rstrip("/") or "/"
        best = None
        for route in self.routes:
            candidate = route.path.rstrip("/") or "/"
            if candidate == path:
                return route
            if candidate != "/" and path.endswith(candidate) and best is None:
                best = route
        return best

    def checks_dependencies(self, path: str) -> str | None:
        """Why ``path`` checks dependencies (``"GET /health queries ..."``), or ``None``."""
        route = self.route_for(path)
        if route is not None:
            if route.dependency is None:
                return None
            chain = route.dependency
            return f"its route {route.function} ({route.where}) calls {chain.site.what}"
        lowered = path.lower()
        if "ready" in lowered:
            return "it is a readiness path"
        if self.uses_lifesigns and lowered.rstrip("/").endswith(("/health", "/startupz")):
            return "lifesigns' /health runs every check"
        return None
