"""What pool forensics cost per checkout: ``SELECT 1`` through the pool, again and again.

One run, against a throwaway PostgreSQL (``tests.support.PostgresServer``):

    python3 -m uv run python -m bench.pool [--checkouts 3000] [--rounds 5]

For each driver (psycopg, sync; asyncpg, async) and each setting (bare: no lifesigns;
default: ``attach()`` with its defaults, forensics thread running; full stacks:
``full_stacks=True``), a single caller checks a connection out, runs ``SELECT 1`` and
checks it in, ``--checkouts`` times per round. Rounds alternate between the settings, each
taking every place in the order in turn, so that noise from shared cores falls on all of
them alike; each setting's best round counts. Prints a Markdown table: checkouts per
second, the ratio to bare, and the added cost per checkout in microseconds (wall and the
calling thread's CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from lifesigns import Lifesigns
from lifesigns.db.forensics import PoolForensics, attach

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.postgres import PostgresServer

SETTINGS: dict[str, dict[str, Any] | None] = {
    "bare": None,
    "default": {},
    "full stacks": {"full_stacks": True},
}


Timing = tuple[float, float]  # wall seconds, CPU seconds of the calling thread


def sync_round(engine: Engine, checkouts: int) -> Timing:
    started, cpu = time.perf_counter(), time.thread_time()
    for _ in range(checkouts):
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    return time.perf_counter() - started, time.thread_time() - cpu


async def async_round(engine: AsyncEngine, checkouts: int) -> Timing:
    started, cpu = time.perf_counter(), time.thread_time()
    for _ in range(checkouts):
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
    return time.perf_counter() - started, time.thread_time() - cpu


def watch(engine: Engine | AsyncEngine, options: dict[str, Any] | None) -> PoolForensics | None:
    if options is None:
        return None
    signs = Lifesigns(service="bench")
    watched = signs.watch_engine(engine, forensics=False)
    return attach(signs, watched, **options)


def run_driver(
    driver: str,
    make: Callable[[], Engine | AsyncEngine],
    checkouts: int,
    rounds: int,
) -> dict[str, Timing]:
    engines = {name: make() for name in SETTINGS}
    forensics = {name: watch(engines[name], options) for name, options in SETTINGS.items()}
    walls: dict[str, list[float]] = {name: [] for name in SETTINGS}
    cpus: dict[str, list[float]] = {name: [] for name in SETTINGS}

    async def main() -> None:
        for f in forensics.values():
            if f is not None:
                await f.start()
        try:
            names = list(engines)
            for number in range(rounds + 1):
                shift = number % len(names)  # each setting takes each place in turn
                for name in names[shift:] + names[:shift]:
                    engine = engines[name]
                    if isinstance(engine, AsyncEngine):
                        wall, cpu = await async_round(engine, checkouts)
                    else:
                        wall, cpu = await asyncio.to_thread(sync_round, engine, checkouts)
                    if number:  # the first round warms up every pool
                        walls[name].append(wall)
                        cpus[name].append(cpu)
        finally:
            for f in forensics.values():
                if f is not None:
                    await f.stop()
                    f.detach()
            for engine in engines.values():
                if isinstance(engine, AsyncEngine):
                    await engine.dispose()
                else:
                    engine.dispose()

    asyncio.run(main())
    for name, f in forensics.items():
        if f is not None:
            assert f.holders.checkouts >= checkouts, f"{driver} {name}: checkouts not seen"
    return {name: (min(walls[name]), min(cpus[name])) for name in SETTINGS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkouts", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with PostgresServer() as pg:
        drivers: dict[str, Callable[[], Engine | AsyncEngine]] = {
            "psycopg (sync)": lambda: create_engine(pg.url("postgresql+psycopg")),
            "asyncpg (async)": lambda: create_async_engine(pg.url("postgresql+asyncpg")),
        }
        for driver, make in drivers.items():
            best = run_driver(driver, make, args.checkouts, args.rounds)
            bare_wall, bare_cpu = best["bare"]
            n = args.checkouts
            for name, (wall, cpu) in best.items():
                rows.append(
                    f"| {driver} | {name} | {n / wall:,.0f} | {bare_wall / wall:.3f} | "
                    f"{cpu / n * 1e6:.1f} | {(cpu - bare_cpu) / n * 1e6:+.1f} | "
                    f"{bare_cpu / cpu:.3f} |"
                )
    print(
        f"{args.checkouts} checkouts per round, best of {args.rounds} rounds; CPU is the "
        "calling thread's (thread_time), the server's excluded\n"
    )
    print(
        "| driver | setting | checkouts/s | throughput vs bare | client CPU µs/checkout "
        "| added CPU µs/checkout | CPU throughput vs bare |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
