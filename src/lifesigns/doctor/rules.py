"""The catalogue of doctor rules: code, what, why, how to fix.

The README's "lifesigns doctor" table repeats these words; each message ends with the
rule's anchor there (``README.md#ls101``).
"""

from __future__ import annotations

from .findings import Rule

_RULES = (
    Rule(
        "LS101",
        "task-outside-lifespan",
        "task created at import time or in a constructor",
        "A task started at import or in a middleware's constructor has no owner: nobody awaits or "
        "cancels it, it may bind the wrong event loop, and one that loops forever outlives every "
        "request (seed 001).",
        "Start it in the lifespan (or with Lifesigns.supervised / periodic) and cancel it there.",
    ),
    Rule(
        "LS102",
        "blocking-call-in-async",
        "blocking call reachable from async def",
        "A blocking call on the event loop freezes every request of the worker, probes included, "
        "for as long as it blocks (seeds 000, 003); ruff's ASYNC rules only see calls written "
        "directly in the async def, not through the application's own helpers.",
        "Use the async library (asyncio.sleep, httpx.AsyncClient, AsyncSession, asyncio "
        "subprocess) or move the call off the loop with asyncio.to_thread.",
    ),
    Rule(
        "LS103",
        "endless-loop-without-timeout",
        "while True loop in a coroutine with no timeout",
        "One await that never returns stops the loop for good, silently: the background job is "
        "dead while the process looks alive (seed 001).",
        "Bound each iteration with asyncio.timeout / asyncio.wait_for, or use "
        "Lifesigns.periodic, which does.",
    ),
    Rule(
        "LS104",
        "sync-health-route",
        "liveness or health route is a plain def",
        "A def route runs in the thread pool (40 threads by default); when the pool is busy the "
        "health check queues behind the work it should report on (the 'fix' of seed 000).",
        "Make it async def and keep it free of blocking calls and I/O, or use lifesigns' /livez.",
    ),
    Rule(
        "LS105",
        "health-route-touches-dependency",
        "liveness or health route touches the database or the network",
        "If liveness fails when the database is down, the orchestrator restarts every replica at "
        "once and the outage becomes a crash loop; each probe also takes a pool connection "
        "(seed 004).",
        "Liveness answers from the process alone; dependencies belong to readiness "
        "(lifesigns /livez and /readyz).",
    ),
    Rule(
        "LS106",
        "engine-echo",
        "create_engine(..., echo=True)",
        "echo logs every statement and its parameters through a synchronous handler: overhead on "
        "every query and, often, secrets in the logs (seed 000).",
        "Drop echo (or read it from a debug-only setting); log slow queries instead.",
    ),
    Rule(
        "LS107",
        "engine-without-pre-ping",
        "engine without pool_pre_ping",
        "Without pre-ping the pool hands out connections the server or a proxy closed; the first "
        "query after an idle period or a failover fails.",
        "Pass pool_pre_ping=True.",
    ),
    Rule(
        "LS108",
        "engine-without-statement-timeout",
        "engine without a statement or command timeout",
        "A query that never returns holds its pool connection forever; enough of them and the "
        "pool is exhausted (seed 002).",
        'Set connect_args={"command_timeout": N} (asyncpg) or '
        '{"options": "-c statement_timeout=N"} (psycopg).',
    ),
    Rule(
        "LS109",
        "unresolved-import",
        "import that does not resolve in this environment",
        "A module missing from the image fails at start, or worse, only in the route that imports "
        "it lazily (seed 003).",
        "Add the distribution to the project's dependencies, fix the module path, or guard an "
        "optional import with try/except ImportError.",
    ),
    Rule(
        "LS110",
        "sync-session-in-async",
        "synchronous SQLAlchemy Session used in async def",
        "Every query of a sync Session blocks the event loop for the round trip and holds the "
        "connection across awaits (seed 002).",
        "Use AsyncSession (async_sessionmaker), or make the function a plain def run in a thread.",
    ),
    Rule(
        "LS201",
        "reload-in-production",
        "--reload or fastapi dev in a production command",
        "The reloader watches the file tree, restarts the worker on any change and runs a single "
        "process: instability in production (seed 003).",
        "Drop --reload (fastapi run, uvicorn without --reload); keep reloading for local "
        "development only.",
    ),
    Rule(
        "LS202",
        "workers-with-side-port",
        "several workers and a side port but no lifesigns run",
        "Only one worker can bind the side port; the others' stalls are invisible, and which "
        "worker answers changes at each restart.",
        "Start the server under `lifesigns run -- <command>`, which owns the side port for all "
        "workers, or run one worker per container.",
    ),
    Rule(
        "LS203",
        "gunicorn-timeout-zero",
        "gunicorn --timeout 0",
        "With no worker timeout the arbiter never kills a frozen worker: it hangs forever.",
        "Keep a finite --timeout (the default 30 s), above the longest legitimate request.",
    ),
    Rule(
        "LS204",
        "healthcheck-without-time-limit",
        "healthcheck curl or wget without a time limit",
        "Docker's --timeout marks the check failed but does not reliably stop the command "
        "inside: in seed 000, curl probes ran for minutes and piled up.",
        "Give the client its own limit (curl --max-time 4, wget -T 4) or use `lifesigns probe "
        "URL --timeout 4`.",
    ),
    Rule(
        "LS205",
        "liveness-on-dependency-path",
        "liveness check on a path that checks dependencies",
        "A liveness probe or container healthcheck that fails when the database does turns a "
        "database outage into restarts of every replica (seed 004).",
        "Point liveness and the container healthcheck at /livez; keep dependencies on /readyz.",
    ),
    Rule(
        "LS206",
        "no-healthcheck",
        "Dockerfile serving HTTP without a HEALTHCHECK",
        "Without a healthcheck Docker reports a frozen server as running forever.",
        "Add HEALTHCHECK CMD lifesigns probe http://127.0.0.1:8000/livez --timeout 4.",
    ),
    Rule(
        "LS207",
        "liveness-equals-readiness",
        "liveness probe identical to readiness probe",
        "The same check for both means a dependency outage restarts pods that only needed to "
        "leave the load balancer (kube-score flags this too).",
        "Liveness on /livez, readiness on /readyz.",
    ),
    Rule(
        "LS208",
        "no-startup-probe",
        "no startup probe while start-up waits for a database",
        "While start-up waits for the database, liveness can kill the pod before it is up, and "
        "it starts waiting again: a crash loop that looks like a database problem (seed 004).",
        "Add a startupProbe on /startupz with failureThreshold x periodSeconds above the "
        "start-up deadline.",
    ),
    Rule(
        "LS209",
        "probe-timeout-below-budget",
        "probe timeoutSeconds not above lifesigns' probe budget",
        "lifesigns answers a probe within probe_budget; a kubelet timeout at or below it counts "
        "slow-but-correct answers as failures.",
        "Raise timeoutSeconds above the budget, or lower LIFESIGNS_PROBE_BUDGET.",
    ),
    Rule(
        "LS210",
        "grace-period-below-drain",
        "terminationGracePeriodSeconds below drain delay + grace",
        "The kubelet sends SIGKILL before lifesigns has drained: in-flight requests are cut.",
        "Set terminationGracePeriodSeconds to at least drain_delay + grace (+ a margin).",
    ),
    Rule(
        "LS211",
        "shell-restart-loop",
        "shell loop restarting containers on failed health checks",
        "Restarting on a failed curl kills the evidence of the hang with the process, and hides "
        "the cause until the next hang (seeds 001, 003).",
        "Let the orchestrator restart on liveness, and capture stacks first (`lifesigns watch`, "
        "the side port's /debug dumps).",
    ),
    Rule(
        "LS212",
        "pool-over-max-connections",
        "pool_size + max_overflow x workers x replicas above max_connections",
        "Under load the pools together open more connections than PostgreSQL accepts: requests "
        "fail with 'too many clients' instead of queueing (seed 002).",
        "Size pool_size + max_overflow to max_connections / (workers x replicas), minus a "
        "reserve; or put PgBouncer in front.",
    ),
)

RULES: dict[str, Rule] = {rule.code: rule for rule in _RULES}
"""Every rule by code, in code order."""
