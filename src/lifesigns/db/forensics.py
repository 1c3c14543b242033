"""Pool forensics for one watched engine: ``attach()`` wires every part together.

**Usage** (``Lifesigns.watch_engine`` does this for you; a light host is enough)::

    host = Host()
    watched = WatchedEngine("database", engine, timeout=0.5)
    forensics = attach(host, watched, leak_threshold=30, saturated_after=10)

What it wires (nothing starts before the lifespan; listeners only record):

* the holder registry on the engine's pool events (:mod:`~lifesigns.db.holders`);
* a forensics thread (a component of the host, started and stopped by the lifespan)
  that scans every ``scan_interval``, and four times a second while connections are
  checked out: leaks by owner and by age (:mod:`~lifesigns.db.leaks`), one exhaustion
  snapshot per episode (:mod:`~lifesigns.db.snapshot`), PostgreSQL's view of the
  holders (:mod:`~lifesigns.db.server_view`) and sizing samples
  (:mod:`~lifesigns.db.sizing`);
* the pressure check ``<engine>-pool`` (:mod:`~lifesigns.db.saturation`; it warns,
  and fails readiness only with ``on_saturation="fail"``) and the non-critical
  ``<engine>-pool-sizing`` check;
* the token-protected dump ``/debug/pool`` (all attached engines, and the bulkheads);
* the ``lifesigns_pool_*`` metrics (:mod:`~lifesigns.db.pool_metrics`).

State lives on the host's layers (``db.pools``, ``db.forensics.<engine>``), never in
module globals. Reports go to the ``lifesigns.pool`` logger, through the host's redactor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from .. import _config
from .._config import UNSET
from ..errors import ConfigError
from ..host import HasHost, Host, as_host
from .bulkhead import bulkheads_of
from .engine import WatchedEngine
from .holders import CurrentRequest, Holder, HolderRegistry, pool_figures
from .leaks import LeakDetector, leak_threshold
from .pool_metrics import PoolCollector
from .saturation import (
    DEFAULT_WAIT_WARN,
    SaturationAction,
    SaturationCheck,
    saturation_action,
)
from .server_view import Backend, ServerView
from .sites import SiteCapture
from .sizing import SizingAdvisor
from .snapshot import ExhaustionSnapshots

logger = logging.getLogger("lifesigns.pool")

LIMITS_REFRESH = 600.0
"""Seconds between reads of the server's ``max_connections``."""

LIMITS_RETRY = 5.0
"""Seconds before reading them again after a failed read (the database was down)."""

OWNER_SCAN = 0.25
"""Seconds between scans while connections are checked out, so that a connection left
behind by a finished request is reported within a second."""


def _fraction(name: str, value: object, *, from_env: bool = False) -> float:
    where = f"LIFESIGNS_{name.upper()}" if from_env else name
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0.0 <= number <= 1.0:
        raise ConfigError(f"{where}={value!r} is out of range; allowed: a number from 0 to 1")
    return number


def _full_stacks(name: str, value: object, *, from_env: bool = False) -> float:
    if value is True or value is False:
        return 1.0 if value else 0.0
    if from_env and str(value).strip().lower() in {"true", "yes", "on", "false", "no", "off"}:
        return 1.0 if _config.boolean(name, value, from_env=True) else 0.0
    return _fraction(name, value, from_env=from_env)


def _replicas(name: str, value: object, *, from_env: bool = False) -> int | None:
    if value is None:
        return None
    where = f"LIFESIGNS_{name.upper()}" if from_env else name
    try:
        number = int(str(value), 10) if not isinstance(value, bool) else 0
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"{where}={value!r} is not a replica count; allowed: an integer >= 1")
    return number


def _leak_threshold(name: str, value: object, *, from_env: bool = False) -> float | None:
    if from_env and str(value).strip().lower() in {"off", "none"}:
        return None
    return leak_threshold(float(value) if from_env else value)  # type: ignore[arg-type]


def _action(name: str, value: object, *, from_env: bool = False) -> SaturationAction:
    return saturation_action(str(value).strip().lower() if from_env else value)


