"""How this process runs: under a test client or a reloader, under an orchestrator, or neither.

Two parts of lifesigns behave differently outside production, and both ask here, so the
rule is written once:

* :func:`quiet_reason`: a test or development run. The side port from the environment is
  not bound (:mod:`lifesigns.sideport`) and the drain waits no delay (:mod:`lifesigns.drain`)
  unless asked for in code or explicitly. It tells:

  - a test client: an ASGI lifespan scope without the ``asgi`` key (Starlette's
    ``TestClient`` sends ``{"type": "lifespan", "state": {}}``; servers send
    ``"asgi": {...}``), or a pytest run (``PYTEST_CURRENT_TEST`` with pytest imported);
  - a reloader's worker: ``--reload`` on the command line (``uvicorn --reload``; the worker
    is spawned with the parent's ``sys.argv``), or ``fastapi dev``.

* :func:`orchestrator`: a platform whose load balancers learn of a stopping instance
  while it receives SIGTERM, so a drain delay helps. Each is told by a variable the
  platform sets in every container (:data:`ORCHESTRATORS`):

  - Kubernetes: ``KUBERNETES_SERVICE_HOST`` (the kubelet sets it in every container; the
    endpoints controller removes the pod *while* SIGTERM is sent);
  - Amazon ECS: ``ECS_CONTAINER_METADATA_URI_V4`` (or the older ``..._URI``), set by the
    ECS agent (Service Connect and Cloud Map clients learn of the stop asynchronously);
  - Nomad: ``NOMAD_ALLOC_ID`` (Consul deregisters the service as the task is killed,
    unless the job sets ``shutdown_delay``, which then does the same job).

  Not detected: Cloud Run, Fly.io, Heroku, plain Docker and docker compose, a VM behind
  HAProxy; set ``drain_delay`` explicitly there if a load balancer in front keeps sending
  after the signal.

Nothing here reads anything at import time.
"""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

__all__ = ["LIFESPAN_SCOPE", "ORCHESTRATORS", "orchestrator", "quiet_reason"]

LIFESPAN_SCOPE: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "lifesigns_lifespan_scope", default=None
)
"""The ASGI lifespan scope being started, set by the ASGI adapter (to tell a test client)."""

ORCHESTRATORS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("Kubernetes", ("KUBERNETES_SERVICE_HOST",)),
    ("Amazon ECS", ("ECS_CONTAINER_METADATA_URI_V4", "ECS_CONTAINER_METADATA_URI")),
    ("Nomad", ("NOMAD_ALLOC_ID",)),
)
"""Each detected orchestrator and the variables that tell it, in the order they are tried."""


def quiet_reason(
    scope: Mapping[str, Any] | None = None,
    argv: Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Why this process is a test or development run, or ``None`` for a real server."""
    args = list(sys.argv if argv is None else argv)
    env = os.environ if environ is None else environ
    if scope is not None and "asgi" not in scope:
        return "a test client runs the lifespan"
    if "pytest" in sys.modules and env.get("PYTEST_CURRENT_TEST"):
        return "pytest runs this process"
    if "--reload" in args or any(a.startswith("--reload=") for a in args):
        return "a reloader runs this worker (--reload)"
    if args and Path(args[0]).name == "fastapi" and len(args) > 1 and args[1] == "dev":
        return "a reloader runs this worker (fastapi dev)"
    return None


def orchestrator(environ: Mapping[str, str] | None = None) -> str | None:
    """The orchestrator detected and how, e.g. ``"Kubernetes (KUBERNETES_SERVICE_HOST is
    set)"``, or ``None`` when no variable of :data:`ORCHESTRATORS` is set."""
    env = os.environ if environ is None else environ
    for name, variables in ORCHESTRATORS:
        for variable in variables:
            if env.get(variable):
                return f"{name} ({variable} is set)"
    return None


def orchestrator_variables() -> str:
    """The variables :func:`orchestrator` looks at, for a message: ``"A, B or C"``."""
    names = [v for _, variables in ORCHESTRATORS for v in variables]
    return ", ".join(names[:-1]) + " or " + names[-1]
