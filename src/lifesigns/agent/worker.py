"""The worker's side of ``lifesigns run``: a slot, a beat into it, and dumps for the agent.

When the agent starts the server it sets ``LIFESIGNS_AGENT_DIR``; each worker's
:class:`~lifesigns.Lifesigns` then attaches an :class:`AgentLink` (a component named
``agent-link``), which at the start of the lifespan:

* takes a slot in ``<dir>/slots`` (:mod:`~lifesigns.agent.slots`) and has the loop
  heartbeat write every beat into it (one ``struct.pack_into``);
* publishes the phase, readiness, the watchdog's current stall and the request in
  flight into the slot (on each request's arrival, and every 0.25 s);
* every ``publish_every`` seconds (2), from its own thread, writes the worker's dumps
  (pool holders, thread limiter, tasks, stalls...) to ``<dir>/worker-<slot>.json``,
  atomically, secrets masked, each dump bounded in time and the file in size, and its
  metrics to ``<dir>/metrics-<slot>.prom`` (:mod:`~lifesigns.agent.metrics`);
* asks the kernel to kill the worker when its parent (the server's master) dies, so that
  no worker outlives an agent killed by SIGKILL;
* enables :mod:`faulthandler` into ``<dir>/traceback-<pid>.txt``, after the server's own
  signal set-up (gunicorn's worker resets SIGABRT to the default), so that the SIGABRT
  the agent sends before replacing a frozen worker leaves every thread's traceback.

The worker does not bind the side port: the agent serves it for all workers (it removes
``LIFESIGNS_SIDE_PORT`` from the server's environment).
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import ENV_DIR, _linux
from .slots import Slot, SlotTable

if TYPE_CHECKING:
    from ..host import Host
    from ..loop import LoopWatch
    from ..loop.heartbeat import Heartbeat

logger = logging.getLogger("lifesigns.agent")

MAX_DUMPS_BYTES = 512 * 1024
"""Largest ``worker-<slot>.json``; beyond it the largest dumps are left out, and said so."""

# The agent samples threads itself, from outside; a memory trace is started on demand only.
_SKIPPED_DUMPS = frozenset({"threads", "memory-trace"})


def agent_dir() -> Path | None:
    """The agent's runtime folder when running under ``lifesigns run``, else ``None``."""
    value = os.environ.get(ENV_DIR, "").strip()
    return Path(value) if value else None


def attach(host: Host, watch: LoopWatch | None) -> AgentLink | None:
    """Under ``lifesigns run``, link this worker to the agent; otherwise do nothing.

    ``watch`` is the loop layer, whose heartbeat then also beats into the slot (without
    it the link runs a heartbeat of its own). The agent removes ``LIFESIGNS_SIDE_PORT``
    from the server's environment, so the workers leave the side port to it. Starts
    nothing before the lifespan.
    """
    directory = agent_dir()
    if directory is None:
        return None
    link = AgentLink(host, directory, watch)
    host.add_component(link)
    return link