def _saturated_after(name: str, value: object, *, from_env: bool = False) -> float:
    return _config.seconds(name, value, maximum=3600, from_env=from_env)


@dataclass(frozen=True)
class ForensicsSettings:
    """The validated options of :func:`attach` (see there)."""

    leak_threshold: float | None
    saturated_after: float
    on_saturation: SaturationAction
    high_water: float
    low_water: float
    full_stacks: float
    stack_depth: int
    scan_interval: float
    server_view: bool
    query_timeout: float
    replicas: int | None
    wait_warn: float = DEFAULT_WAIT_WARN


class PoolForensics:
    """Everything lifesigns knows about one engine's pool; a lifespan component.

    ``holders`` is the live registry, ``leaks``, ``snapshots`` and ``sizing`` its
    readers. :meth:`dump` is what ``/debug/pool`` serves for this engine.
    """

    def __init__(
        self,
        host: Host,
        watched: WatchedEngine,
        settings: ForensicsSettings,
        *,
        current_request: CurrentRequest | None = None,
    ) -> None:
        self.host = host
        self.watched = watched
        self.settings = settings
        self.name = watched.name
        self.sites = SiteCapture(depth=settings.stack_depth, full_stacks=settings.full_stacks)
        self.holders = HolderRegistry(
            watched.sync_engine,
            self.sites,
            high_water=settings.high_water,
            low_water=settings.low_water,
            current_request=current_request or _task_request(host),
        )
        self.leaks = LeakDetector(watched.name, settings.leak_threshold)
        self.snapshots = ExhaustionSnapshots(watched.name)
        self.saturation = SaturationCheck(
            self.holders,
            saturated_after=settings.saturated_after,
            on_saturation=settings.on_saturation,
            wait_warn=settings.wait_warn,
        )
        self.sizing = SizingAdvisor(self.holders, replicas=settings.replicas, leaks=self.leaks)
        self.server = ServerView(
            watched.engine, timeout=settings.query_timeout, redactor=host.redactor
        )
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._episode_timeouts_base = 0

    def __repr__(self) -> str:
        return f"PoolForensics({self.name!r}, {self.settings})"

    # -- component --------------------------------------------------------------------

    @property
    def component_name(self) -> str:
        """``pool forensics database``."""
        return f"pool forensics {self.name}"

    async def start(self) -> None:
        """Start the forensics thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"lifesigns pool {self.name}", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Stop the forensics thread (it finishes its current scan, bounded by the
        server query timeout)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self.holders.wake.set()
        await asyncio.to_thread(thread.join, self.settings.query_timeout + 2.0)

    def detach(self) -> None:
        """Remove the pool listeners (the checks, dump and metrics stay registered)."""
        self.holders.remove()

    def _run(self) -> None:
        registry = self.holders
        wake = registry.wake
        interval = self.settings.scan_interval
        busy_at = time.monotonic()
        first = True  # scan at once: the server's limits are known from the start
        while not self._stopping.is_set():
            if not first:
                if registry.holders:
                    busy_at = time.monotonic()
                if time.monotonic() - busy_at < interval:
                    wake.wait(min(interval, OWNER_SCAN))
                else:
                    # Idle for a whole interval: sleep long; the next checkout wakes us.
                    registry.idle_sleep = True
                    if not registry.holders:
                        wake.wait(interval)
                    registry.idle_sleep = False
            first = False
            wake.clear()
            if self._stopping.is_set():
                break
            try:
                self.tick()
            except Exception:
                logger.exception("pool forensics for %r failed a scan", self.name)

    # -- the scan -------------------------------------------------------------------

    def tick(self) -> None:
        """One scan: returned leaks, new leaks, the episode's snapshot, sizing samples."""
        registry = self.holders
        registry.refresh()
        redact = self.host.redactor.redact
        while registry.returned:
            holder, held = registry.returned.popleft()
            logger.info("%s", redact(self.leaks.returned_report(holder, held)))
        now = time.monotonic()
        current = list(registry.holders.values())
        orphans = self.leaks.owner_scan(current, now)
        leaked = self.leaks.scan(current, now)
        episode = registry.episode_number
        snapshot_due = episode > self.snapshots.reported_episode
        holders: list[Holder] = []
        returned: list[Holder] = []
        if snapshot_due:
            # Every holder now, and those of the moment the episode opened that have gone
            # back since (a short spike can be over before this thread wakes).
            holders = current
            returned = [h for h in registry.episode_holders if h not in current]
        backends: dict[int, Backend] = {}
        note: str | None = None
        if orphans or leaked or snapshot_due:
            orphaned = [h for h, _, _ in orphans]
            everyone = (*orphaned, *leaked, *holders, *returned)
            backends, note = self._backends([h.backend_pid for h in everyone if h.backend_pid])
        for holder, since_end, how in orphans:
            backend = backends.get(holder.backend_pid or 0)
            report = self.leaks.owner_report(holder, since_end, how, backend, note)
            logger.warning("%s", redact(report))
        for holder in leaked:
            report = self.leaks.report(holder, backends.get(holder.backend_pid or 0), note)
            logger.warning("%s", redact(report))
        if snapshot_due:
            self._episode_timeouts_base = max(0, registry.timeouts - 1)
            report = self.snapshots.report(
                episode,
                registry.episode_trigger or "exhaustion",
                holders,
                {**pool_figures(self.watched.sync_engine.pool), "capacity": registry.capacity},
                registry.waiting(),
                backends,
                note,
                returned=returned,
            )
            logger.warning("%s", redact(report))
        if (
            self.snapshots.started is not None
            and not registry.episode_open
            and self.snapshots.reported_episode == registry.episode_number
        ):
            timeouts = registry.timeouts - self._episode_timeouts_base
            logger.info("%s", redact(self.snapshots.over(episode, timeouts)))
        self.sizing.sample(now)
        self._refresh_limits(now)

    def _backends(self, pids: list[int]) -> tuple[dict[int, Backend], str | None]:
        if not self.settings.server_view or not self.server.available:
            return {}, None
        try:
            return self.server.backends(pids), None
        except Exception as exc:
            return {}, f"server view unavailable: {exc}"

    def _refresh_limits(self, now: float) -> None:
        sizing = self.sizing
        if not self.settings.server_view or not self.server.available:
            return
        # Soon again after a failed read: the database may have been down at start.
        every = LIMITS_REFRESH if sizing.limits else LIMITS_RETRY
        if sizing.limits_at is not None and now - sizing.limits_at < every:
            return
        try:
            sizing.set_limits(self.server.limits())
        except Exception as exc:
            sizing.set_limits(sizing.limits, f"max_connections unknown: {exc}")

    # -- reading --------------------------------------------------------------------

    def gauges(self) -> dict[str, float | None]:
        """The pool's gauges for the metrics collector."""
        registry = self.holders
        figures = pool_figures(self.watched.sync_engine.pool)
        waiting, _ = registry.waiting()
        out = registry.checked_out()
        capacity = registry.capacity
        oldest = min((h.taken for h in list(registry.holders.values())), default=None)
        longest = 0.0 if oldest is None else max(0.0, time.monotonic() - oldest)
        return {
            "size": figures.get("size"),
            "capacity": capacity,
            "checked_out": out,
            "checked_in": figures.get("checked_in"),
            "overflow": max(0, figures["overflow"]) if "overflow" in figures else None,
            "waiting": waiting,
            "utilization": out / capacity if capacity else None,
            "saturated": 1.0 if registry.saturated_since is not None else 0.0,
            "longest_hold_seconds": longest,
            "peak_checked_out": registry.peak,
        }

    @property
    def episodes_total(self) -> int:
        """Exhaustion episodes so far."""
        return self.holders.episode_number

    def dump(self) -> dict[str, Any]:
        """This engine's part of ``/debug/pool``: pool, holders, leaks, episodes, sizing."""
        registry = self.holders
        now = time.monotonic()
        holders = registry.current()
        waiting, oldest = registry.waiting()
        figures = pool_figures(self.watched.sync_engine.pool)
        capacity = registry.capacity
        out = registry.checked_out()
        return {
            "engine": self.watched.url,
            "settings": asdict(self.settings),
            "pool": {
                **figures,
                "capacity": capacity,
                "utilization": round(out / capacity, 3) if capacity else None,
                "waiting": waiting,
                "oldest_wait_s": round(oldest, 3),
                "saturated_for_s": round(self.saturation.saturated_for(now), 3),
                "peak_checked_out": registry.peak,
                "checkouts": registry.checkouts,
                "checkout_timeouts": registry.timeouts,
            },
            "holders": [h.as_dict(now) for h in holders],
            "holders_by_site": dict(Counter(h.site for h in holders)),
            "holders_by_route": dict(Counter(h.group for h in holders)),
            "holders_by_owner_and_site": dict(Counter(f"{h.group} at {h.site}" for h in holders)),
            "leaks": self.leaks.state(),
            "episodes": list(self.snapshots.recent),
            "episode_open": registry.episode_open,
            "sizing": self.sizing.advice(),
            "internal_errors": registry.internal_errors,
        }


