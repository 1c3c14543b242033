"""One probe router: (method, path, query, headers) in, (status, headers, body) out.

Every port serves lifesigns through this one router, so a probe gets the same answer
wherever it is asked: the application port (through the pure ASGI adapter
:mod:`lifesigns.http.middleware`), the side port (a thread, :mod:`lifesigns.sideport`),
and the agent of ``lifesigns run`` (:mod:`lifesigns.agent.server`). It knows no web
framework, and imports ``prometheus_client`` only to render a registry.

Routes, under ``prefix`` and with ``paths`` renaming the five probes:

=======================  =========  ===================================================
path                     surface    answer
=======================  =========  ===================================================
``/livez``               probes     liveness (never a check; thread-safe)
``/readyz``              probes     readiness; ``/readyz/<check>`` one check
``/startupz``            probes     start-up progress (thread-safe)
``/health``              probes     ``application/health+json``
``/metrics``             metrics    Prometheus text exposition
``/debug/``, ``/debug``  debug      the dumps' names (token only)
``/debug/<dump>``        debug      one dump as JSON (token only)
``/lifesigns/``          live       the live page (HTML; ``/lifesigns`` redirects here)
``/lifesigns/data``      live       the live page's JSON (token only, like a dump)
=======================  =========  ===================================================

``?verbose`` lists every check, ``?exclude=a,b`` leaves checks out, the bearer token
(``Authorization: Bearer ...``) unlocks reasons and dumps. Every answer is counted in
``lifesigns_probe_answers_total``. A dump runs in a thread of its own, never on the event
loop, for at most ``dump_timeout`` seconds (then 504), at most ``max_dumps`` at once
(then 503), and its JSON text passes the redactor before it leaves.

Two ways in:

* :meth:`ProbeRouter.handle_async`, awaited on the event loop (the ASGI adapter);
* :meth:`ProbeRouter.handle`, called from any other thread. Readiness and ``/health``
  run checks, which live on the application's loop: :class:`LoopBridge` submits them there
  with ``asyncio.run_coroutine_threadsafe`` and waits at most the probe budget plus half a
  second. While the loop is frozen it does not wait: readiness answers 503 from the last
  result, marked stale (``X-Lifesigns-Stale: true``), saying for how long the loop has
  been stalled.

What the router answers from is explicit and small (:class:`RouterHost`, whose
``probes`` is a :class:`ProbeSource`): :class:`lifesigns.host.Host` is one; a separate
agent process, which has no in-process ``Probes``, brings its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import parse_qs

from ._config import Settings
from ._surfaces import DEBUG, LIVE, METRICS, PROBES, SURFACES
from .errors import LifesignsError
from .health import ProbeResult, StartupStep, UnknownCheckError
from .health.render import HEALTH_JSON, health_json, probe_text, startup_lines
from .live import LiveView, page_html

if TYPE_CHECKING:  # the agent process serves this router and imports no prometheus_client
    from prometheus_client import CollectorRegistry

__all__ = [
    "Answer",
    "DumpRefused",
    "Exposition",
    "LoopBridge",
    "ProbeRouter",
    "ProbeSource",
    "QueryDump",
    "RouterHost",
]

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
STALE_HEADER = "X-Lifesigns-Stale"


@dataclass(frozen=True)
class QueryDump:
    """A dump that reads the request's query string (``/debug/stalls?worker=N``).

    ``produce`` gets the parsed query (name -> values) and may raise
    :class:`DumpRefused` for a query it cannot answer.
    """

    produce: Callable[[Mapping[str, list[str]]], Mapping[str, Any]]


class DumpRefused(LifesignsError):
    """A dump refuses its query: answered with ``status`` (400, 404) and the message."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


Dump = Callable[[], Mapping[str, Any]] | QueryDump
"""A debug dump: a function of nothing, or a :class:`QueryDump`."""


@runtime_checkable
class Exposition(Protocol):
    """A ``/metrics`` text made elsewhere (the agent merging its workers' files)."""

    content_type: str

    def exposition(self) -> str:
        """The whole text exposition."""
        ...


# The live page holds nothing secret, but its lab buttons act: no framing (clickjacking).
_PAGE_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src *; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'",
    ),
)


# -- what the router answers from ----------------------------------------------------


