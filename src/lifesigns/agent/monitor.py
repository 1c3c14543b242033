"""The agent's monitor thread: reads every slot, names stalls, keeps evidence, replaces.

Every ``poll`` seconds (a fifth of the threshold, 5 to 20 ms) it reads each worker's
heartbeat from shared memory. A heartbeat older than ``stall_threshold`` starts a stall:
the worker is sampled from outside (:mod:`~lifesigns.agent.sampler`, without pausing it)
and one report is logged on ``lifesigns.agent``: the application frame, whether its thread
holds the GIL, the request from the slot, the stack innermost first. While the stall lasts
it samples again at growing intervals (2, 4, 8... x the threshold, at most
``max_interval`` apart, at most ``max_samples`` kept). Past ``live_fail_after`` it writes
an incident (every thread, Python and native, the worker's last published dumps, memory,
recent log lines), then, within the :class:`~lifesigns.agent.restarts.RestartBudget`,
sends the worker SIGABRT (its faulthandler leaves a traceback) and, if it lingers,
SIGKILL; the server (uvicorn, gunicorn) starts a replacement. With ``dry_run`` it only
records.

The state it keeps is read by the side port's threads through :meth:`Monitor.workers`,
:meth:`Monitor.liveness`, :meth:`Monitor.readiness` and :meth:`Monitor.stalls`, under
one lock that no slow work is ever done under.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .incidents import IncidentWriter
from .restarts import RestartBudget
from .sampler import Sample, ThreadStack, sample
from .slots import SlotTable, SlotView, _pid_alive

logger = logging.getLogger("lifesigns.agent")

Sampler = Callable[..., Sample]


@dataclass(frozen=True)
class AgentSettings:
    """What the agent judges by; see ``lifesigns run --help`` for each option."""

    stall_threshold: float = 0.25
    live_fail_after: float = 10.0
    min_ready: int | None = None
    dry_run: bool = False
    max_restarts: int = 3
    restart_window: float = 300.0
    cooldown: float = 5.0
    kill_grace: float = 3.0
    sample_timeout: float = 2.0
    max_samples: int = 12
    max_interval: float = 30.0

    def __post_init__(self) -> None:
        if not 0.005 <= self.stall_threshold <= 600:
            raise ValueError(
                f"stall_threshold={self.stall_threshold!r} is out of range; allowed: 0.005 to 600 s"
            )
        if self.live_fail_after <= self.stall_threshold:
            raise ValueError(
                f"live_fail_after={self.live_fail_after!r} must be longer than "
                f"stall_threshold={self.stall_threshold!r}"
            )
        if self.min_ready is not None and self.min_ready < 0:
            raise ValueError(f"min_ready={self.min_ready!r} must be >= 0 (or unset: all workers)")


@dataclass
class StallRecord:
    """One stall of one worker, as the agent saw it."""

    slot: int
    pid: int
    generation: int
    beat_ns: int
    detected_ns: int
    request: str
    samples: list[tuple[int, Sample]] = field(default_factory=list)
    ended_ns: int = 0
    incident: Path | None = None
    action: str = ""

    def duration(self, now_ns: int | None = None) -> float:
        """Seconds from the last beat to the end (or to now)."""
        end = self.ended_ns or (time.monotonic_ns() if now_ns is None else now_ns)
        return (end - self.beat_ns) / 1e9

    @property
    def latest(self) -> Sample | None:
        """The latest sample that has stacks."""
        return next((s for _, s in reversed(self.samples) if s.threads), None)

    def as_dict(self, now_ns: int | None = None) -> dict[str, Any]:
        """JSON-ready."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        latest = self.latest
        return {
            "slot": self.slot,
            "pid": self.pid,
            "generation": self.generation,
            "seconds": round(self.duration(now), 3),
            "ongoing": not self.ended_ns,
            "detected_after_s": round((self.detected_ns - self.beat_ns) / 1e9, 3),
            "request": self.request or None,
            "headline": headline(self, now),
            "seen_by": "agent (py-spy, out of process)",
            "samples": [
                {
                    "at_s": round((at - self.beat_ns) / 1e9, 3),
                    "site": _site(s),
                    "holds_gil": _holds_gil(s),
                    "error": s.error,
                }
                for at, s in self.samples
            ],
            "stack": [f.as_dict() for f in _loop_thread(latest).frames] if latest else [],
            "incident": str(self.incident) if self.incident else None,
            "action": self.action or None,
        }


