"""The live page in a real headless Chromium, against a real uvicorn service with a side port.

The page is served by the side port's thread: it asks for the token, shows the data once
the token is entered, its plots grow every second, and a stall appears on it with its
file:line while the event loop is still frozen. The lab tab's button triggers an incident
on the application port (another origin). With ``LIFESIGNS_SCREENSHOTS=1`` the screenshots
go to ``docs/`` (the README's), otherwise to the test's temporary directory.

Chromium is Debian's (``.ci/run`` installs it), driven by Playwright's async API with
``executable_path``: ``playwright install`` downloads nothing here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, ViewportSize, async_playwright

from tests.support.servers import REPO_ROOT, StartUvicorn, UvicornProcess

pytestmark = pytest.mark.slow

TOKEN = "stalls-test-token-0123456789"  # tests/apps/stalls.py's default
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
VIEWPORT: ViewportSize = {"width": 1280, "height": 560}  # screenshots take the full page


def chromium() -> str | None:
    """Debian's chromium binary (the wrapper's target first), if any is installed."""
    for candidate in CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def marked_line(path: Path, marker: str) -> int:
    """The line number of the ``# stall: <marker>`` comment in ``path``."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.rstrip().endswith(f"# stall: {marker}"):
            return number
    raise AssertionError(f"no '# stall: {marker}' line in {path}")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: ``docs/`` with ``LIFESIGNS_SCREENSHOTS=1``, else ``tmp_path``."""
    if os.environ.get("LIFESIGNS_SCREENSHOTS") == "1":
        docs = REPO_ROOT / "docs"
        docs.mkdir(exist_ok=True)
        return docs
    return tmp_path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium (Debian's), closed after the test."""
    binary = chromium()
    if binary is None:
        pytest.skip("no chromium binary (apt-get install chromium; .ci/run installs it)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=binary, args=FLAGS, headless=True, timeout=60_000
        )
        try:
            yield launched
        finally:
            await launched.close()


async def start_service(uvicorn_process: StartUvicorn) -> tuple[UvicornProcess, str]:
    """The stalls service with a lab dump; returns it and its side port's URL."""
    # STALLS_EXPOSE=probes: the application port does not serve the page, the side port does.
    env = {"STALLS_EXPOSE": "probes", "STALLS_LIVE_FAIL_AFTER": "30"}
    server = await asyncio.to_thread(uvicorn_process, "tests.apps.live_lab:app", env)
    found = await asyncio.to_thread(
        server.wait_for_log, r"lifesigns side port listening on (http://\S+)", 10
    )
    return server, found.group(1)


async def open_page(browser: Browser) -> tuple[Page, list[str]]:
    """A new page, and the list its script errors go to (every test asserts it stays empty)."""
    page = await browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page, errors


async def log_in(page: Page, side: str, token: str = TOKEN) -> None:
    """Open the page and enter the token in its form."""
    await page.goto(f"{side}/lifesigns/")
    await page.locator("#login").wait_for(state="visible", timeout=10_000)
    await page.fill("#token", token)
    await page.click("#login-form button")


async def traffic(client: httpx.AsyncClient, url: str) -> None:
    """Requests at a rate that swings between about 5 and 40 a second, until cancelled.

    One in three reads ``/orders`` (a pooled connection held 0.15 s); none is awaited
    before the next is sent, so several hold the pool at once.
    """
    sent: set[asyncio.Task[httpx.Response]] = set()
    try:
        for tick in itertools.count():
            rate = 22.0 + 17.0 * math.sin(tick / 25.0)
            path = "/orders" if tick % 3 == 0 else "/hello"
            task = asyncio.create_task(client.get(f"{url}{path}"))
            sent.add(task)
            task.add_done_callback(sent.discard)
            await asyncio.sleep(1.0 / rate)  # pacing the load, not waiting for a condition
    finally:
        for task in list(sent):
            task.cancel()