class ProbeSource(Protocol):
    """The probe decisions the router renders (:class:`lifesigns.health.Probes` is one)."""

    @property
    def budget(self) -> float:
        """Seconds a probe may spend on checks."""
        ...

    @property
    def last_readiness(self) -> ProbeResult | None:
        """The most recent readiness answer, served stale while the loop is frozen."""
        ...

    def liveness(self) -> ProbeResult:
        """Liveness; called from any thread, must not block."""
        ...

    def startup(self) -> ProbeResult:
        """Start-up progress; called from any thread, must not block."""
        ...

    async def readiness(
        self, exclude: Collection[str] = (), only: str | None = None
    ) -> ProbeResult:
        """Readiness, on the event loop; unknown names raise ``UnknownCheckError``."""
        ...

    async def health(self, exclude: Collection[str] = ()) -> ProbeResult:
        """Every check and the phase, on the event loop."""
        ...


class _Steps(Protocol):
    @property
    def steps(self) -> tuple[StartupStep, ...]: ...


class _Redactor(Protocol):
    def redact(self, text: str) -> str: ...


class _Increment(Protocol):
    def inc(self) -> None: ...


class _Counter(Protocol):
    def labels(self, *values: str) -> _Increment: ...


class _ProbeCounters(Protocol):
    @property
    def probe_answers(self) -> _Counter: ...


class RouterHost(Protocol):
    """Everything the router reads: :class:`lifesigns.host.Host` satisfies it."""

    @property
    def settings(self) -> Settings:
        """``prefix``, ``paths``, ``service``, ``version``."""
        ...

    @property
    def probes(self) -> ProbeSource:
        """The probe decisions."""
        ...

    @property
    def lifecycle(self) -> _Steps:
        """Start-up steps, for ``/startupz`` and ``/health?verbose``."""
        ...

    @property
    def redactor(self) -> _Redactor:
        """Masks secrets in dump text and errors."""
        ...

    @property
    def metrics(self) -> _ProbeCounters:
        """``probe_answers``, counted per probe and status code."""
        ...

    @property
    def registry(self) -> CollectorRegistry | Exposition:
        """What ``/metrics`` exposes: a registry, or an already made text."""
        ...

    @property
    def dumps(self) -> Mapping[str, Dump]:
        """The debug dumps by name."""
        ...

    def is_authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries the token."""
        ...


# -- answers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, headers (name, value) and the whole body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` header."""
        return self.header("content-type") or ""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case)."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode()


def answer(
    status: int,
    body: str | bytes,
    content_type: str = TEXT,
    extra: Iterable[tuple[str, str]] = (),
) -> Answer:
    """An answer that proxies never cache."""
    data = body.encode() if isinstance(body, str) else body
    return Answer(
        status,
        (("Content-Type", content_type), ("Cache-Control", "no-store"), *extra),
        data,
    )


def json_answer(
    status: int,
    document: object,
    content_type: str = JSON,
    extra: Iterable[tuple[str, str]] = (),
) -> Answer:
    """``document`` as indented JSON."""
    return answer(status, json.dumps(document, indent=2, default=str) + "\n", content_type, extra)


# -- the event loop, seen from another thread ------------------------------------------


class LoopUnavailable(LifesignsError):
    """The application's loop did not run a probe: absent, frozen, or too slow."""

    def __init__(self, frozen_for: float | None) -> None:
        self.frozen_for = frozen_for
        super().__init__(
            "no event loop" if frozen_for is None else f"event loop stalled {frozen_for:.1f} s"
        )


_SLICE = 0.05

FrozenFor = Callable[[], float | None]
"""Seconds the loop has been frozen past the stall threshold, else ``None`` (thread-safe)."""