def _loop_thread(s: Sample | None) -> ThreadStack:
    empty = ThreadStack(0, "", False, False, ())
    if s is None:
        return empty
    return s.main or s.gil_holder or (s.threads[0] if s.threads else empty)


def _holds_gil(s: Sample) -> bool:
    thread = _loop_thread(s)
    return bool(thread.frames) and thread.owns_gil


def _site(s: Sample) -> str:
    if s.error:
        return f"(no stack: {s.error})"
    thread = _loop_thread(s)
    frame = thread.top_app_frame or (thread.frames[0] if thread.frames else None)
    return frame.site if frame is not None else "(no Python frame)"


def headline(stall: StallRecord, now_ns: int | None = None) -> str:
    """``worker 1 (pid 42) stalled 0.3 s in app/x.py:12 in f, holding the GIL, during GET /x``."""
    latest = stall.latest or (stall.samples[-1][1] if stall.samples else None)
    where = _site(latest) if latest is not None else "(not sampled yet)"
    gil = ", holding the GIL" if latest is not None and _holds_gil(latest) else ""
    request = f", during {stall.request}" if stall.request else ""
    verb = "stalled" if not stall.ended_ns else "was stalled"
    return (
        f"worker {stall.slot} (pid {stall.pid}) {verb} {stall.duration(now_ns):.2f} s "
        f"in {where}{gil}{request}"
    )


def _stack_text(s: Sample, limit: int = 15) -> list[str]:
    thread = _loop_thread(s)
    lines = []
    for frame in thread.frames[:limit]:
        lines.append(f"    {frame.site}{'   <- application' if frame.app else ''}")
    if len(thread.frames) > limit:
        lines.append(f"    ... {len(thread.frames) - limit} outer frames")
    return lines


@dataclass
class _Worker:
    view: SlotView
    stall: StallRecord | None = None
    history: deque[StallRecord] = field(default_factory=lambda: deque(maxlen=20))
    next_sample_ns: int = 0
    interval: float = 0.0


