"""A real Prometheus server for tests: Debian's ``/usr/bin/prometheus`` on loopback.

:class:`PrometheusServer` writes a configuration that scrapes the given targets every
second and evaluates the given rule files every second, starts the server on
``127.0.0.1`` at a free port with its storage in a temporary directory, and talks to its
HTTP API (``query``, ``alerts``, ``rules``, ``targets``). Every wait polls with a deadline;
:meth:`PrometheusServer.stop` ends the process (SIGTERM, then SIGKILL) and removes the
storage. Use it as a context manager.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from .servers import free_port

__all__ = ["PROMETHEUS", "PrometheusError", "PrometheusServer"]

PROMETHEUS = os.environ.get("LIFESIGNS_TEST_PROMETHEUS", "/usr/bin/prometheus")
"""The server binary (``LIFESIGNS_TEST_PROMETHEUS`` overrides)."""

_POLL = 0.2
T = TypeVar("T")


class PrometheusError(RuntimeError):
    """The server answered a query with an error (bad PromQL names itself here)."""


class PrometheusServer:
    """``prometheus`` scraping ``jobs`` (job name -> ``host:port`` targets) every second.

    * ``rule_files``: rule files loaded and evaluated every ``evaluation_interval``.
    * ``metrics_path``: the path scraped on every target (``/metrics``).
    * ``scrape_interval``, ``evaluation_interval``: Prometheus durations (``"1s"``).
    """

    def __init__(
        self,
        jobs: Mapping[str, Sequence[str]],
        *,
        rule_files: Sequence[Path] = (),
        metrics_path: str = "/metrics",
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = Path(tempfile.mkdtemp(prefix="lifesigns-prometheus-"))
        self.log_path = self.directory / "prometheus.log"
        config = {
            "global": {
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "evaluation_interval": evaluation_interval,
            },
            "rule_files": [str(Path(p).resolve()) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": metrics_path,
                    "static_configs": [{"targets": list(targets)}],
                }
                for job, targets in jobs.items()
            ],
        }
        self.config_path = self.directory / "prometheus.yml"
        self.config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self._process: subprocess.Popen[bytes] | None = None
        self._client = httpx.Client(base_url=self.url, timeout=5.0)

    # -- lifetime ------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until ``/-/ready`` answers 200 (``TimeoutError``)."""
        if self._process is not None:
            raise RuntimeError("a PrometheusServer starts once")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.console.templates=/nonexistent",
                    "--web.console.libraries=/nonexistent",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool | None:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self._process.returncode}\n{self.log()}"
                )
            try:
                return self._client.get("/-/ready").status_code == 200 or None
            except httpx.TransportError:
                return None

        self.wait_for(ready, timeout, "prometheus to be ready")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and delete its storage. Idempotent."""
        process, self._process = self._process, None
        self._client.close()
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        shutil.rmtree(self.directory / "data", ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log(self, lines: int = 40) -> str:
        """The tail of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- the HTTP API --------------------------------------------------------------------

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; :class:`PrometheusError` on error."""
        answer = self._client.get(f"/api/v1/{path}", params=params)
        body = answer.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar as one sample) ``expr`` gives now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing now (``/api/v1/alerts``)."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rule_groups(self) -> list[dict[str, Any]]:
        """The loaded rule groups with each rule's health and last error."""
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets with their health."""
        targets: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return targets

    # -- waiting -------------------------------------------------------------------------

    def wait_for(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        """Call ``probe`` until it returns something truthy; ``TimeoutError`` naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            if found:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:g} s for {what}\n{self.log()}")
            time.sleep(_POLL)

    def wait_for_series(self, expr: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns at least one series, and return them."""
        return self.wait_for(lambda: self.query(expr), timeout, f"series from {expr}")
