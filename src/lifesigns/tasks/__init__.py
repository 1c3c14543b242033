"""Supervised background tasks: periodic and long-running, each with an owner.

Registration starts nothing; :func:`attach` gives a :class:`~lifesigns.Lifesigns` one
:class:`Supervisor`, a component its lifespan starts and stops. ``signs.periodic`` and
``signs.supervised`` are shorthands for the supervisor's decorators.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from .census import StrayTask
from .state import Restart, TaskPhase, TaskSpec, TaskState
from .supervisor import Supervisor, TaskFailed

if TYPE_CHECKING:
    from ..core import Lifesigns

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

_attached: weakref.WeakKeyDictionary[Lifesigns, Supervisor] = weakref.WeakKeyDictionary()


def attach(signs: Lifesigns) -> Supervisor:
    """The supervisor of ``signs``, created and added as a component on first call.

    Also serves the tasks' state at ``/debug/supervised`` (token only). Idempotent:
    later calls return the same supervisor. Must happen before the lifespan starts.
    """
    supervisor = _attached.get(signs)
    if supervisor is None:
        supervisor = Supervisor(signs)
        signs.add_component(supervisor)
        signs.add_dump("supervised", supervisor.dump)
        _attached[signs] = supervisor
    return supervisor
