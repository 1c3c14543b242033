"""``lifesigns run``: an agent process outside the server that judges its workers.

* :mod:`~lifesigns.agent.slots`: heartbeat slots in shared memory.
* :mod:`~lifesigns.agent.worker`: the worker's side (takes a slot, beats into it, publishes
  its dumps); attached by :class:`~lifesigns.Lifesigns` when ``LIFESIGNS_AGENT_DIR`` is set.
* :mod:`~lifesigns.agent.sampler`: stacks from outside with py-spy.
* :mod:`~lifesigns.agent.monitor`: watches every slot, names stalls, keeps incidents,
  replaces frozen workers within a budget (:mod:`~lifesigns.agent.restarts`).
* :mod:`~lifesigns.agent.incidents`: bounded, masked, atomic incident files.
* :mod:`~lifesigns.agent.server`: the agent's side port (routing apart from sockets).
* :mod:`~lifesigns.agent.metrics`: every worker's metrics in one scrape, by slot.
* :mod:`~lifesigns.agent.process`: the server as a child: signals, exit status, no orphans
  (with :mod:`~lifesigns.agent._linux`: ``prctl(PR_SET_PDEATHSIG)``).

The command is :mod:`lifesigns.cli.run`.

Importing this package imports nothing beyond the standard library.
"""

ENV_DIR = "LIFESIGNS_AGENT_DIR"
"""The runtime folder the agent passes to the server (slots file, published dumps)."""
