"""The host: what a layer registers against, and all it may know of the rest.

A layer (``loop``, ``db``, ``tasks``, ``memory``, ``drain``...) never imports
:mod:`lifesigns.core` nor another layer. It is handed a :class:`Host` and registers its
parts on it: checks, dumps, components with a lifetime, liveness conditions, metrics on
the host's registry. It reads the validated :class:`~lifesigns._config.Settings`, masks
what it prints with the host's redactor, and sees the requests in flight through
:class:`RequestsView`. What one layer needs of another (drain needs the supervisor and
the engines) is passed in by the assembler, :class:`lifesigns.Lifesigns`, the way
Starlette's ``applications.py`` builds its middleware stack.

A :class:`Host` is light: building one starts nothing and needs no web framework, so each
layer is tested with ``Host()`` alone::

    host = Host()                       # default settings, no environment
    watch = loop.attach(host)           # the layer, registered on the host
    assert "stalls" in host.dumps
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from prometheus_client import CollectorRegistry

from ._config import Settings
from ._frames import FrameClassifier, default_classifier
from ._secrets import SecretRedactor, tokens_match
from .errors import ConfigError
from .health import (
    Check,
    CheckFunction,
    CheckRegistry,
    CheckRunner,
    Lifecycle,
    LivenessCondition,
    Probes,
)
from .metrics import CoreMetrics

__all__ = [
    "Component",
    "Dump",
    "HasHost",
    "Host",
    "RequestLike",
    "RequestsView",
    "as_host",
]

L = TypeVar("L")

Dump = Callable[[], Mapping[str, Any]]
"""Produces a token-protected debug dump as JSON-ready data.

