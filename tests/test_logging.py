"""Logs out of the box: the fallback handler, its formats, and start-up waits' lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Iterator

import pytest

from lifesigns import _logging
from lifesigns._config import Settings
from lifesigns._secrets import SecretRedactor
from lifesigns.errors import ConfigError
from lifesigns.health.lifecycle import Lifecycle
from lifesigns.startup import Dependency, wait_for
from tests.support.servers import free_port

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>lifesigns[\w.]*): "
    r"(?P<message>.*)$",
    re.MULTILINE,
)


@contextlib.contextmanager
def nothing_configured() -> Iterator[None]:
    """No handler anywhere: pytest's capture handlers, which it puts on the root for each
    test phase, are taken off meanwhile (so this runs inside the test's body)."""
    root = logging.getLogger()
    ours = logging.getLogger("lifesigns")
    saved = root.handlers[:], ours.handlers[:], ours.level, ours.propagate, ours.disabled
    root.handlers.clear()
    ours.handlers.clear()
    ours.setLevel(logging.NOTSET)
    try:
        yield
    finally:
        _logging.remove_handler()
        root.handlers[:], ours.handlers[:] = saved[0], saved[1]
        ours.setLevel(saved[2])
        ours.propagate, ours.disabled = saved[3], saved[4]


def test_nothing_configured_gives_the_readme_format_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with nothing_configured():
        assert _logging.ensure_handler() is not None
        logging.getLogger("lifesigns.loop").warning("loop stalled %.1f s", 1.2)
        logging.getLogger("lifesigns.pool").info("pool back to normal")
        logging.getLogger("lifesigns.pool").debug("not shown")
        out, err = capsys.readouterr()
        assert out == ""
        lines = [m.groupdict() for m in TEXT_LINE.finditer(err)]
        assert lines == [
            {"level": "WARNING", "logger": "lifesigns.loop", "message": "loop stalled 1.2 s"},
            {"level": "INFO", "logger": "lifesigns.pool", "message": "pool back to normal"},
        ]
        assert len(err.splitlines()) == 2


def test_a_second_call_adds_no_second_handler() -> None:
    with nothing_configured():
        first = _logging.ensure_handler()
        assert _logging.ensure_handler() is first
        assert logging.getLogger("lifesigns").handlers == [first]


def test_a_configured_root_or_lifesigns_logger_is_left_alone() -> None:
    with nothing_configured():
        root = logging.getLogger()
        app_handler = logging.StreamHandler()
        root.addHandler(app_handler)
        try:
            assert _logging.ensure_handler() is None
        finally:
            root.removeHandler(app_handler)
        logging.getLogger("lifesigns").addHandler(app_handler)
        assert _logging.ensure_handler() is None
        logging.getLogger("lifesigns").removeHandler(app_handler)
        logging.getLogger("lifesigns").disabled = True  # a dictConfig disabled it
        assert _logging.ensure_handler() is None


def test_logging_configured_later_prints_each_line_once(capsys: pytest.CaptureFixture[str]) -> None:
    with nothing_configured():
        assert _logging.ensure_handler() is not None
        root = logging.getLogger()
        late = logging.StreamHandler()  # bound to the captured stderr now
        late.setFormatter(logging.Formatter("APP %(name)s %(message)s"))
        root.addHandler(late)
        try:
            logging.getLogger("lifesigns.loop").warning("once")
        finally:
            root.removeHandler(late)
        assert capsys.readouterr().err == "APP lifesigns.loop once\n"


def test_uvicorn_log_level_above_info_applies() -> None:
    with nothing_configured():
        server = logging.getLogger("uvicorn.error")
        saved = server.level
        server.setLevel(logging.WARNING)
        try:
            assert _logging.ensure_handler() is not None
            assert logging.getLogger("lifesigns").level == logging.WARNING
        finally:
            server.setLevel(saved)


def test_json_lines_parse_with_structured_fields_and_no_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with nothing_configured():
        assert _logging.ensure_handler("json") is not None
        log = logging.getLogger("lifesigns.pool")
        log.warning(
            "holder in %s for postgresql://app:p@ss@db/app",
            "app/api.py:41",
            extra={"lifesigns": {"event": "holder", "site": "app/api.py:41", "password": "p@ss"}},
        )
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("check failed")
        err = capsys.readouterr().err
        entries = [json.loads(line) for line in err.splitlines()]
        assert len(entries) == 2
        first, second = entries
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
        assert first["level"] == "WARNING"
        assert first["logger"] == "lifesigns.pool"
        assert first["message"] == "holder in app/api.py:41 for postgresql://app:***@db/app"
        assert first["lifesigns"] == {"event": "holder", "site": "app/api.py:41", "password": "***"}
        assert "p@ss" not in err
        assert second["level"] == "ERROR"
        assert "RuntimeError: boom" in second["exception"]


def test_log_format_option_and_environment() -> None:
    assert Settings.from_arguments({}, env={}).log_format == "text"
    env = {"LIFESIGNS_LOG_FORMAT": "JSON"}
    assert Settings.from_arguments({}, env=env).log_format == "json"
    assert Settings.from_arguments({"log_format": "text"}, env=env).log_format == "text"
    allowed = r"log_format='xml' is not allowed; allowed: `'text'` or `'json'`"
    with pytest.raises(ConfigError, match=allowed):
        Settings.from_arguments({"log_format": "xml"}, env={})
    with pytest.raises(ConfigError, match=r"LIFESIGNS_LOG_FORMAT='yaml' is not allowed"):
        Settings.from_arguments({}, env={"LIFESIGNS_LOG_FORMAT": "yaml"})


async def test_startup_wait_logs_the_driver_message_once_then_on_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lifesigns.startup")
    attempts = 0

    async def attempt() -> str:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise ConnectionRefusedError("connection to 127.0.0.1:1 refused")
        if attempts == 4:
            raise OSError("password authentication failed for p@ssw0rd")
        return "up"

    dependency = Dependency("db", "database db", attempt, deadline=30.0, attempt_timeout=1.0)
    redactor = SecretRedactor(["p@ssw0rd"])
    assert await asyncio.wait_for(wait_for(dependency, Lifecycle(), redactor), 30) == "up"
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "attempt" in r.getMessage()]
    assert [level for level, _ in lines] == ["WARNING", "INFO", "INFO", "WARNING", "INFO"]
    messages = [message for _, message in lines]
    assert sum("refused" in m for m in messages) == 1
    assert "attempt 2 failed (the same error)" in messages[1]
    assert "attempt 4 failed (OSError: password authentication failed for ***)" in messages[3]
    assert "p@ssw0rd" not in caplog.text
    fields = [r.lifesigns for r in caplog.records if hasattr(r, "lifesigns")]
    assert fields[0]["error"].startswith("ConnectionRefusedError")
    assert fields[1]["same_error"] is True
    assert fields[-1] == {"event": "startup_ready", "dependency": "db", "attempts": 5,
                          "elapsed": fields[-1]["elapsed"]}  # fmt: skip