async def stall_began(client: httpx.AsyncClient, side: str) -> float:
    """When the stall in progress began (epoch seconds), as the side port reports it."""
    reply = await client.get(f"{side}/lifesigns/data", headers={"authorization": f"Bearer {TOKEN}"})
    current = reply.json()["stalls"]["current"]
    assert current is not None, "the side port no longer reports the stall"
    return datetime.fromisoformat(current["began_at"]).timestamp()


async def points(page: Page, chart: str) -> int:
    """How many points the chart's line has now."""
    value = await page.get_attribute(f"#{chart} path.line", "data-points")
    return int(value or 0)


async def test_the_page_asks_for_the_token_then_plots_and_shows_a_stall_while_frozen(
    uvicorn_process: StartUvicorn, browser: Browser, shots: Path
) -> None:
    server, side = await start_service(uvicorn_process)
    async with httpx.AsyncClient(timeout=30) as client:
        # The application port keeps the page to itself (expose=probes); the side port has it.
        assert (await client.get(f"{server.url}/lifesigns/")).status_code == 404
        assert (await client.get(f"{side}/lifesigns/data")).status_code == 401

        page, errors = await open_page(browser)
        await log_in(page, side, token="not-the-token-at-all")
        await page.locator("#login-error").filter(has_text="wrong token").wait_for(timeout=10_000)
        await page.fill("#token", TOKEN)
        await page.click("#login-form button")
        await page.locator("#app").wait_for(state="visible", timeout=10_000)
        await page.locator("#service").filter(has_text="stalls").wait_for(timeout=10_000)

        # The plots grow: a point a second, and the path changes.
        load = asyncio.create_task(traffic(client, server.url))
        first_points = await points(page, "lag-chart")
        first_path = await page.get_attribute("#lag-chart path.line", "d")
        await page.wait_for_function(
            "(n) => Number(document.querySelector('#lag-chart path.line').dataset.points) >= n + 2",
            arg=first_points,
            timeout=8_000,
        )
        assert await page.get_attribute("#lag-chart path.line", "d") != first_path
        assert await points(page, "rps-chart") >= 2
        assert await points(page, "rss-chart") >= 2
        assert await points(page, "pool-chart") >= 2
        assert (await page.inner_text("#pool")).endswith("/ 8")  # the watched SQLite pool

        # The token is entered once: a reload keeps it (session storage).
        await page.reload()
        await page.locator("#app").wait_for(state="visible", timeout=10_000)
        assert await page.locator("#login").is_hidden()
        # A dozen seconds of history make the overview's screenshot readable.
        await page.wait_for_function(
            "() => Number(document.querySelector('#rps-chart path.line').dataset.points) >= 12",
            timeout=30_000,
        )
        await page.screenshot(path=shots / "live-overview.png", full_page=True)
        load.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await load

        # Freeze the loop 4 s; the page must show the stall's frame while it lasts.
        line = marked_line(REPO_ROOT / "tests/apps/stalls.py", "sleep")
        frame = f"tests/apps/stalls.py:{line}"
        sent = time.monotonic()
        frozen = asyncio.create_task(client.get(f"{server.url}/sleep/4"))
        current = page.locator("#stall-current")
        await current.filter(has_text=frame).wait_for(timeout=10_000)
        shown_at, shown_after_send = time.time(), time.monotonic() - sent
        assert not frozen.done(), "the stall was shown only after the loop came back"
        began = await stall_began(client, side)
        badge = await page.inner_text("#loop-badge")
        assert badge.startswith("loop stalled"), badge
        text = await current.inner_text()
        assert "sleepy" in text and "time.sleep" in text, text
        seen_after = shown_at - began
        assert seen_after < 2.0, (
            f"the stall appeared {seen_after:.2f} s after it began "
            f"({shown_after_send:.2f} s after the request was sent)"
        )
        await page.screenshot(path=shots / "live-stall.png", full_page=True)
        await page.click("nav button:text('Loop')")
        await page.locator("#stalls").wait_for(state="visible")
        assert (await frozen).status_code == 200
        # Once the loop is back, the stall is listed with its total.
        await page.locator("#loop-badge").filter(has_text="loop ok").wait_for(timeout=10_000)
        await page.locator("#stalls").filter(has_text=frame).wait_for(timeout=10_000)
        assert errors == []


