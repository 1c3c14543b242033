"""Probe floods against a real PostgreSQL: lifesigns' readiness against seed 004's fix.

Seed 004 made ``/health`` run ``SELECT 1`` on every request. This runs bursts of
concurrent readiness probes against one uvicorn process serving both that endpoint and
lifesigns' ``/readyz``, and counts the statements the *database* received
(``pg_stat_statements``), with probe latency percentiles.

Run: ``uv run python bench/probe_flood.py [--probes 1000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.load import Answer, flood  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.servers import UvicornProcess  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(
    server: UvicornProcess, pg: PostgresServer, path: str, marker: str, probes: int, rounds: int
) -> dict[str, float]:
    answers: list[Answer] = []
    pg.reset_statements()
    started = time.monotonic()
    for _ in range(rounds):
        answers += asyncio.run(flood(server.host, server.port, path, probes, timeout=60))
    took = time.monotonic() - started
    statements = pg.statement_calls(marker)
    latencies = [a.seconds * 1000 for a in answers]
    ok = sum(1 for a in answers if a.status == 200)
    return {
        "probes": len(answers),
        "ok": ok,
        "statements": statements,
        "seconds": took,
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=1000, help="concurrent probes per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per endpoint")
    args = parser.parse_args()

    with PostgresServer() as pg:
        env = {"DATABASE_URL": pg.url(), "LIFESIGNS_PASS_TTL": "2"}
        with UvicornProcess("tests.apps.service:app", env=env) as server:
            server.wait_ready("/livez")
            rows = [
                (
                    "naive `/health` (seed 004: SELECT 1 per request)",
                    measure(server, pg, "/naive-health", "naive_ping", args.probes, args.rounds),
                ),
                (
                    "lifesigns `/readyz` (cached 2 s, single-flight)",
                    measure(server, pg, "/readyz", "lifesigns_ping", args.probes, args.rounds),
                ),
            ]
    print(
        f"\n{args.rounds} rounds of {args.probes} concurrent probes each, "
        "one uvicorn worker, PostgreSQL on loopback\n"
    )
    print("| endpoint | probes | 200s | statements at the database | wall s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        cells = [r["probes"], r["ok"], r["statements"], f"{r['seconds']:.1f}"]
        cells += [f"{r['p50']:.1f}", f"{r['p99']:.1f}"]
        print(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")
    naive, ours = rows[0][1], rows[1][1]
    print(
        f"\nstatements: {naive['statements']} vs {ours['statements']}; "
        f"p99 ratio naive/lifesigns: {naive['p99'] / max(ours['p99'], 0.001):.1f}x"
    )


if __name__ == "__main__":
    main()