class AgentLink:
    """The ``agent-link`` component: this worker's slot and what it publishes."""

    name = "agent-link"

    def __init__(
        self,
        host: Host,
        directory: Path,
        watch: LoopWatch | None,
        *,
        publish_every: float = 2.0,
        dump_timeout: float = 1.0,
    ) -> None:
        self.host = host
        self.directory = directory
        self.watch = watch
        self.publish_every = publish_every
        self.dump_timeout = dump_timeout
        self.slot: Slot | None = None
        self._table: SlotTable | None = None
        self._own_heartbeat: Heartbeat | None = None
        self._lock = threading.Lock()  # serialises slot.publish (loop thread and ours)
        self._request: Any = None  # the edge's RequestInfo of the latest request begun
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running_dumps: set[str] = set()
        self._traceback: IO[str] | None = None
        self._orphan_guard = False
        self._published_stall: int | None = None
        self._hook_requests()

    def __repr__(self) -> str:
        return f"<AgentLink {self.directory} slot={None if self.slot is None else self.slot.index}>"

    # -- lifetime ------------------------------------------------------------------

    async def start(self) -> None:
        """Take a slot, beat into it, start publishing; never fails the lifespan."""
        import asyncio

        try:
            self._table = SlotTable.open(self.directory / "slots")
            self.slot = self._table.take()
        except (OSError, ValueError, RuntimeError) as exc:
            logger.error(
                "lifesigns run: cannot take a heartbeat slot in %s: %s", self.directory, exc
            )
            return
        self._orphan_guard = _linux.die_with_parent()
        self._enable_faulthandler()
        slot = self.slot
        beat: Callable[[float], None] = lambda now: slot.beat(int(now * 1e9))  # noqa: E731
        heartbeat = self.watch.heartbeat if self.watch is not None else None
        if heartbeat is None:
            from ..loop.heartbeat import Heartbeat, interval_for

            heartbeat = self._own_heartbeat = Heartbeat(
                interval_for(self.host.settings.stall_threshold), late_after=3600.0
            )
            heartbeat.start(asyncio.get_running_loop())
        heartbeat.publish = beat
        slot.beat(time.monotonic_ns())
        self._publish_state()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lifesigns-agent-link", daemon=True)
        self._thread.start()
        logger.info("lifesigns run: worker %d beats into slot %d", os.getpid(), slot.index)

    async def stop(self) -> None:
        """Stop publishing and give the slot back."""
        import asyncio

        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 2.0)
        heartbeat = self.watch.heartbeat if self.watch is not None else self._own_heartbeat
        if heartbeat is not None:
            heartbeat.publish = None
        if self._own_heartbeat is not None:
            self._own_heartbeat.stop()
            self._own_heartbeat = None
        if self.slot is not None:
            self.slot.free()
            self.slot = None
        if self._orphan_guard:  # the lifespan is over: no longer ours to decide
            _linux.die_with_parent(0)
            self._orphan_guard = False
        if self._table is not None:
            self._table.close()
            self._table = None
        if self._traceback is not None:
            faulthandler.disable()
            self._traceback.close()
            with contextlib.suppress(OSError):
                os.unlink(self._traceback.name)
            self._traceback = None

    def _enable_faulthandler(self) -> None:
        if faulthandler.is_enabled():
            return  # someone chose where tracebacks go already (PYTHONFAULTHANDLER...)
        try:
            path = self.directory / f"traceback-{os.getpid()}.txt"
            self._traceback = path.open("w", encoding="utf-8")
            faulthandler.enable(file=self._traceback, all_threads=True)
        except OSError as exc:
            logger.warning("lifesigns run: no traceback file for SIGABRT: %s", exc)

    # -- the request in flight (on the loop thread, on every request) ---------------

    def _hook_requests(self) -> None:
        # The edge's RequestTracker has begin/end; another RequestsView may not.
        tracker: Any = self.host.requests
        begin, end = getattr(tracker, "begin", None), getattr(tracker, "end", None)
        if begin is None or end is None:
            return

        def begin_and_publish(*args: Any, **kwargs: Any) -> Any:
            info = begin(*args, **kwargs)
            self._request = info
            if self.slot is not None:
                self._publish_state()
            return info

        def end_and_publish(info: Any, *args: Any, **kwargs: Any) -> Any:
            ended = end(info, *args, **kwargs)
            if self._request is info:
                self._request = None
            return ended

        tracker.begin = begin_and_publish
        tracker.end = end_and_publish

    def _publish_state(self) -> None:
        slot = self.slot
        if slot is None:
            return
        phase = self.host.lifecycle.phase.value
        request = self._request
        stall = self.watch.watchdog.current if self.watch is not None else None
        with self._lock:
            slot.publish(
                phase=phase,
                ready=phase == "ready",
                stall_ns=int(stall.began * 1e9) if stall is not None else 0,
                request=f"{request.method} {request.route}" if request is not None else "",
                request_ns=int(request.started * 1e9) if request is not None else 0,
            )

    # -- the publishing thread -------------------------------------------------------

    def _run(self) -> None:
        next_dumps = time.monotonic()
        while not self._stop.wait(0.25):
            if self._request is None:
                in_flight = self.host.requests.in_flight()
                self._request = in_flight[-1] if in_flight else None
            # A stall the in-process watchdog just saw is published at once, so that the
            # agent's incident can hold both views of it.
            stall = self.watch.watchdog.current if self.watch is not None else None
            fresh_stall = stall is not None and stall.number != self._published_stall
            try:
                self._publish_state()
                if fresh_stall or time.monotonic() >= next_dumps:
                    self._published_stall = stall.number if stall is not None else None
                    self.publish_dumps()
                    next_dumps = time.monotonic() + self.publish_every
            except Exception:  # publishing must never end the worker's evidence for good
                logger.exception("lifesigns run: publishing to the agent failed")

    def publish_dumps(self) -> Path | None:
        """Write this worker's dumps to ``<dir>/worker-<slot>.json`` (atomically)."""
        slot = self.slot
        if slot is None:
            return None
        dumps: dict[str, Any] = {}
        for name, producer in sorted(self.host.dumps.items()):
            if name not in _SKIPPED_DUMPS:
                dumps[name] = self._take_dump(name, producer)
        document = {
            "pid": os.getpid(),
            "slot": slot.index,
            "generation": slot.generation,
            "published_at": time.time(),
            "published_ns": time.monotonic_ns(),
            "dumps": dumps,
        }
        text = self.host.redactor.redact(_bounded_json(document))
        target = self.directory / f"worker-{slot.index}.json"
        self._write(target, text)
        self._write(self.directory / f"metrics-{slot.index}.prom", self._metrics())
        return target

    def _metrics(self) -> str:
        from ..metrics import render

        return render(self.host.registry).decode("utf-8", "replace")

    def _write(self, target: Path, text: str) -> None:
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)

    def _take_dump(self, name: str, producer: Callable[[], Any]) -> Any:
        if name in self._running_dumps:
            return {"error": "the previous run of this dump has not returned yet"}
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(dict(producer()))
            except Exception as exc:
                outcome.append({"error": f"{type(exc).__name__}: {exc}"})
            finally:
                self._running_dumps.discard(name)

        # A dump that blocks (a lock the frozen loop holds) must not stop the others.
        self._running_dumps.add(name)
        helper = threading.Thread(target=run, name=f"lifesigns-agent-dump-{name}", daemon=True)
        helper.start()
        helper.join(self.dump_timeout)
        if not outcome:
            return {"error": f"did not answer within {self.dump_timeout:g} s"}
        return outcome[0]


def _bounded_json(document: dict[str, Any]) -> str:
    text = json.dumps(document, default=str)
    dumps: dict[str, Any] = document["dumps"]
    while len(text) > MAX_DUMPS_BYTES and dumps:
        sizes = {name: len(json.dumps(value, default=str)) for name, value in dumps.items()}
        largest = max(sizes, key=lambda n: sizes[n])
        if isinstance(dumps[largest], dict) and dumps[largest].get("truncated"):
            break
        dumps[largest] = {"truncated": True, "bytes": sizes[largest]}
        text = json.dumps(document, default=str)
    return text