class _ComponentAdapter:
    """Gives :class:`PoolForensics` the ``name`` the Component protocol expects."""

    def __init__(self, forensics: PoolForensics) -> None:
        self.forensics = forensics
        self.name = forensics.component_name

    async def start(self) -> None:
        await self.forensics.start()

    async def stop(self) -> None:
        await self.forensics.stop()


class _Pools:
    """The pools attached to one host: one dump and one metrics collector for all."""

    def __init__(self, host: Host) -> None:
        self.pools: list[PoolForensics] = []
        redactor = host.redactor

        def pool_dump() -> dict[str, Any]:
            bulkheads = bulkheads_of(host)
            data = {
                "engines": {p.name: p.dump() for p in list(self.pools)},
                "bulkheads": bulkheads.state() if bulkheads is not None else {},
            }
            # One last pass over the whole text: no secret leaves, whatever field held it.
            cleaned: dict[str, Any] = json.loads(redactor.redact(json.dumps(data, default=str)))
            return cleaned

        host.add_dump("pool", pool_dump)
        host.registry.register(PoolCollector(lambda: list(self.pools)))


POOLS_LAYER = "db.pools"


def pools_of(host: Host) -> list[PoolForensics]:
    """The pool forensics attached to ``host``, in attach order."""
    found = host.find_layer(POOLS_LAYER)
    return list(found.pools) if isinstance(found, _Pools) else []


