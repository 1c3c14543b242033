"""The incident lab's catalogue: every incident of the seeds, reproducible on demand.

Each :class:`Incident` names the seed it comes from, what the service does when it
happens, and what lifesigns says about it. ``lifesigns lab --list`` prints this table,
``lifesigns lab NAME`` triggers one against a running demo (``POST /lab/incidents/NAME``),
and the live page's lab tab has a button for each. Every incident is bounded in time and
count: it ends by itself and the service recovers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["INCIDENTS", "Incident", "by_name"]


@dataclass(frozen=True)
class Incident:
    """One reproducible incident."""

    name: str
    seeds: str
    title: str
    what_happens: str
    look_for: str
    needs: str | None = None
    """``"postgresql"`` when SQLite cannot show it (``"postgresql and --workers 2"``)."""
    lasts_s: float = 5.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


INCIDENTS: tuple[Incident, ...] = (
    Incident(
        "blocking-call",
        "000, 003",
        "a sync call inside an async def freezes the event loop",
        "GET /invoices/{id} converts the total with a sync helper that retries an upstream "
        "with tenacity's blocking sleep: every request of the worker waits about 2.5 s",
        "the stall report naming lifesigns/lab/invoices.py and the request GET /invoices/{id}",
        lasts_s=3.0,
    ),
    Incident(
        "cpu-bound",
        "001",
        "a CPU-bound Python loop on the event loop",
        "GET /orders/{id}/similar scores every order against every other in pure Python "
        "for about 2 s",
        "a stall of class python-busy naming lifesigns/lab/recommend.py",
        lasts_s=3.0,
    ),
    Incident(
        "regex-gil",
        "001",
        "C code holding the GIL: a catastrophic regular expression",
        "POST /signup validates an e-mail address with a nested quantifier; the regex engine "
        "holds the GIL for about 4 s, so no Python thread of the worker runs",
        "a stall of class c-holding-gil naming the validation line of lifesigns/lab/signup.py",
        lasts_s=5.0,
    ),
    Incident(
        "thread-starvation",
        "000",
        "anyio's 40 worker threads all wait on one lock",
        "45 concurrent GET /exports/orders.csv (sync def endpoints) wait for a lock a slow "
        "export holds for 7 s; every other sync endpoint queues behind them",
        "thread-pool saturated: 40 of 40 tokens, the holders' stacks at lifesigns/lab/exports.py",
        lasts_s=8.0,
    ),
    Incident(
        "session-leak",
        "000",
        "a session not closed on an error path",
        "POST /orders/{id}/charge opens a session, and a declined payment raises before it is "
        "closed: the connection stays checked out after the request ended with 402",
        "a pool leak naming the checkout line in lifesigns/lab/billing.py and the 402 that ended "
        "its request; 5 s later the lab lets the error report go and the connection returns",
        lasts_s=5.0,
    ),
    Incident(
        "batch-starves-pool",
        "002",
        "a batch job takes every connection and the API starves",
        "the nightly statistics rebuild runs 8 chunks at once, each holding a connection "
        "for 4 s; GET /orders waits for the pool",
        "pool exhaustion listing the holders at lifesigns/lab/nightly.py, with waiting checkouts",
        lasts_s=6.0,
    ),
    Incident(
        "batch-with-bulkhead",
        "002",
        "the same batch job behind a bulkhead",
        "the rebuild's chunks go through bulkhead('nightly', max_connections=2): at most 2 "
        "connections, so the API keeps its reserve",
        "GET /orders stays fast; /debug/pool shows the bulkhead at 2 of 2 with chunks waiting",
        lasts_s=10.0,
    ),
    Incident(
        "import-time-task",
        "001",
        "a task created at import time that blocks the loop now and then",
        "a legacy module is imported lazily; at import it starts a token-refresh loop with "
        "asyncio.get_event_loop().create_task, unsupervised, whose cleanup blocks 0.6 s a run",
        "stalls naming lifesigns/lab/legacy_jobs.py and the census naming the unsupervised task",
        lasts_s=6.0,
    ),
    Incident(
        "database-down",
        "004",
        "the database stops answering mid-run",
        "the demo's database refuses new connections for 8 s and its sessions are cut",
        "/readyz 503 naming the database while /livez stays 200; GET /lab/naive-health (the "
        "seed's health check) still says healthy",
        needs="postgresql",
        lasts_s=8.0,
    ),
    Incident(
        "database-down-at-start",
        "004",
        "the service starts while its database is not up yet",
        "the database refuses connections for 10 s and the workers are replaced meanwhile "
        "(SIGTERM to each; uvicorn's supervisor starts new ones): they start into a database "
        "that does not answer",
        "start-up waiting with back-off (one line per attempt, the driver's message once), "
        "/startupz 503 with the attempt count, /livez 200, ready within 2 s of the database "
        "answering; no crash, no traceback",
        needs="postgresql and --workers 2",
        lasts_s=10.0,
    ),
    Incident(
        "memory-leak",
        "001",
        "an in-memory cache that never evicts",
        "GET /catalog/{sku} caches every rendered page in a module-level dict, about 50 MB/min "
        "for 90 s",
        "leak suspected, naming lifesigns.lab.catalog._rendered and its insert line",
        lasts_s=90.0,
    ),
    Incident(
        "crash-loop",
        "001",
        "a periodic task that fails every run",
        "the inventory sync (every 2 s) raises for 20 s while its upstream feed is broken",
        "task failures with growing back-off, then the task marked failed in /health",
        lasts_s=20.0,
    ),
    Incident(
        "deadline",
        "004",
        "a handler past its deadline",
        "GET /reports/slow waits on a slow upstream for 5 s, past its 1.5 s deadline",
        "504 naming the deadline, and lifesigns_http_deadline_exceeded_total counting it",
        lasts_s=2.0,
    ),
    Incident(
        "sigterm-under-load",
        "004",
        "SIGTERM with requests in flight (a deploy, a scale-down)",
        "the lab CLI keeps 50 requests of 1.5 s in flight and the demo gets SIGTERM, as "
        "Kubernetes sends it: this one ends the demo",
        "readiness 503 at once (draining), every request in flight answered, the stages of "
        "the drain in order in the log, exit status 0",
        lasts_s=15.0,
    ),
)


def by_name(name: str) -> Incident:
    """The incident called ``name``; ``KeyError`` naming the valid names otherwise."""
    for incident in INCIDENTS:
        if incident.name == name:
            return incident
    names = ", ".join(i.name for i in INCIDENTS)
    raise KeyError(f"no incident {name!r}; the incidents are: {names}")
