"""``lifesigns rules``: print the Prometheus rules, or the Grafana dashboard, that ship.

``lifesigns rules > lifesigns.rules.yml`` gives the alert and recording rules (load them
with ``rule_files:`` in prometheus.yml); ``lifesigns rules --dashboard > lifesigns.json``
gives the dashboard to import into Grafana. Both are package data, read with
:mod:`importlib.resources`, so they match the installed version of lifesigns.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources

RULES = "lifesigns.rules.yml"
DASHBOARD = "lifesigns.dashboard.json"


def shipped(name: str) -> str:
    """The text of a file of ``lifesigns/metrics/mixin/`` (``RULES`` or ``DASHBOARD``)."""
    return resources.files("lifesigns").joinpath("metrics", "mixin", name).read_text("utf-8")


def run(argv: list[str]) -> int:
    """Print the rules (or the dashboard) on stdout; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="lifesigns rules",
        description="Print lifesigns' Prometheus alert and recording rules (YAML), "
        "or with --dashboard its Grafana dashboard (JSON).",
    )
    parser.add_argument(
        "--dashboard", action="store_true", help="print the Grafana dashboard instead"
    )
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(shipped(DASHBOARD if args.dashboard else RULES))
        sys.stdout.flush()
    except BrokenPipeError:  # `lifesigns rules | head`
        return 0
    return 0
