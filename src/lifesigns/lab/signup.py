"""Sign-up: e-mail validation with a catastrophic pattern (incident ``regex-gil``).

``([a-z0-9]+)*`` nests one quantifier in another: on an address that almost matches, the
regex engine tries every way to split the name, twice as many for each character, all of
it in C while holding the GIL. No Python thread of the process runs meanwhile, the
in-process watchdog included: only faulthandler's C timer, or the agent outside the
process, can see it while it lasts.
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"^([a-z0-9]+)*@[a-z]+\.[a-z]{2,}$")


def valid_email(address: str) -> bool:
    """Whether ``address`` looks like an e-mail address."""
    return EMAIL.match(address) is not None  # the incident: holds the GIL on bad input
