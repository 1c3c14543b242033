"""What a doctor rule reports: a :class:`Finding`, and the :class:`Rule` it breaks.

Lines and columns are 1-based, as ruff prints them and SARIF wants them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One anti-pattern: its code (``LS1xx`` Python, ``LS2xx`` containers), what, why, fix."""

    code: str
    name: str
    summary: str
    why: str
    fix: str

    @property
    def anchor(self) -> str:
        """Where the README explains the rule (``README.md#ls101``)."""
        return f"README.md#{self.code.lower()}"


@dataclass(frozen=True, order=True)
class Finding:
    """One place that breaks one rule. Ordered by path, line, column, code."""

    path: str
    line: int
    col: int
    code: str
    message: str

    def render(self) -> str:
        """The ruff-style line: ``path:line:col: LS101 message (README.md#ls101)``."""
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message} ({self.anchor})"

    @property
    def anchor(self) -> str:
        """Where the README explains the rule broken (``README.md#ls101``)."""
        return f"README.md#{self.code.lower()}"
