"""``lifesigns lab``: list the incident lab's incidents, or trigger one on a running demo."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lifesigns lab",
        description="Trigger an incident of the seeds on a running demo (uv run lifesigns demo).",
    )
    parser.add_argument("incident", nargs="?", help="the incident to trigger (see --list)")
    parser.add_argument("--list", action="store_true", help="list the incidents and exit")
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"the demo's address (default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the demo (default 5)"
    )
    return parser


def _request(url: str, method: str, timeout: float) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, method=method)  # noqa: S310 - http(s) URL we build
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            body = json.loads(error.read() or b"{}")
        except ValueError:
            body = {}
        return error.code, body


def _no_demo(url: str, reason: object) -> int:
    print(
        f"lifesigns lab: no demo answers at {url} ({reason}); start one with "
        f"`uv run lifesigns demo` (or pass --url)",
        file=sys.stderr,
    )
    return 1


def run(argv: list[str]) -> int:
    """Parse ``argv``; list or trigger. Exit 0 on success, 1 on a failed trigger, 2 on usage."""
    from lifesigns.lab.incidents import INCIDENTS, by_name

    parser = _parser()
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        print(f"lifesigns lab: --url {args.url!r} is not an http(s) URL", file=sys.stderr)
        return 2
    if args.list or not args.incident:
        try:
            _, listing = _request(f"{base}/lab/incidents", "GET", args.timeout)
            available = {i["name"]: i["available"] for i in listing.get("incidents", [])}
            database = listing.get("database")
        except (OSError, ValueError) as error:
            available, database = {}, None
            status = _no_demo(base, error)
        else:
            status = 0
        width = max(len(i.name) for i in INCIDENTS)
        for incident in INCIDENTS:
            note = ""
            if incident.needs and available.get(incident.name) is False:
                note = f"  [needs {incident.needs}; this demo runs on {database}]"
            print(f"{incident.name:<{width}}  seeds {incident.seeds:<8} {incident.title}{note}")
            print(f"{'':<{width}}  look for: {incident.look_for}")
        return status if args.list else (status or 0)
    try:
        incident = by_name(args.incident)
    except KeyError as error:
        print(f"lifesigns lab: {error.args[0]}", file=sys.stderr)
        return 2
    if incident.name == "sigterm-under-load":
        return _sigterm_under_load(base, args.timeout)
    try:
        code, body = _request(f"{base}/lab/incidents/{incident.name}", "POST", args.timeout)
    except (OSError, ValueError) as error:
        return _no_demo(base, error)
    if code != 202:
        print(f"lifesigns lab: {incident.name}: {body.get('detail', code)}", file=sys.stderr)
        return 1
    print(f"{incident.name} (seeds {incident.seeds}) started in pid {body.get('pid')}")
    print(f"  what happens: {incident.what_happens}")
    print(f"  look for:     {incident.look_for}")
    return 0


def _sigterm_under_load(base: str, timeout: float, in_flight: int = 50) -> int:
    """Keep ``in_flight`` slow requests going, have the demo SIGTERMed, count the answers."""
    import threading
    import time

    try:
        _request(f"{base}/lab/incidents", "GET", timeout)
    except (OSError, ValueError) as error:
        return _no_demo(base, error)
    answers: list[int | str] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            code, _ = _request(f"{base}/reports/quarterly?seconds=1.5", "GET", 30.0)
            result: int | str = code
        except (OSError, ValueError) as error:
            result = type(error).__name__
        with lock:
            answers.append(result)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(in_flight)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # all in flight before the signal
    code, body = _request(f"{base}/lab/incidents/sigterm-under-load", "POST", timeout)
    if code != 202:
        print(f"lifesigns lab: sigterm-under-load: {body.get('detail', code)}", file=sys.stderr)
        return 1
    print(f"sigterm-under-load (seed 004): SIGTERM sent with {in_flight} requests in flight")
    for thread in threads:
        thread.join(40)
    ok = sum(1 for a in answers if a == 200)
    failed = [a for a in answers if a != 200]
    print(f"  {ok} of {in_flight} requests in flight answered 200 during the drain", end="")
    print(f"; failed: {failed}" if failed else "; none failed")
    return 0 if ok == in_flight else 1
