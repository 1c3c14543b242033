"""The three ways to print a report: ruff-like text, JSON, and SARIF 2.1.0.

SARIF is what GitHub code scanning uploads (``github/codeql-action/upload-sarif``):
one run, the rules as ``tool.driver.rules`` (why as the full description, the fix as
help), each finding as a result with a 1-based region.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from .findings import Finding
from .rules import RULES

FORMATS = ("text", "json", "sarif")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def text(findings: list[Finding]) -> str:
    """One ``path:line:col: CODE message (anchor)`` line per finding, then a count."""
    lines = [finding.render() for finding in findings]
    count = len(findings)
    lines.append(
        f"Found {count} finding{'s' if count != 1 else ''}." if count else "All checks passed!"
    )
    return "\n".join(lines)


def as_json(findings: list[Finding]) -> str:
    """A JSON list: code, rule name, message, path, line, column, why, fix, url."""
    items = []
    for finding in findings:
        rule = RULES[finding.code]
        items.append(
            {
                "code": finding.code,
                "name": rule.name,
                "message": finding.message,
                "path": finding.path,
                "line": finding.line,
                "column": finding.col,
                "why": rule.why,
                "fix": rule.fix,
                "url": finding.anchor,
            }
        )
    return json.dumps(items, indent=2, ensure_ascii=False)


def sarif(findings: list[Finding], codes: Iterable[str], version: str) -> str:
    """A SARIF 2.1.0 log of one run; ``codes`` are the rules that were checked."""
    rules = [RULES[code] for code in codes]
    index = {rule.code: i for i, rule in enumerate(rules)}
    driver: dict[str, Any] = {
        "name": "lifesigns doctor",
        "version": version,
        "rules": [
            {
                "id": rule.code,
                "name": rule.name,
                "shortDescription": {"text": rule.summary},
                "fullDescription": {"text": rule.why},
                "help": {"text": rule.fix, "markdown": f"{rule.fix} See `{rule.anchor}`."},
                "defaultConfiguration": {"level": "warning"},
            }
            for rule in rules
        ],
    }
    results = [
        {
            "ruleId": finding.code,
            "ruleIndex": index[finding.code],
            "level": "warning",
            "message": {"text": finding.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": quote(finding.path), "uriBaseId": "%SRCROOT%"},
                        "region": {"startLine": finding.line, "startColumn": finding.col},
                    }
                }
            ],
        }
        for finding in findings
    ]
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{"tool": {"driver": driver}, "results": results}],
    }
    return json.dumps(log, indent=2, ensure_ascii=False)
