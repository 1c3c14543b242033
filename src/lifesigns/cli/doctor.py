"""``lifesigns doctor [PATH...]``: report the anti-patterns behind the seed incidents.

Exit status: 0 when nothing is found, 1 when something is, 2 for bad usage (an
unknown rule code, a missing path, a bad format or setting), with a message naming
the bad value.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lifesigns doctor",
        description="Find blocking calls reachable from async def, unowned tasks, liveness "
        "routes that query the database, unbounded healthchecks, --reload in production and "
        "the other anti-patterns of the incident seeds (rules: README.md#lifesigns-doctor).",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (default: .)")
    parser.add_argument("--format", default="text", choices=("text", "json", "sarif"))
    parser.add_argument("--select", default="", help="comma-separated codes or prefixes (LS1)")
    parser.add_argument("--ignore", default="", help="comma-separated codes or prefixes")
    parser.add_argument(
        "--max-connections",
        type=_positive,
        metavar="N",
        help="PostgreSQL max_connections, for LS212",
    )
    parser.add_argument("--workers", type=_positive, metavar="N", help="workers per replica")
    parser.add_argument("--replicas", type=_positive, metavar="N", help="replicas of the app")
    parser.add_argument(
        "--max-depth",
        type=_positive,
        metavar="N",
        help="hops followed from an async def (default 4)",
    )
    parser.add_argument(
        "--no-config", action="store_true", help="ignore [tool.lifesigns.doctor] in pyproject.toml"
    )
    return parser


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a positive integer")
    return value


def run(argv: list[str]) -> int:
    """Run the doctor on ``argv``; returns the exit status."""
    args = _parser().parse_args(argv)
    from dataclasses import replace

    from lifesigns import __version__
    from lifesigns.doctor import RULES, DoctorUsageError, diagnose, output
    from lifesigns.doctor import config as doctor_config

    paths = [Path(p) for p in args.paths] or [Path(".")]
    try:
        for path in paths:
            if not path.exists():
                raise DoctorUsageError(f"path {str(path)!r} does not exist")
        settings = doctor_config.DoctorConfig() if args.no_config else doctor_config.load(paths[0])
        changes: dict[str, object] = {}
        if args.select:
            changes["select"] = doctor_config.rule_codes(args.select.split(","), "--select")
        if args.ignore:
            extra = doctor_config.rule_codes(args.ignore.split(","), "--ignore")
            changes["ignore"] = (*settings.ignore, *extra)
        for name in ("max_connections", "workers", "replicas", "max_depth"):
            if getattr(args, name) is not None:
                changes[name] = getattr(args, name)
        settings = replace(settings, **changes)  # type: ignore[arg-type]
        report = diagnose(paths, settings)
    except DoctorUsageError as exc:
        print(f"lifesigns doctor: {exc}", file=sys.stderr)
        return 2
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.format == "json":
        print(output.as_json(report.findings))
    elif args.format == "sarif":
        codes = [code for code in RULES if settings.enabled(code)]
        print(output.sarif(report.findings, codes, __version__))
    else:
        print(output.text(report.findings))
    return 1 if report.findings else 0