Called from whichever thread serves it (a side-port thread, or a worker thread of the
main port's router): it must be quick, must not await, and must not take a lock the loop
thread may hold. The router bounds it with a timeout and masks secrets in what it returns.
"""

_DUMP_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@runtime_checkable
class Component(Protocol):
    """A part with a lifetime (a watchdog thread, a side-port server, a supervisor).

    ``start`` runs on the event loop at the start of the lifespan, in the order the parts
    were added; ``stop`` at its end, in reverse order, each bounded by the grace period.
    """

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class RequestLike(Protocol):
    """One request in flight, as layers see it (the edge's ``RequestInfo`` is one)."""

    @property
    def method(self) -> str: ...

    @property
    def route(self) -> str: ...

    def age(self, now: float | None = None) -> float: ...

    def describe(self) -> str: ...

    def as_dict(self, now: float | None = None) -> dict[str, Any]: ...


class RequestsView(Protocol):
    """The requests in flight, read from any thread (the edge's ``RequestTracker`` is one)."""

    def in_flight(self) -> list[Any]: ...

    def for_task(self, task: asyncio.Task[Any] | None) -> Any | None: ...

    def __len__(self) -> int: ...


class NoRequests:
    """A :class:`RequestsView` with nothing in flight: the light host's default."""

    def in_flight(self) -> list[Any]:
        """Always empty."""
        return []

    def for_task(self, task: asyncio.Task[Any] | None) -> None:
        """Never a request."""
        return

    def __len__(self) -> int:
        return 0


class Host:
    """The registries a layer registers on, owned by one :class:`~lifesigns.Lifesigns`.

    Building a host starts nothing. ``settings`` defaults to the defaults (the
    environment is not read: pass ``Settings.from_arguments({})`` for that).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        requests: RequestsView | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.redactor = SecretRedactor([self.settings.token] if self.settings.token else [])
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.metrics = CoreMetrics(self.registry, self.settings.service, self.settings.version)
        self.checks = CheckRegistry()
        self.lifecycle = Lifecycle()
        self.runner = CheckRunner(redactor=self.redactor, listener=self.metrics.observe_check)
        self.probes = Probes(self.checks, self.runner, self.lifecycle, self.settings.probe_budget)
        self.requests: RequestsView = requests if requests is not None else NoRequests()
        self.frames: FrameClassifier = (
            FrameClassifier(app_packages=self.settings.app_packages)
            if self.settings.app_packages
            else default_classifier()
        )
        """Which code is the application's, for every stack the layers print."""
        self._lock = threading.Lock()
        self._dumps: dict[str, Dump] = {}
        self._components: list[Component] = []
        self._layers: dict[str, tuple[object, object]] = {}
        self._started = False

    def __repr__(self) -> str:
        return (
            f"<Host {self.settings.service!r}: {len(self._components)} components, "
            f"dumps {sorted(self._dumps)}>"
        )

    # -- registration ----------------------------------------------------------------

    def add_check(
        self,
        name: str,
        func: CheckFunction,
        *,
        timeout: float | None = None,
        critical: bool = True,
        pass_ttl: float | None = None,
        fail_ttl: float | None = None,
        component_type: str = "component",
    ) -> Check:
        """Register a check; ``None`` options take the host's defaults.

        A taken name raises :class:`~lifesigns.errors.ConfigError`.
        """
        s = self.settings
        return self.checks.add(
            Check(
                name=name,
                func=func,
                timeout=s.check_timeout if timeout is None else timeout,
                critical=critical,
                pass_ttl=s.pass_ttl if pass_ttl is None else pass_ttl,
                fail_ttl=s.fail_ttl if fail_ttl is None else fail_ttl,
                component_type=component_type,
            )
        )

    def add_dump(self, name: str, producer: Dump) -> None:
        """Serve ``producer()`` at ``/debug/<name>`` on every port, by token only."""
        if not _DUMP_NAME.match(name):
            raise ConfigError(
                f"dump name {name!r} is not allowed; use up to 32 of a-z, 0-9, '_', '-'"
            )
        with self._lock:
            if name in self._dumps:
                raise ConfigError(f"a dump named {name!r} already exists")
            self._dumps[name] = producer

    @property
    def dumps(self) -> Mapping[str, Dump]:
        """The debug dumps by name."""
        with self._lock:
            return dict(self._dumps)

    def add_component(self, component: Component) -> None:
        """Give the host a part to start with the lifespan and stop at its end."""
        with self._lock:
            if self._started:
                raise RuntimeError(
                    f"cannot add {component.name!r}: components must be added before the "
                    "lifespan starts"
                )
            self._components.append(component)

    @property
    def components(self) -> list[Component]:
        """The components, in start order."""
        with self._lock:
            return list(self._components)

    def add_liveness_condition(self, name: str, condition: LivenessCondition) -> None:
        """Make ``/livez`` fail while ``condition()`` returns a reason (see ``NotAlive``)."""
        self.probes.add_liveness_condition(name, condition)

    def layer(self, key: str, settings: object, build: Callable[[], L]) -> L:
        """The layer registered under ``key``, built by ``build()`` on first call.

        One rule for attaching twice: the same ``settings`` (compared with ``==``) give the
        same layer back; different ones raise :class:`~lifesigns.errors.ConfigError`
        naming both.
        """
        with self._lock:
            known = self._layers.get(key)
        if known is not None:
            layer, known_settings = known
            if known_settings != settings:
                raise ConfigError(
                    f"the {key} layer is already attached with {known_settings!r}; "
                    f"attaching it again with {settings!r} would change it"
                )
            return layer  # type: ignore[return-value]
        built = build()
        with self._lock:
            self._layers[key] = (built, settings)
        return built

    def find_layer(self, key: str) -> object | None:
        """The layer attached under ``key``, if any."""
        with self._lock:
            known = self._layers.get(key)
        return None if known is None else known[0]

    # -- lifetime --------------------------------------------------------------------

    def mark_started(self, started: bool = True) -> None:
        """Record that the lifespan runs (no component may be added meanwhile)."""
        with self._lock:
            self._started = started

    # -- authorisation ---------------------------------------------------------------

    def is_authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries the configured bearer token."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return False
        return tokens_match(authorization[7:].strip(), self.settings.token)

    def add_secrets(self, secrets: Iterable[str | None]) -> None:
        """Register secrets (passwords) the redactor must mask wherever they appear."""
        for secret in secrets:
            self.redactor.add(secret)


class HasHost(Protocol):
    """Anything that carries a host: a :class:`~lifesigns.Lifesigns` is one."""

    @property
    def host(self) -> Host: ...


def as_host(owner: Host | HasHost) -> Host:
    """The host itself, or the host of a ``Lifesigns``: what every layer's ``attach`` takes.

    So ``loop.attach(signs)`` and ``loop.attach(host)`` both work, and a layer needs no
    import of :mod:`lifesigns.core` to accept either. Anything else raises ``TypeError``.
    """
    if isinstance(owner, Host):
        return owner
    host = getattr(owner, "host", None)
    if isinstance(host, Host):
        return host
    raise TypeError(
        f"expected a lifesigns Host or Lifesigns, got {type(owner).__name__}: "
        "pass signs (a Lifesigns) or signs.host"
    )
