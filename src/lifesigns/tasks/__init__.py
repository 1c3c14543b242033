"""Supervised background tasks: periodic and long-running, each with an owner.

Registration starts nothing; :func:`attach` gives a host one :class:`Supervisor`, a
component its lifespan starts and stops. ``signs.periodic`` and ``signs.supervised`` are
shorthands for the supervisor's decorators.
"""

from __future__ import annotations

from ..host import HasHost, Host, as_host
from .census import StrayTask
from .state import Restart, TaskPhase, TaskSpec, TaskState
from .supervisor import Supervisor, TaskFailed

__all__ = [
    "Restart",
    "StrayTask",
    "Supervisor",
    "TaskFailed",
    "TaskPhase",
    "TaskSpec",
    "TaskState",
    "attach",
]


def attach(owner: Host | HasHost) -> Supervisor:
    """The supervisor of ``owner`` (a ``Host`` or a ``Lifesigns``), built on first call.

    The first call adds it as a component and serves the tasks' state at
    ``/debug/supervised`` (token only); later calls return the same supervisor (it has no
    settings of its own). Must happen before the lifespan starts.
    """
    host = as_host(owner)
    supervisor = host.layer("tasks", None, lambda: _build(host))
    # A Lifesigns knows the agent's folder and the watched engines: who runs once= tasks.
    elect = getattr(owner, "_elect", None)
    if supervisor.elect is None and callable(elect):
        supervisor.elect = elect
    return supervisor


def _build(host: Host) -> Supervisor:
    supervisor = Supervisor(host)
    host.add_component(supervisor)
    host.add_dump("supervised", supervisor.dump)
    return supervisor
