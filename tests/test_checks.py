"""The check runner: timeouts, caching, single-flight, no pile-up, no secrets in errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lifesigns import Degraded
from lifesigns._secrets import SecretRedactor
from lifesigns.health import Check, CheckRunner, Status


def make(name, func, **kw):
    return Check(name=name, func=func, **kw)


async def test_concurrent_callers_share_one_run_in_flight():
    calls = 0
    release = asyncio.Event()

    async def slow_ok():
        nonlocal calls
        calls += 1
        await release.wait()

    runner = CheckRunner()
    check = make("db", slow_ok, timeout=5)
    waiters = [asyncio.create_task(runner.run(check)) for _ in range(500)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters)
    assert calls == 1
    assert {r.status for r in results} == {Status.PASS}


async def test_result_is_cached_for_its_lifetime_then_run_again():
    calls = 0

    async def ok():
        nonlocal calls
        calls += 1

    runner = CheckRunner()
    check = make("db", ok, pass_ttl=0.3)
    for _ in range(20):
        await runner.run(check)
    assert calls == 1
    deadline = time.monotonic() + 5
    while calls == 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        await runner.run(check)
    assert calls == 2


async def test_failures_are_cached_for_their_own_shorter_lifetime():
    calls = 0

    async def broken():
        nonlocal calls
        calls += 1
        raise ConnectionError("refused")

    runner = CheckRunner()
    check = make("db", broken, pass_ttl=60, fail_ttl=0)
    first = await runner.run(check)
    second = await runner.run(check)
    assert first.status is Status.FAIL
    assert second.status is Status.FAIL
    assert first.error == "ConnectionError: refused"
    assert calls == 2  # fail_ttl=0: every probe retries a failing check


async def test_a_check_that_never_returns_times_out_and_is_not_started_twice():
    started = 0

    async def hangs():
        nonlocal started
        started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.Event().wait()  # ignores cancellation: the worst kind

    runner = CheckRunner()
    check = make("stuck", hangs, timeout=0.1, fail_ttl=0)
    t0 = time.monotonic()
    first = await runner.run(check)
    assert time.monotonic() - t0 < 1.0
    assert first.timed_out and first.status is Status.FAIL
    assert "timed out after 0.1 s" in (first.error or "")
    second = await runner.run(check)
    assert started == 1
    assert "still going" in (second.error or "")


async def test_a_blocking_sync_check_runs_in_a_thread_and_never_stacks_threads():
    entered = threading.Event()
    gate = threading.Event()
    runs = 0

    def blocking():
        nonlocal runs
        runs += 1
        entered.set()
        gate.wait(10)

    runner = CheckRunner()
    check = make("sync", blocking, timeout=0.1, fail_ttl=0)
    try:
        first = await runner.run(check)
        assert entered.is_set() and first.timed_out
        for _ in range(5):
            again = await runner.run(check)
            assert again.status is Status.FAIL
        assert runs == 1
    finally:
        gate.set()
        runner.close()


async def test_run_many_answers_within_the_budget_and_names_the_late_check():
    async def hangs():
        await asyncio.sleep(30)

    async def quick():
        return {"rows": 1}

    runner = CheckRunner()
    checks = [make("slow", hangs, timeout=20), make("quick", quick)]
    t0 = time.monotonic()
    results = await runner.run_many(checks, budget=0.2)
    assert time.monotonic() - t0 < 1.0
    by_name = {r.name: r for r in results}
    assert by_name["quick"].status is Status.PASS and by_name["quick"].details == {"rows": 1}
    assert by_name["slow"].timed_out
    assert "probe budget of 0.2 s" in (by_name["slow"].error or "")


async def test_degraded_warns_and_errors_never_carry_secrets():
    async def warns():
        raise Degraded("replica lag 12 s")

    async def leaks():
        raise RuntimeError(
            "could not connect to postgresql://app:s3cret-pw@db/x with token tok-ABCDEFGH"
        )

    redactor = SecretRedactor(["tok-ABCDEFGH"])
    runner = CheckRunner(redactor=redactor)
    warned = await runner.run(make("lag", warns))
    leaked = await runner.run(make("leaky", leaks))
    assert warned.status is Status.WARN and warned.error == "replica lag 12 s"
    assert "s3cret-pw" not in (leaked.error or "")
    assert "tok-ABCDEFGH" not in (leaked.error or "")
    assert "postgresql://app:***@db/x" in (leaked.error or "")


@pytest.mark.parametrize("bad", [0, -1, float("inf"), "1"])
def test_check_timeout_must_be_a_positive_number(bad):
    from lifesigns import ConfigError

    with pytest.raises(ConfigError, match="timeout="):
        make("x", lambda: None, timeout=bad)