class LoopBridge:
    """Runs coroutines on the application's loop from another thread, never waiting on a frozen one.

    ``frozen_for`` (the loop layer's, when it runs) says at once that the loop is frozen.
    Without it the bridge sees a freeze itself: a submission the loop has not run after
    the wait means a frozen loop, and later callers do not wait again while it is pending.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._frozen_for: FrozenFor | None = None
        self._lock = threading.Lock()
        self._pending: tuple[float, concurrent.futures.Future[Any]] | None = None

    def bind(self, loop: asyncio.AbstractEventLoop | None, frozen_for: FrozenFor | None) -> None:
        """Use ``loop`` from now on (``None``: no loop, every run is unavailable)."""
        with self._lock:
            self._loop = loop
            self._frozen_for = frozen_for
            self._pending = None

    @property
    def bound(self) -> bool:
        """Whether a loop is bound."""
        return self._loop is not None

    def frozen_for(self) -> float | None:
        """How long the loop has been frozen, if it is, as far as the bridge can tell."""
        hint = self._frozen_for() if self._frozen_for is not None else None
        with self._lock:
            pending = self._pending
        if pending is not None and not pending[1].done():
            seen = time.monotonic() - pending[0]
            return max(seen, hint or 0.0)
        return hint

    def run(self, make: Callable[[], Coroutine[Any, Any, Any]], timeout: float) -> Any:
        """Run ``make()`` on the loop and return its result within ``timeout`` seconds.

        Raises :class:`LoopUnavailable` at once when the loop is known frozen, or after
        ``timeout``; exceptions of the coroutine itself propagate.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            raise LoopUnavailable(None)
        frozen = self.frozen_for()
        if frozen is not None:
            raise LoopUnavailable(frozen)
        submitted = time.monotonic()
        end = submitted + timeout
        future = asyncio.run_coroutine_threadsafe(make(), loop)
        try:
            # In slices: a loop that freezes while we wait is given up on as soon as the
            # loop layer says so, not at the end of the budget.
            while True:
                try:
                    return future.result(timeout=max(0.0, min(_SLICE, end - time.monotonic())))
                except concurrent.futures.TimeoutError:
                    hint = self._frozen_for() if self._frozen_for is not None else None
                    if hint is not None or time.monotonic() >= end:
                        break
        except concurrent.futures.CancelledError:
            raise LoopUnavailable(self.frozen_for()) from None
        with self._lock:
            self._pending = (submitted, future)
        raise LoopUnavailable(self.frozen_for())


# -- requests ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    method: str
    probe: str  # livez, readyz, startupz, health, metrics, debug
    rest: str  # the check of /readyz/<check>, the dump of /debug/<dump>
    params: dict[str, list[str]]
    detailed: bool
    credentials: bool = False  # an Authorization header came (a wrong token is a 403)

    @property
    def verbose(self) -> bool:
        return "verbose" in self.params

    def exclusions(self) -> set[str]:
        names: set[str] = set()
        for value in self.params.get("exclude", ()):
            names.update(part for part in value.split(",") if part)
        return names


@dataclass
class _DumpSlots:
    """How many dump threads still run, a stuck one included: shared by every port."""

    limit: int
    running: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        with self.lock:
            if self.running >= self.limit:
                return False
            self.running += 1
            return True

    def give(self) -> None:
        with self.lock:
            self.running -= 1


# -- the router ----------------------------------------------------------------------


