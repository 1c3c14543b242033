"""Invoices: totals converted to the customer's currency (incident ``blocking-call``).

The bug of seeds 000 and 003, as it is usually written: a sync helper with a retry
decorator, called from an ``async def``. tenacity's sync ``@retry`` sleeps with
``time.sleep`` between attempts, so while the upstream is flaky the whole event loop waits.
"""

from __future__ import annotations

import itertools

from tenacity import retry, stop_after_attempt, wait_fixed

_flaky_calls = itertools.count()
_failing_until: list[int] = [0]


class UpstreamUnavailable(Exception):
    """The exchange-rate service did not answer (simulated)."""


def make_upstream_flaky(attempts: int = 2) -> None:
    """Make the next ``attempts`` calls to the upstream fail (the lab's trigger)."""
    _failing_until[0] = next(_flaky_calls) + attempts + 1


@retry(wait=wait_fixed(1.2), stop=stop_after_attempt(3), reraise=True)
def exchange_rate(currency: str) -> float:
    """The rate from EUR to ``currency``, from an upstream that sometimes fails."""
    if next(_flaky_calls) < _failing_until[0]:
        raise UpstreamUnavailable(f"exchange-rate service timed out for {currency}")
    return {"EUR": 1.0, "USD": 1.08, "GBP": 0.86}.get(currency, 1.0)


async def invoice_total(amount: float, currency: str) -> float:
    """The invoice total in ``currency``: the blocking call sits on the event loop here."""
    rate = exchange_rate(currency)  # the incident: a sync call with blocking retries
    return round(amount * rate, 2)