class LogRing(logging.Handler):
    """Keeps the agent's latest log lines for incident files (a bounded ring)."""

    def __init__(self, size: int = 50) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the formatted line (the first 2000 characters)."""
        with contextlib.suppress(Exception):
            self.lines.append(self.format(record)[:2000])


class Monitor:
    """Watches every slot of ``table`` from a daemon thread (``lifesigns-agent-monitor``)."""

    def __init__(
        self,
        table: SlotTable,
        settings: AgentSettings,
        *,
        runtime_dir: Path,
        incidents: IncidentWriter | None = None,
        server_pid: Callable[[], int | None] = lambda: None,
        log_ring: LogRing | None = None,
        sampler: Sampler = sample,
    ) -> None:
        self.table = table
        self.settings = settings
        self.runtime_dir = runtime_dir
        self.incidents = incidents
        self.server_pid = server_pid
        self.log_ring = log_ring
        self.sampler = sampler
        self.budget = RestartBudget(
            settings.max_restarts, settings.restart_window, settings.cooldown
        )
        self.gave_up: str | None = None
        self.restarts = 0
        self.poll = min(0.02, max(0.005, settings.stall_threshold / 5))
        self._workers: dict[int, _Worker] = {}
        self._lock = threading.Lock()
        self._live = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reclaimed_at = 0.0
        self.stall_counts: dict[int, int] = {}
        """Stalls seen per slot since the agent started (never reset by a replacement)."""
        self.incident_count = 0
        self._unkillable: set[int] = set()

    def __repr__(self) -> str:
        return f"<Monitor {self.table.path} workers={len(self._workers)} {self.settings!r}>"

    # -- lifetime ------------------------------------------------------------------

    def start(self) -> None:
        """Start the monitor thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="lifesigns-agent-monitor", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the thread, waiting up to ``timeout`` seconds."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # the monitor must outlive its own bugs
                logger.exception("the monitor failed a round")
                self._stop.wait(1.0)
            self._stop.wait(self.poll)

    # -- one round -------------------------------------------------------------------

    def check(self) -> None:
        """Read every slot once and act on what changed."""
        now_mono = time.monotonic()
        if now_mono - self._reclaimed_at >= 1.0:
            self._reclaimed_at = now_mono
            for index in self.table.reclaim():
                logger.info("slot %d freed (its worker is gone)", index)
        views = {v.index: v for v in self.table.held()}
        with self._lock:
            for index in list(self._workers):
                known = self._workers[index]
                view = views.get(index)
                if view is None or view.generation != known.view.generation:
                    self._workers.pop(index)
                    if known.stall is not None and not known.stall.ended_ns:
                        known.stall.ended_ns = time.monotonic_ns()
                        known.stall.action = known.stall.action or "the worker went away"
            for index, view in views.items():
                worker = self._workers.get(index)
                if worker is None:
                    self._workers[index] = _Worker(view)
                    logger.info("worker %d (pid %d) took slot %d", index, view.pid, index)
                else:
                    worker.view = view
            workers = list(self._workers.values())
        now = time.monotonic_ns()
        for worker in workers:
            self._judge(worker, now)

    def _judge(self, worker: _Worker, now: int) -> None:
        view, s = worker.view, self.settings
        stall = worker.stall
        age = view.age(now)
        if stall is not None and view.beat_ns != stall.beat_ns:
            stall.ended_ns = view.beat_ns
            logger.warning("%s; it beats again", headline(stall))
            with self._lock:
                worker.stall = None
            return
        if stall is None:
            if age < s.stall_threshold or view.phase == "stopped":
                return
            stall = StallRecord(
                slot=view.index,
                pid=view.pid,
                generation=view.generation,
                beat_ns=view.beat_ns,
                detected_ns=now,
                request=view.request,
            )
            first = self.sampler(view.pid, timeout=s.sample_timeout)
            stall.samples.append((time.monotonic_ns(), first))
            with self._lock:
                worker.stall = stall
                worker.history.append(stall)
                self.stall_counts[view.index] = self.stall_counts.get(view.index, 0) + 1
                worker.interval = s.stall_threshold * 2
                worker.next_sample_ns = now + int(worker.interval * 1e9)
            lines = [headline(stall)]
            if first.error:
                lines.append(f"    (py-spy could not sample it: {first.error})")
            else:
                lines.append(f"  stack of the event loop thread, innermost first ({_dur(first)}):")
                lines.extend(_stack_text(first))
            logger.warning("\n".join(lines), extra={"lifesigns": _fields(stall, first)})
            return
        if age >= s.live_fail_after and stall.incident is None and not stall.action:
            self._incident(worker, stall, now)
            return
        if stall.action.startswith("not replaced yet"):  # in back-off: try again
            action, replace = self._decide(view)
            if replace or not action.startswith("not replaced yet"):
                with self._lock:
                    stall.action = action
                logger.warning("worker %d (pid %d): %s", view.index, view.pid, action)
            if replace:
                self._start_replace(view, stall.incident)
            return
        if now >= worker.next_sample_ns and len(stall.samples) < s.max_samples:
            again = self.sampler(view.pid, timeout=s.sample_timeout)
            with self._lock:
                stall.samples.append((time.monotonic_ns(), again))
                worker.interval = min(worker.interval * 2, s.max_interval)
                worker.next_sample_ns = time.monotonic_ns() + int(worker.interval * 1e9)
            logger.warning("still %s", headline(stall))

    # -- evidence, then replacement ---------------------------------------------------

    def _incident(self, worker: _Worker, stall: StallRecord, now: int) -> None:
        view, s = worker.view, self.settings
        python = self.sampler(view.pid, timeout=s.sample_timeout)
        native = self.sampler(view.pid, native=True, timeout=s.sample_timeout)
        with self._lock:
            stall.samples.append((time.monotonic_ns(), python))
        action, replace = self._decide(view)
        published = self._published(view)
        incident = {
            "summary": headline(stall),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "agent_pid": os.getpid(),
            "path": "agent (py-spy, out of process)",
            "action": action,
            "worker": {
                "slot": view.index,
                "pid": view.pid,
                "generation": view.generation,
                "phase": view.phase,
                "ready": view.ready,
                "heartbeat_age_s": round(view.age(), 3),
                "request": view.request or None,
                "request_age_s": (
                    round((time.monotonic_ns() - view.request_ns) / 1e9, 3)
                    if view.request_ns
                    else None
                ),
            },
            "settings": {
                "stall_threshold_s": s.stall_threshold,
                "live_fail_after_s": s.live_fail_after,
                "dry_run": s.dry_run,
            },
            "gil_holder": (python.gil_holder.as_dict() if python.gil_holder else None),
            "stacks": {"python": python.as_dict(), "native": native.as_dict()},
            "stall": stall.as_dict(),
            "memory": _memory(view.pid),
            "published": published,
            "in_process": _in_process_view(published, python),
            "agent_log": list(self.log_ring.lines) if self.log_ring is not None else [],
        }
        path = None
        if self.incidents is not None:
            try:
                path = self.incidents.write(incident)
            except OSError as exc:
                logger.error("could not write the incident file: %s", exc)
        with self._lock:
            stall.incident = path
            stall.action = action
            self.incident_count += 1
        logger.error(
            "worker %d (pid %d) frozen %.1f s, past live_fail_after=%g s; incident %s; %s",
            view.index,
            view.pid,
            view.age(),
            s.live_fail_after,
            path or "(not written)",
            action,
        )
        if replace:
            self._start_replace(view, path)

    def _start_replace(self, view: SlotView, incident: Path | None) -> None:
        threading.Thread(
            target=self._replace,
            args=(view, incident),
            name=f"lifesigns-agent-replace-{view.pid}",
            daemon=True,
        ).start()

    def _decide(self, view: SlotView) -> tuple[str, bool]:
        if self.settings.dry_run:
            return "dry run: recorded only, the worker is left running", False
        if view.pid == self.server_pid():
            return (
                "not replaced: the worker is the server itself (no supervisor to restart it)",
                False,
            )
        if self.gave_up:
            return f"not replaced: {self.gave_up}", False
        mono = time.monotonic()
        if self.budget.exhausted(mono):
            s = self.settings
            self.gave_up = (
                f"gave up after {s.max_restarts} restarts in {s.restart_window:g} s; "
                "liveness fails so that the orchestrator takes over"
            )
            logger.error("%s", self.gave_up)
            return f"not replaced: {self.gave_up}", False
        if not self.budget.allows(mono):
            wait = self.budget.next_allowed(mono) - mono
            return f"not replaced yet: restart back-off, {wait:.1f} s to go", False
        self.budget.record(mono)
        self.restarts += 1
        return "replaced: SIGABRT (faulthandler traceback), then SIGKILL if it lingers", True

    def _replace(self, view: SlotView, incident: Path | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(view.pid, signal.SIGABRT)
        deadline = time.monotonic() + self.settings.kill_grace
        while _pid_alive(view.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _pid_alive(view.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(view.pid, signal.SIGKILL)
            logger.warning("worker pid %d ignored SIGABRT; SIGKILL sent", view.pid)
            deadline = time.monotonic() + self.settings.kill_grace
            while _pid_alive(view.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _pid_alive(view.pid):  # stuck in the kernel (D state): nothing more to do here
                self._unkillable.add(view.pid)
                logger.error("worker pid %d survived SIGKILL; liveness fails", view.pid)
                return
        traceback_file = self.runtime_dir / f"traceback-{view.pid}.txt"
        text = ""
        with contextlib.suppress(OSError):
            text = traceback_file.read_text(errors="replace")[:200_000]
            traceback_file.unlink()
        if text.strip():
            logger.warning("worker pid %d's own traceback:\n%s", view.pid, text)
        if incident is not None and self.incidents is not None:
            try:
                self.incidents.update(incident, {"traceback_at_kill": text or None})
            except (OSError, ValueError) as exc:
                logger.error("could not add the traceback to %s: %s", incident, exc)
        logger.warning(
            "worker %d (pid %d) ended; the server starts its replacement",
            view.index,
            view.pid,
        )

    def _published(self, view: SlotView) -> dict[str, Any] | None:
        path = self.runtime_dir / f"worker-{view.index}.json"
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if document.get("pid") != view.pid:
            return None
        document["age_s"] = round(time.time() - float(document.get("published_at", 0)), 3)
        return dict(document)

    # -- views, from the side port's threads ------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        """Every worker: slot, pid, phase, readiness, heartbeat age, request, stall."""
        now = time.monotonic_ns()
        with self._lock:
            items = sorted(self._workers.items())
            out = []
            for index, worker in items:
                view = worker.view
                out.append(
                    {
                        "slot": index,
                        "pid": view.pid,
                        "generation": view.generation,
                        "phase": view.phase,
                        "ready": view.ready,
                        "heartbeat_age_s": round(view.age(now), 3),
                        "request": view.request or None,
                        "stall": worker.stall.as_dict(now) if worker.stall else None,
                        "stalls_seen": len(worker.history),
                    }
                )
        return out

    def _frozen(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        workers = self.workers()
        frozen = [w for w in workers if w["heartbeat_age_s"] >= self.settings.live_fail_after]
        return workers, frozen

    def liveness(self) -> tuple[bool, list[str]]:
        """``(alive, reasons)``: dead only when the service cannot serve.

        A worker frozen past ``live_fail_after`` that cannot be replaced (no supervisor,
        dry run, the restart budget spent), or every worker frozen.
        """
        workers, frozen = self._frozen()
        server = self.server_pid()
        reasons = []
        if self.gave_up:
            reasons.append(self.gave_up)
        for w in frozen:
            why = None
            if self.settings.dry_run:
                why = "dry run"
            elif w["pid"] == server:
                why = "it is the server itself"
            elif w["pid"] in self._unkillable:
                why = "it survived SIGKILL"
            if why:
                reasons.append(
                    f"worker {w['slot']} (pid {w['pid']}) frozen {w['heartbeat_age_s']:.1f} s "
                    f"and cannot be replaced ({why})"
                )
        if workers and len(frozen) == len(workers):
            reasons.append(f"all {len(workers)} workers frozen")
        return not reasons, reasons

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)``: at least ``min_ready`` workers (default all) ready, unstalled."""
        workers = self.workers()
        ready = [
            w
            for w in workers
            if w["ready"] and w["heartbeat_age_s"] < self.settings.stall_threshold
        ]
        wanted = self.settings.min_ready if self.settings.min_ready is not None else len(workers)
        wanted = max(wanted, 1)
        return len(
            ready
        ) >= wanted, f"{len(ready)} of {len(workers)} workers ready, {wanted} needed"

    def stalls(self, slot: int | None = None) -> dict[str, Any]:
        """Recent stalls seen by the agent, for one slot or all."""
        now = time.monotonic_ns()
        with self._lock:
            chosen = [
                (index, w)
                for index, w in sorted(self._workers.items())
                if slot is None or index == slot
            ]
            result = {
                str(index): {
                    "pid": w.view.pid,
                    "current": w.stall.as_dict(now) if w.stall else None,
                    "recent": [r.as_dict(now) for r in reversed(w.history)],
                }
                for index, w in chosen
            }
        return {"threshold_s": self.settings.stall_threshold, "workers": result}

    def sample_live(self, slot: int) -> dict[str, Any] | None:
        """Every thread of worker ``slot`` now (py-spy), or ``None`` if no such worker.

        One at a time: a second caller while one runs gets ``{"busy": True}``.
        """
        with self._lock:
            worker = self._workers.get(slot)
        if worker is None:
            return None
        if not self._live.acquire(blocking=False):
            return {"busy": True, "error": "another live sample is being taken; try again"}
        try:
            taken = self.sampler(worker.view.pid, timeout=self.settings.sample_timeout)
        finally:
            self._live.release()
        return {"slot": slot, **taken.as_dict()}

    def published(self, slot: int) -> dict[str, Any] | None:
        """What worker ``slot`` last published (its dumps), if it is still that worker."""
        with self._lock:
            worker = self._workers.get(slot)
        return None if worker is None else self._published(worker.view)


def _in_process_view(published: dict[str, Any] | None, s: Sample) -> dict[str, Any]:
    """What the worker's own watchdog said of this stall, and whether both name one frame."""
    stalls = ((published or {}).get("dumps") or {}).get("stalls") or {}
    current = stalls.get("current") if isinstance(stalls, dict) else None
    if not current:
        return {
            "headline": None,
            "agrees": None,
            "note": "the in-process watchdog had published no stall in progress (C code "
            "holding the GIL stops it, or the stall began after its last publication)",
        }
    thread = _loop_thread(s)
    frame = thread.top_app_frame
    site = f"{Path(frame.filename).name}:{frame.line}" if frame is not None else None
    headline_text = str(current.get("headline", ""))
    return {
        "headline": headline_text,
        "agrees": None if site is None else site in headline_text,
        "published_age_s": (published or {}).get("age_s"),
    }


def _fields(stall: StallRecord, s: Sample) -> dict[str, Any]:
    """The structured fields of a stall line (``extra={"lifesigns": ...}``)."""
    thread = _loop_thread(s)
    frame = thread.top_app_frame or (thread.frames[0] if thread.frames else None)
    return {
        "event": "stall",
        "seen_by": "agent",
        "worker": stall.slot,
        "pid": stall.pid,
        "stalled_s": round(stall.duration(), 3),
        "site": f"{frame.as_dict()['file']}:{frame.line}" if frame is not None else None,
        "function": frame.function if frame is not None else None,
        "holds_gil": _holds_gil(s),
        "request": stall.request or None,
        "error": s.error,
    }


def _dur(s: Sample) -> str:
    return f"py-spy, {s.duration * 1000:.0f} ms"


def _memory(pid: int) -> dict[str, str]:
    figures = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSize", "Threads"):
                figures[key] = value.strip()
    return figures