async def test_the_lab_tab_triggers_an_incident_on_the_application_port(
    uvicorn_process: StartUvicorn, browser: Browser, shots: Path
) -> None:
    server, side = await start_service(uvicorn_process)
    async with httpx.AsyncClient(timeout=10) as client:
        await client.get(f"{server.url}/hello")  # the lab learns its trigger's origin
    page, errors = await open_page(browser)
    await log_in(page, side)
    await page.locator("#app").wait_for(state="visible", timeout=10_000)
    await page.click("nav button:text('Lab')")
    button = page.locator("#lab button[data-trigger]")
    await button.wait_for(state="visible", timeout=10_000)
    assert re.fullmatch(
        rf"{re.escape(server.url)}/lab/incidents/sync-export",
        await button.get_attribute("data-trigger") or "",
    )
    line = marked_line(REPO_ROOT / "tests/apps/live_lab.py", "lab")
    await button.click()
    # A no-cors POST to another origin: the page cannot read the answer, only that it came.
    await page.locator("#lab").filter(has_text="triggered at").wait_for(timeout=10_000)
    await page.screenshot(path=shots / "live-lab.png", full_page=True)
    # The stall is shown on the Overview tab while the loop is frozen, with its frame.
    await page.click("nav button:text('Overview')")
    frame = f"tests/apps/live_lab.py:{line}"
    await page.locator("#stall-current").filter(has_text=frame).wait_for(timeout=10_000)
    assert (await page.inner_text("#loop-badge")).startswith("loop stalled")
    assert errors == []


async def test_under_the_agent_the_page_shows_a_gil_held_stall_while_it_lasts(
    browser: Browser, shots: Path, tmp_path: Path
) -> None:
    """The demo as it ships (two workers under ``lifesigns run``): the agent's port serves the
    page, and a catastrophic regex holding a worker's GIL shows on it, named, while it lasts,
    which no in-process thread of that worker could do."""
    import subprocess
    import sys

    from tests.support.servers import free_port

    port, side = free_port(), free_port()
    token = "agent-live-token-0123456789abcdef"
    log = tmp_path / "demo.log"
    lifesigns = Path(sys.executable).with_name("lifesigns")
    command = [str(lifesigns)] if lifesigns.exists() else [sys.executable, "-m", "lifesigns"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *command,
                "demo",
                "--port",
                str(port),
                "--side-port",
                str(side),
                "--token",
                token,
                "--database-url",
                f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    base, side_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{side}"
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            deadline = time.monotonic() + 40
            auth = {"authorization": f"Bearer {token}"}
            while True:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    listed = (await client.get(f"{side_base}/debug/workers", headers=auth)).json()
                    if sum(1 for w in listed.get("workers", []) if w["ready"]) == 2:
                        break
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
            page, errors = await open_page(browser)
            await log_in(page, side_base, token=token)
            await page.locator("#app").wait_for(state="visible", timeout=10_000)
            # The regex holds the GIL about 4 s; its line must show while it does.
            frozen = asyncio.create_task(
                client.post(f"{base}/signup", json={"email": "a" * 27 + "!"}, timeout=60)
            )
            await (
                page.locator("#stall-current")
                .filter(has_text=re.compile(r"lifesigns/lab/signup\.py:\d+"))
                .wait_for(timeout=4_000)
            )
            assert not frozen.done(), "the stall had ended before the page showed it"
            text = await page.inner_text("#stall-current")
            assert "holding the GIL" in text, text
            await page.screenshot(path=shots / "live-agent-gil.png", full_page=True)
            # uvicorn's supervisor may replace a worker whose GIL is held too long (its
            # pings go unanswered): the request's own answer is not what is tested here.
            with contextlib.suppress(httpx.HTTPError):
                await frozen
            assert errors == []
    finally:
        process.terminate()
        process.wait(20)