def _task_request(host: Host) -> CurrentRequest:
    """The request tracker's ``current()`` where it has one (the edge's reads its context
    variable, seen in worker threads too), else the request of the running task."""
    requests = host.requests
    current_of_tracker = getattr(requests, "current", None)
    if callable(current_of_tracker):
        found: CurrentRequest = current_of_tracker
        return found

    def current() -> Any:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no loop in this thread
            return None
        return requests.for_task(task) if task is not None else None

    return current


def attach(
    target: Host | HasHost,
    watched: WatchedEngine,
    *,
    leak_threshold: float | object | None = UNSET,
    saturated_after: float | object = UNSET,
    on_saturation: SaturationAction | str | object = UNSET,
    wait_warn: float | object = UNSET,
    high_water: float | object = UNSET,
    low_water: float | object = UNSET,
    full_stacks: bool | float | object = UNSET,
    stack_depth: int | object = UNSET,
    scan_interval: float | object | None = UNSET,
    server_view: bool | object = UNSET,
    query_timeout: float | object = UNSET,
    replicas: int | object | None = UNSET,
    current_request: CurrentRequest | None = None,
) -> PoolForensics:
    """Watch ``watched``'s pool: holders, leaks, pressure, exhaustion, sizing, dump.

    ``target`` is the host (or its owner, a :class:`~lifesigns.Lifesigns`). Each option
    is, in order: the argument, else ``LIFESIGNS_<NAME>``, else the host's settings
    (the settings table, :data:`lifesigns._config.OPTIONS`):

    * ``leak_threshold``: seconds a connection may be held, while its owner still runs,
      before it is reported as a suspected leak; default 30 (SQLAlchemy's
      ``pool_timeout``), minimum 2 (HikariCP's floor), ``None`` turns it off. A
      connection its finished owner left behind is reported within a second, whatever
      this says. See :mod:`.leaks`.
    * ``on_saturation``: ``"warn"`` (the default: pressure shows in ``/health``, never
      in readiness) or ``"fail"`` (opt-in; its risk is in :mod:`.saturation`);
      ``saturated_after``: seconds of saturation, with checkouts failing, before
      ``"fail"`` fails readiness (10); ``wait_warn``: the p95 checkout wait (seconds)
      that counts as pressure (0.1).
    * ``high_water``, ``low_water``: fractions of capacity that open and close an
      exhaustion episode (0.9 and 0.5). See :mod:`.snapshot`.
    * ``full_stacks``: fraction of checkouts that also record their whole stack
      (0 by default; ``True`` means every one, at a few microseconds each).
    * ``stack_depth``: application frames kept per checkout site (6).
    * ``scan_interval``: seconds between scans while the pool is idle; default a
      quarter of ``leak_threshold``, within 0.25-5 s (a quarter of a second while
      connections are checked out).
    * ``server_view``: ask PostgreSQL about the holders' backends (on by default);
      ``query_timeout``: the bound on each such query, connection included (2 s).
    * ``replicas``: how many copies of this process run, for the sizing check
      against ``max_connections``.
    * ``current_request``: returns the request the calling code serves (the edge's
      context variable, passed in by the assembler); by default ``host.requests``'s
      ``current()``, else the request of the running task.

    Attaching again to the same engine with the same settings returns the same
    forensics; with other settings raises :class:`~lifesigns.errors.ConfigError`
    naming both. Raises it too for a bad option, and ``RuntimeError`` when the
    lifespan already runs (the forensics thread could not be started with it).
    """
    host = as_host(target)
    base = host.settings

    def pick(name: str, given: object, validate: Any = None) -> Any:
        check = validate if validate is not None else _config.option(name).check
        return _config.resolve(name, given, getattr(base, name), check)

    threshold = pick("leak_threshold", leak_threshold, _leak_threshold)
    interval = pick("scan_interval", scan_interval)
    if interval is None:
        interval = min(5.0, max(0.25, (threshold or 20.0) / 4))
    settings = ForensicsSettings(
        leak_threshold=threshold,
        saturated_after=pick("saturated_after", saturated_after, _saturated_after),
        on_saturation=pick("on_saturation", on_saturation, _action),
        high_water=pick("high_water", high_water, _fraction),
        low_water=pick("low_water", low_water, _fraction),
        full_stacks=pick("full_stacks", full_stacks, _full_stacks),
        stack_depth=pick("stack_depth", stack_depth),
        scan_interval=interval,
        server_view=pick("server_view", server_view),
        query_timeout=pick("query_timeout", query_timeout),
        replicas=pick("replicas", replicas, _replicas),
        wait_warn=pick("wait_warn", wait_warn),
    )
    if settings.low_water >= settings.high_water:
        raise ConfigError(
            f"low_water={settings.low_water!r} must be below "
            f"high_water={settings.high_water!r}: an episode closes at low_water after "
            "opening at high_water"
        )

    def build() -> PoolForensics:
        pools = host.layer(POOLS_LAYER, None, lambda: _Pools(host))
        forensics = PoolForensics(host, watched, settings, current_request=current_request)
        host.add_component(_ComponentAdapter(forensics))
        host.add_check(
            f"{watched.name}-pool",
            forensics.saturation,
            critical=forensics.saturation.critical,
            timeout=0.5,
            pass_ttl=0.25,
            fail_ttl=0.25,
            component_type="datastore",
        )
        host.add_check(
            f"{watched.name}-pool-sizing",
            forensics.sizing.check,
            critical=False,
            timeout=0.5,
            component_type="datastore",
        )
        forensics.holders.install()
        pools.pools.append(forensics)
        return forensics

    # The engine itself is part of the key: one engine's forensics, whatever its name.
    forensics = host.layer(f"db.forensics.{watched.name}", settings, build)
    if forensics.watched.sync_engine is not watched.sync_engine:
        raise ConfigError(
            f"pool forensics are already attached to another engine named {watched.name!r}"
        )
    return forensics
