"""The three states of a check or a probe, as the IETF health-check draft names them."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """``pass``, ``warn`` or ``fail``; ``pass`` and ``warn`` answer HTTP 200, ``fail`` 503."""

    PASS = "pass"  # noqa: S105 - a status, not a password
    WARN = "warn"
    FAIL = "fail"

    @property
    def ok(self) -> bool:
        """Whether a probe in this state answers with success (2xx)."""
        return self is not Status.FAIL

    @property
    def http_status(self) -> int:
        """The HTTP status code a probe in this state answers with."""
        return 200 if self.ok else 503

    @staticmethod
    def worst(statuses: list[Status] | tuple[Status, ...]) -> Status:
        """The worst of ``statuses`` (``pass`` when there are none)."""
        if Status.FAIL in statuses:
            return Status.FAIL
        if Status.WARN in statuses:
            return Status.WARN
        return Status.PASS
