"""Under the command-line launchers, reports name the application, never the launcher.

A user's project (``app/main.py``, from tests/apps/launched.py) in a temporary directory,
started the way users start it: ``fastapi run app/main.py`` and ``uvicorn app.main:app``,
through the console scripts of the virtual environment (real subprocesses). Before the
frame module, 10 of 13 stalls under ``fastapi run`` were blamed on ``fastapi:10
<module>`` (the console script) and pool holders' short stacks showed
``click/core.py:911 in invoke`` (issue 8).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import REPO_ROOT, UvicornProcess

pytestmark = pytest.mark.slow

TOKEN = "launchers-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCRIPTS = Path(sys.executable).parent
SOURCE = REPO_ROOT / "tests" / "apps" / "launched.py"
# What a launcher frame looks like in a report: the console scripts, click, typer, the CLI.
LAUNCHER = re.compile(
    r"bin/fastapi|bin/uvicorn|\bfastapi:\d+|click/|typer/|fastapi_cli/|uvicorn/main"
)


def marker_line(name: str) -> int:
    """The line of tests/apps/launched.py marked ``# LINE: name``."""
    for number, line in enumerate(SOURCE.read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# LINE: {name}"):
            return number
    raise AssertionError(f"no '# LINE: {name}' in {SOURCE}")


class Launched(UvicornProcess):
    """A server started by a console script, from the project directory, as a user would."""

    def __init__(self, project: Path, argv: list[str]) -> None:
        super().__init__("app.main:app", log_path=project / "server.log")
        self.project = project
        self._args = [a.replace("{port}", str(self.port)) for a in argv]

    def start(self) -> None:
        """Start the launcher in the project, with no test-suite path on ``PYTHONPATH``."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(
            PYTHONUNBUFFERED="1",
            LIFESIGNS_TOKEN=TOKEN,
            # The dumps are read on the application port here; by default only the side
            # port serves them (expose=, issue 10).
            LIFESIGNS_EXPOSE="all",
            LAUNCHED_DB_URL=f"sqlite+aiosqlite:///{self.project / 'app.db'}",
        )
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._args,
                cwd=self.project,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


LAUNCHERS = {
    "fastapi run": [
        str(SCRIPTS / "fastapi"),
        "run",
        "app/main.py",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    ],
    "uvicorn": [
        str(SCRIPTS / "uvicorn"),
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--no-access-log",
    ],
}


@pytest.fixture(params=sorted(LAUNCHERS), scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launched]:
    """The user's project served by one launcher, ready."""
    launcher = LAUNCHERS[request.param]
    if not Path(launcher[0]).exists():
        pytest.fail(f"{launcher[0]} is missing: `uv sync` installs fastapi-cli and uvicorn")
    project = tmp_path_factory.mktemp("project")
    (project / "app").mkdir()
    (project / "app" / "__init__.py").write_text("")
    shutil.copy(SOURCE, project / "app" / "main.py")
    process = Launched(project, launcher)
    process.start()
    try:
        poll(lambda: _ready(process), 60, process)
        yield process
    finally:
        process.terminate()


def _ready(process: Launched) -> bool:
    if process.returncode is not None:
        pytest.fail(f"the launcher exited with {process.returncode}\n{process.log_text()}")
    try:
        return httpx.get(f"{process.url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def poll(condition: Callable[[], Any], timeout: float, server: UvicornProcess) -> Any:
    """The first truthy ``condition()`` within ``timeout`` seconds, else fail with the log."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s\n{server.log_text()[-4000:]}")
        time.sleep(0.05)


def stall_records(log: str) -> list[str]:
    """Each stall record of the log (``loop stalled`` or ``loop stall ended``), whole."""
    records, current = [], None
    for line in log.splitlines():
        if "loop stall" in line:
            current = [line]
            records.append(current)
        elif current is not None and line.startswith("  "):
            current.append(line)
        else:
            current = None
    return ["\n".join(r) for r in records]


def stall_dump(server: Launched) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/debug/stalls", headers=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    recent: list[dict[str, Any]] = response.json()["recent"]
    return recent


def test_a_stall_in_an_endpoint_names_its_line_not_the_launcher(server: Launched) -> None:
    line = marker_line("stall")
    where = f"app/main.py:{line} stall, time.sleep"
    assert httpx.get(f"{server.url}/stall?seconds=1", timeout=20).status_code == 200
    server.wait_for_log(rf"loop stall ended after \d+\.\d+ s: {re.escape(where)}", timeout=20)
    records = [r for r in stall_records(server.log_text()) if where in r]
    assert records, server.log_text()[-4000:]
    began = next(r for r in records if "loop stalled" in r)
    assert f"in {where} during GET /stall" in began, began
    # The stack is there, launcher frames included, but none of them is marked as the app's.
    assert "* app/main.py" in began, began
    for frame in began.splitlines()[2:]:
        if LAUNCHER.search(frame):
            assert not frame.lstrip().startswith("*"), frame
    stall = next(s for s in stall_dump(server) if where in s["headline"])
    app_frames = [f for f in stall["stack"] if f.endswith("[app]")]
    assert app_frames and all(f.startswith("app/main.py:") for f in app_frames), stall["stack"]


def test_a_stall_without_application_frames_is_not_blamed_on_the_launcher(
    server: Launched,
) -> None:
    before = max((s["number"] for s in stall_dump(server)), default=0)
    assert httpx.get(f"{server.url}/stall-later?seconds=1", timeout=20).status_code == 200
    stalls = poll(
        lambda: [s for s in stall_dump(server) if s["number"] > before and not s["ongoing"]],
        20,
        server,
    )
    stall = stalls[0]
    assert not LAUNCHER.search(stall["headline"]), stall
    # The innermost frame there is: the loop's (asyncio's, or its runner under uvloop).
    assert re.search(r" in asyncio/\w+\.py:\d+ ", stall["headline"]), stall
    assert not [f for f in stall["stack"] if f.endswith("[app]")], stall["stack"]


def test_a_pool_holder_is_named_by_the_application_line(server: Launched) -> None:
    line = marker_line("checkout")
    with httpx.Client(base_url=server.url, timeout=40) as client:
        holding = in_background(client, "/hold")
        try:

            def holders() -> list[dict[str, Any]]:
                response = client.get("/debug/pool", headers=AUTH)
                assert response.status_code == 200, response.text
                found: list[dict[str, Any]] = response.json()["engines"]["database"]["holders"]
                return found

            held = poll(holders, 20, server)
        finally:
            client.post("/release")
            holding()
    holder = held[0]
    assert holder["site"] == f"app/main.py:{line} in hold", holder
    assert holder["stack"] and all(f.startswith("app/main.py:") for f in holder["stack"]), holder
    assert not LAUNCHER.search(" ".join(holder["stack"])), holder


def in_background(client: httpx.Client, path: str) -> Callable[[], None]:
    """Send ``GET path`` on a thread and return a function that waits for its answer."""
    answers: list[int] = []
    thread = threading.Thread(
        target=lambda: answers.append(client.get(path).status_code), daemon=True
    )
    thread.start()

    def finish() -> None:
        thread.join(40)
        assert answers == [200], answers

    return finish