# ---------------------------------------------------------------- a real uvicorn


def _down_database() -> tuple[str, str]:
    password = "n0t-in-any-log"
    return f"postgresql+asyncpg://app:{password}@127.0.0.1:{free_port()}/app", password


@pytest.mark.slow
def test_uvicorn_without_logging_config_shows_lifesigns_lines(uvicorn_process) -> None:
    url, password = _down_database()
    server = uvicorn_process("tests.apps.no_logging:app", env={"DATABASE_URL": url})
    server.wait_for_log(r"attempt 3 failed \(the same error\)", timeout=30)
    log = server.log_text()
    lines = [m.groupdict() for m in TEXT_LINE.finditer(log)]
    waits = [line for line in lines if line["message"].startswith("waiting for database")]
    assert waits[0]["level"] == "WARNING"
    assert waits[0]["logger"] == "lifesigns.startup"
    assert "attempt 1 failed (" in waits[0]["message"]
    assert {line["level"] for line in waits[1:3]} == {"INFO"}  # INFO lines are not lost
    # The driver's message once, however many attempts.
    driver = re.search(r"attempt 1 failed \((.+)\); next attempt", waits[0]["message"])
    assert driver is not None
    assert log.count(driver.group(1)) == 1
    assert len(waits) >= 3
    assert password not in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_uvicorn_json_log_format_parses_line_by_line(uvicorn_process) -> None:
    url, password = _down_database()
    server = uvicorn_process(
        "tests.apps.no_logging:app", env={"DATABASE_URL": url, "LIFESIGNS_LOG_FORMAT": "json"}
    )
    server.wait_for_log(r'"attempt": 3', timeout=30)
    entries = []
    for line in server.log_text().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
        else:  # uvicorn's own lines; none of lifesigns'
            assert "lifesigns" not in line and "waiting for" not in line, line
    waits = [e for e in entries if e["logger"] == "lifesigns.startup"]
    assert len(waits) >= 3
    assert waits[0]["level"] == "WARNING"
    assert waits[0]["lifesigns"]["event"] == "startup_attempt"
    assert waits[0]["lifesigns"]["attempt"] == 1
    assert "error" in waits[0]["lifesigns"]
    assert waits[1]["lifesigns"]["same_error"] is True
    assert password not in server.log_text()


@pytest.mark.slow
def test_uvicorn_log_config_is_respected(uvicorn_process, tmp_path) -> None:
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"app": {"format": "APP %(levelname)s %(name)s | %(message)s"}},
        "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "app"}},
        "root": {"handlers": ["err"], "level": "INFO"},
    }
    path = tmp_path / "log-config.json"
    path.write_text(json.dumps(config))
    url, _ = _down_database()
    server = uvicorn_process(
        "tests.apps.no_logging:app",
        env={"DATABASE_URL": url},
        extra_args=["--log-config", str(path)],
    )
    server.wait_for_log(r"^APP WARNING lifesigns\.startup \| waiting for database", timeout=30)
    server.wait_for_log(r"^APP INFO lifesigns\.startup \| .*the same error", timeout=30)
    assert TEXT_LINE.search(server.log_text()) is None  # lifesigns added no handler of its own