class ProbeRouter:
    """Routes, authorises, counts and renders lifesigns' answers for one host.

    ``surfaces`` are the ones this router serves (all by default; the application port's
    comes from :meth:`for_surfaces` with the ``expose`` setting). ``bridge`` carries
    readiness from a thread to the loop (see :class:`LoopBridge`).

    **Usage**::

        router = ProbeRouter(host)
        reply = router.handle("GET", "/livez", "verbose", {"authorization": "Bearer ..."})
        reply.status, reply.content_type, reply.text
    """

    def __init__(
        self,
        host: RouterHost,
        *,
        surfaces: Collection[str] = SURFACES,
        dump_timeout: float = 2.0,
        max_dumps: int = 4,
        bridge: LoopBridge | None = None,
    ) -> None:
        self.host = host
        self.surfaces = frozenset(surfaces)
        self.dump_timeout = dump_timeout
        self.bridge = bridge if bridge is not None else LoopBridge()
        self._slots = _DumpSlots(max_dumps)
        self._yielded: frozenset[str] = frozenset()
        settings = host.settings
        self._exact: dict[str, str] = {}
        for probe in ("livez", "readyz", "startupz", "health", "metrics"):
            path = settings.probe_path(probe)
            surface = METRICS if probe == "metrics" else PROBES
            if path is not None and surface in self.surfaces:
                self._exact[path] = probe
        readyz = settings.probe_path("readyz")
        self._per_check = f"{readyz}/" if readyz and PROBES in self.surfaces else None
        self._debug = f"{settings.prefix}/debug" if DEBUG in self.surfaces else None
        self._live = f"{settings.prefix}/lifesigns" if LIVE in self.surfaces else None
        # matches() runs on every request: one set look-up and one startswith() say "not
        # ours" for an application path, with nothing built per request.
        self._debug_prefix = f"{self._debug}/" if self._debug else None
        self._live_paths = (
            frozenset({self._live, f"{self._live}/", f"{self._live}/data"})
            if self._live
            else frozenset()
        )
        self._whole: frozenset[str] = frozenset()
        self._starts: tuple[str, ...] = ()
        self._index()

    def _index(self) -> None:
        whole = set(self._exact) | self._live_paths
        if self._debug:
            whole.add(self._debug)
        self._whole = frozenset(whole - self._yielded)
        self._starts = tuple(p for p in (self._per_check, self._debug_prefix) if p)

    def __repr__(self) -> str:
        return f"<ProbeRouter {sorted(self.surfaces)} at {sorted(self.paths)}>"

    def for_surfaces(self, surfaces: Collection[str]) -> ProbeRouter:
        """A router for the same host serving ``surfaces`` only (same bridge and dump slots)."""
        other = ProbeRouter(
            self.host,
            surfaces=surfaces,
            dump_timeout=self.dump_timeout,
            bridge=self.bridge,
        )
        other._slots = self._slots
        return other

    @property
    def paths(self) -> list[str]:
        """Every path served (prefixes end with ``/``), for messages and tests."""
        served = [p for p in self._exact if p not in self._yielded]
        if self._per_check:
            served.append(self._per_check)
        if self._debug:
            served.append(f"{self._debug}/")
        if self._live:
            served.extend((f"{self._live}/", f"{self._live}/data"))
        return served

    def probe_for(self, path: str) -> str | None:
        """The probe ``path`` is served as (``livez`` ... ``debug``), or ``None``."""
        if path in self._yielded:
            return None
        exact = self._exact.get(path)
        if exact is not None:
            return exact
        if self._per_check and path.startswith(self._per_check):
            return "readyz"
        if self._debug and (path == self._debug or path.startswith(self._debug_prefix or "")):
            return "debug"
        if path in self._live_paths:
            return "live"
        return None

    def matches(self, path: str) -> bool:
        """Whether this router answers ``path`` (else the application does)."""
        return path in self._whole or (path.startswith(self._starts) and path not in self._yielded)

    def yield_path(self, path: str) -> None:
        """Leave ``path`` to the application (its own route there wins)."""
        self._yielded = self._yielded | {path}
        self._index()

    # -- entry points ------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: str | Mapping[str, list[str]] = "",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    ) -> Answer:
        """Answer one request from any thread but the event loop's; 404 when not a route."""
        request = self._parse(method, path, query, headers)
        if isinstance(request, Answer):
            return request
        if request.probe in ("readyz", "health"):
            budget = self.host.probes.budget
            try:
                reply: Answer = self.bridge.run(lambda: self._on_loop(request), budget + 0.5)
            except LoopUnavailable as unavailable:
                reply = self._unavailable(request, unavailable)
            return self._counted(request.probe, reply)
        if request.probe == "debug":
            reply = self._debug_answer(request) or self._dump_in_thread(
                request.rest, request.params
            )
            return self._counted("debug", reply)
        if request.probe == "live":
            reply = self._live_answer(request) or self._dump_in_thread(
                "live", request.params, self._live_data
            )
            return self._counted("live", reply)
        return self._counted(request.probe, self._sync(request))

    async def handle_async(
        self,
        method: str,
        path: str,
        query: str | Mapping[str, list[str]] = "",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    ) -> Answer:
        """Answer one request on the event loop; 404 when not a route."""
        request = self._parse(method, path, query, headers)
        if isinstance(request, Answer):
            return request
        if request.probe in ("readyz", "health"):
            return self._counted(request.probe, await self._on_loop(request))
        if request.probe == "debug":
            reply = self._debug_answer(request) or await self._dump_async(
                request.rest, request.params
            )
            return self._counted("debug", reply)
        if request.probe == "live":
            reply = self._live_answer(request) or await self._dump_async(
                "live", request.params, self._live_data
            )
            return self._counted("live", reply)
        return self._counted(request.probe, self._sync(request))

    # -- parsing -----------------------------------------------------------------------

    def _parse(
        self,
        method: str,
        path: str,
        query: str | Mapping[str, list[str]],
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
    ) -> _Request | Answer:
        probe = self.probe_for(path)
        if probe is None:
            return answer(404, f"not found; lifesigns serves {', '.join(self.paths)}\n")
        if method.upper() not in ("GET", "HEAD"):
            return self._counted(
                probe, answer(405, "use GET or HEAD\n", extra=[("Allow", "GET, HEAD")])
            )
        if isinstance(query, str):
            params = parse_qs(query, keep_blank_values=True) if query else {}
        else:
            params = {k: list(v) for k, v in query.items()}
        rest = ""
        if probe == "readyz" and self._per_check and path.startswith(self._per_check):
            rest = path[len(self._per_check) :]
        elif probe == "debug" and self._debug:
            rest = path[len(self._debug) :].strip("/")
        elif probe == "live" and self._live:
            rest = path[len(self._live) :]
        authorization = _authorization(headers)
        detailed = self.host.is_authorized(authorization)
        return _Request(method.upper(), probe, rest, params, detailed, bool(authorization))

    # -- the probes --------------------------------------------------------------------

    def _sync(self, request: _Request) -> Answer:
        probes = self.host.probes
        if request.probe == "livez":
            return self._text(request, probes.liveness())
        if request.probe == "startupz":
            progress = startup_lines(self.host.lifecycle.steps, detailed=request.detailed)
            return self._text(request, probes.startup(), progress)
        # metrics
        registry = self.host.registry
        if isinstance(registry, Exposition):
            return answer(200, registry.exposition(), registry.content_type)
        from .metrics import CONTENT_TYPE, render  # prometheus_client: not in the agent

        return answer(200, render(registry), CONTENT_TYPE)

    async def _on_loop(self, request: _Request) -> Answer:
        probes = self.host.probes
        try:
            if request.probe == "readyz":
                only = request.rest or None
                return self._text(request, await probes.readiness(request.exclusions(), only=only))
            result = await probes.health(request.exclusions())
        except UnknownCheckError as error:
            return answer(400, f"{error}\n")
        return self._health(request, result)

    def _text(
        self, request: _Request, result: ProbeResult, progress: list[str] | None = None
    ) -> Answer:
        body = probe_text(
            result, verbose=request.verbose, detailed=request.detailed, progress=progress
        )
        return answer(result.status.http_status, body)

    def _health(self, request: _Request, result: ProbeResult) -> Answer:
        settings = self.host.settings
        notes = (
            startup_lines(self.host.lifecycle.steps, detailed=True) if request.detailed else None
        )
        document = health_json(
            result,
            service=settings.service,
            version=settings.version,
            detailed=request.detailed,
            notes=notes,
        )
        return json_answer(result.status.http_status, document, HEALTH_JSON)

    def _unavailable(self, request: _Request, unavailable: LoopUnavailable) -> Answer:
        """Readiness or health while the loop cannot run them: 503, from the last result."""
        frozen = unavailable.frozen_for
        first = (
            f"event loop stalled {frozen:.1f} s"
            if frozen is not None
            else "readiness did not answer within the probe budget"
            if self.bridge.bound
            else "no event loop runs the checks (the lifespan has not started)"
        )
        stale = [(STALE_HEADER, "true")]
        if request.probe == "health":
            document = {
                "status": "fail",
                "serviceId": self.host.settings.service,
                "output": first,
            }
            return json_answer(503, document, HEALTH_JSON, stale)
        last = self.host.probes.last_readiness
        lines = [f"[-]{first}"]
        if last is None:
            lines.append("no readiness result yet")
        else:
            age = time.time() - last.at
            previous = probe_text(last, verbose=True, detailed=request.detailed).splitlines()
            lines.append(f"last result (stale, {age:.1f} s old):")
            lines.extend(f"    {line}" for line in previous)
        lines.append("readyz check failed")
        return answer(503, "\n".join(lines) + "\n", extra=stale)

    # -- dumps -------------------------------------------------------------------------

    def _debug_answer(self, request: _Request) -> Answer | None:
        """The answer that needs no dump run (``None``: run the dump)."""
        if not request.detailed:
            return answer(
                401,
                "dumps need the bearer token (Authorization: Bearer ...)\n",
                extra=[("WWW-Authenticate", 'Bearer realm="lifesigns"')],
            )
        dumps = self.host.dumps
        name = request.rest
        if name == "":
            return json_answer(200, {"dumps": sorted(dumps)})
        if name not in dumps:
            return answer(404, f"no dump {name!r}; dumps: {', '.join(sorted(dumps))}\n")
        return None

    # -- the live page (lifesigns.live) ---------------------------------------------------

    def _live_answer(self, request: _Request) -> Answer | None:
        """The page, the redirect to it, or the refusal (``None``: compute the data)."""
        assert self._live is not None
        if request.rest == "":
            return answer(308, f"see {self._live}/\n", extra=[("Location", f"{self._live}/")])
        if request.rest == "/":
            return answer(200, page_html(), "text/html; charset=utf-8", _PAGE_HEADERS)
        if request.detailed:
            return None
        if not request.credentials:
            return answer(
                401,
                "the live data needs the bearer token (Authorization: Bearer ...)\n",
                extra=[("WWW-Authenticate", 'Bearer realm="lifesigns"')],
            )
        unset = "; no token is configured (token=, LIFESIGNS_TOKEN)"
        why = "" if self.host.settings.token else unset
        return answer(403, f"wrong token{why}\n")

    def _live_data(self) -> Mapping[str, Any]:
        """``/lifesigns/data``: read in a dump thread, never on the loop (see LiveView).

        A host with its own ``live_data()`` (the agent, which reads its workers) answers
        for itself.
        """
        own = getattr(self.host, "live_data", None)
        if callable(own):
            data: Mapping[str, Any] = own()
            return data
        return LiveView(self.host).data()

    def _start_dump(
        self, name: str, producer: Dump, params: Mapping[str, list[str]]
    ) -> concurrent.futures.Future[str] | None:
        """Run ``producer`` in a daemon thread of its own; ``None`` when too many still run."""
        if not self._slots.take():
            return None
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        redact = self.host.redactor.redact

        def work() -> None:
            try:
                data = producer.produce(params) if isinstance(producer, QueryDump) else producer()
                text = json.dumps(dict(data), indent=2, default=str) + "\n"
                future.set_result(redact(text))
            except BaseException as exc:  # reported to the caller, not raised in a thread
                future.set_exception(exc)
            finally:
                self._slots.give()

        # A dump that blocks (a lock the frozen loop holds) must never take a server thread
        # or the loop: it gets its own thread, and the caller stops waiting at the timeout.
        threading.Thread(target=work, name=f"lifesigns-dump-{name}", daemon=True).start()
        return future

    def _dump_in_thread(
        self, name: str, params: Mapping[str, list[str]], producer: Dump | None = None
    ) -> Answer:
        future = self._start_dump(name, producer or self.host.dumps[name], params)
        if future is None:
            return self._too_many(name)
        try:
            text = future.result(timeout=self.dump_timeout)
        except concurrent.futures.TimeoutError:
            return self._overrun(name)
        except Exception as exc:
            return self._failed(name, exc)
        return answer(200, text, JSON)

    async def _dump_async(
        self, name: str, params: Mapping[str, list[str]], producer: Dump | None = None
    ) -> Answer:
        future = self._start_dump(name, producer or self.host.dumps[name], params)
        if future is None:
            return self._too_many(name)
        try:
            async with asyncio.timeout(self.dump_timeout):
                text = await asyncio.wrap_future(future)
        except TimeoutError:
            return self._overrun(name)
        except Exception as exc:
            return self._failed(name, exc)
        return answer(200, text, JSON)

    def _overrun(self, name: str) -> Answer:
        message = f"dump {name!r} did not answer within {self.dump_timeout:g} s"
        return json_answer(504, {"error": message, "dump": name})

    def _too_many(self, name: str) -> Answer:
        message = (
            f"dump {name!r} not started: {self._slots.limit} dumps still run "
            "(stuck ones included); try again later"
        )
        return json_answer(503, {"error": message, "dump": name}, extra=[("Retry-After", "5")])

    def _failed(self, name: str, exc: BaseException) -> Answer:
        if isinstance(exc, DumpRefused):
            return answer(exc.status, self.host.redactor.redact(f"{exc}\n"))
        message = self.host.redactor.redact(f"dump {name!r} failed: {type(exc).__name__}: {exc}")
        return json_answer(500, {"error": message, "dump": name})

    def _counted(self, probe: str, reply: Answer) -> Answer:
        self.host.metrics.probe_answers.labels(probe, str(reply.status)).inc()
        return reply


def _authorization(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> str | None:
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if key.lower() == "authorization":
            return value
    return None
