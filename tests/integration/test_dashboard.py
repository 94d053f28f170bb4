"""The dashboard at ``/`` in a real browser: Debian's Chromium, driven by Playwright,
against a live server running jobs on the simulated network. A running job's progress
moves and it ends complete; a read key's cancel is refused with the server's reason, a
write key's cancel stops the job; a wrong key, a key over its rate and a server gone away
each get a clear message. Screenshots are kept in ``test-artifacts/`` (git-ignored) for a
person to look at."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import REPO_ROOT, require
from tests.support.jobs import dids_of, job_yaml
from tests.support.server import Server, create_key, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
# Never `playwright install` (it downloads a browser): Debian's chromium, offline.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.fixture
def browser() -> Iterator[Browser]:
    require(
        CHROMIUM.exists() and find_spec("playwright") is not None,
        "Debian chromium (apt-get install chromium) and playwright (pip)",
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def server(tmp_path: Path, fakenet_process: dict[str, object]) -> Iterator[Server]:
    with running_server(tmp_path / "server", "--allow-private-addresses") as running:
        (running.root / "dids.txt").write_text("\n".join(dids_of(fakenet_process)) + "\n")
        yield running


def dashboard_job(plc: object, name: str) -> str:
    """One host at a time: the fakenet's rate-limit headers raise the pace to ~10 repos/s
    per host whatever requests_per_second says, so this keeps a job running ~15 s, long
    enough to watch it move."""
    return job_yaml(plc, name=name, rate=8, batch=5, out=f"{name}-out", max_hosts=1)


def start_job(server: Server, plc: object, name: str) -> None:
    writer = server.client(create_key(server.home, "write"))
    started = writer.post("/api/backfill/start", json={"config_yaml": dashboard_job(plc, name)})
    assert started.status_code == 202, started.text


def server_log(server: Server) -> str:
    """The end of the server's log (``running_server`` writes it beside home)."""
    return (server.home.parent / "server.log").read_text()[-3000:]


def open_dashboard(browser: Browser, url: str, token: str) -> tuple[Page, list[str]]:
    """The page at ``url`` with ``token`` entered, and the list its script errors go to."""
    page = browser.new_page(viewport={"width": 1200, "height": 720})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{url}/")
    page.fill("#api-key", token)
    page.click("#key-form button[type=submit]")
    return page, errors


def keep(page: Page, folder: Path, name: str) -> None:
    """A full-page screenshot in ``folder``, copied to ``test-artifacts/``."""
    shot = folder / name
    page.screenshot(path=str(shot), full_page=True, animations="disabled")  # bars at rest
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / name)


def test_a_running_job_moves_on_the_dashboard_and_ends_complete(
    server: Server, tmp_path: Path, fakenet_process: dict[str, object], browser: Browser
) -> None:
    from playwright.sync_api import expect

    total = str(len(dids_of(fakenet_process)))
    page, errors = open_dashboard(browser, server.url, create_key(server.home, "read"))
    expect(page.locator("#jobs")).to_contain_text("No jobs yet", timeout=10_000)
    start_job(server, fakenet_process["plc"], "dash")  # the page watches it from the start
    job = page.locator('[data-job-id="dash"]')
    state, done = job.locator('[data-field="state"]'), job.locator('[data-field="done"]')
    expect(state).to_have_text("running", timeout=30_000)
    expect(job.locator('[data-field="total"]')).to_have_text(total)
    first = int(done.inner_text())
    page.wait_for_function(
        "([node, first]) => Number(node.textContent) > first",
        arg=[done.element_handle(), first],
        timeout=30_000,
    )
    expect(state).to_have_text("running")
    expect(job.locator('[data-field="rate"]')).to_contain_text("repos/s", timeout=10_000)
    expect(job.locator('[data-field="hosts"] li').first).to_be_visible(timeout=10_000)

    # A read key may look but not cancel: two clicks (arm, confirm), then the server's 403.
    cancel = job.locator('[data-action="cancel"]')
    cancel.click()
    expect(cancel).to_have_text("Confirm cancel")
    cancel.click()
    message = job.locator('[data-field="message"]')
    expect(message).to_contain_text("403", timeout=10_000)
    expect(message).to_contain_text("scope is read")
    expect(state).to_have_text("running")
    keep(page, tmp_path, "dashboard-running.png")

    expect(state).to_have_text("completed", timeout=120_000)
    expect(done).to_have_text(total)
    expect(job.locator('[data-field="total"]')).to_have_text(total)
    records = server.clients[0].get("/api/backfill/status/dash").json()["records"]
    expect(job.locator('[data-field="records"]')).to_have_text(str(records))
    expect(cancel).to_be_hidden()
    expect(message).to_have_text("")
    expect(job.locator('[data-field="eta"]')).to_have_text("—")
    keep(page, tmp_path, "dashboard-completed.png")
    assert errors == []


def test_a_write_key_cancels_a_running_job_from_the_dashboard(
    server: Server, fakenet_process: dict[str, object], browser: Browser
) -> None:
    from playwright.sync_api import expect

    page, errors = open_dashboard(browser, server.url, create_key(server.home, "write"))
    expect(page.locator("#jobs")).to_contain_text("No jobs yet", timeout=10_000)
    start_job(server, fakenet_process["plc"], "stop")
    job = page.locator('[data-job-id="stop"]')
    expect(job.locator('[data-field="state"]')).to_have_text("running", timeout=30_000)
    cancel = job.locator('[data-action="cancel"]')
    cancel.click()
    cancel.click()
    try:
        expect(job.locator('[data-field="state"]')).to_have_text("cancelled", timeout=30_000)
    except AssertionError as failure:
        raise AssertionError(f"{failure}\nserver log:\n{server_log(server)}") from None
    expect(job.locator('[data-field="message"]')).to_have_text("Cancelled.")
    expect(cancel).to_be_hidden()
    status = server.clients[0].get("/api/backfill/status/stop").json()
    assert status["state"] == "cancelled"
    assert int(job.locator('[data-field="done"]').inner_text()) < len(dids_of(fakenet_process))
    assert errors == []


def test_a_wrong_key_then_a_lost_server_show_clear_messages(
    tmp_path: Path, browser: Browser
) -> None:
    from playwright.sync_api import expect

    with running_server(tmp_path) as server:
        page, errors = open_dashboard(browser, server.url, "bbk_nope_nope")
        notice = page.locator("#notice")
        expect(notice).to_have_attribute("data-notice", "unauthorized", timeout=10_000)
        expect(notice).to_contain_text("401")
        expect(notice).to_contain_text("not accepted")
        expect(page.locator("[data-job-id]")).to_have_count(0)
        keep(page, tmp_path, "dashboard-401.png")

        page.fill("#api-key", create_key(server.home, "read"))
        page.click("#key-form button[type=submit]")
        expect(notice).to_be_hidden(timeout=10_000)
        expect(page.locator("#jobs")).to_contain_text("No jobs yet")
    expect(notice).to_have_attribute("data-notice", "offline", timeout=10_000)
    expect(notice).to_contain_text("Cannot reach the server")
    assert errors == []


def test_a_key_over_its_request_rate_sees_the_429_message(tmp_path: Path, browser: Browser) -> None:
    from playwright.sync_api import expect

    with running_server(tmp_path, "--requests-per-second", "0.5") as server:
        token = create_key(server.home, "read")
        client = server.client(token)
        spent = [client.get("/api/backfill/jobs").status_code for _ in range(40)]
        assert 429 in spent
        page, errors = open_dashboard(browser, server.url, token)
        notice = page.locator("#notice")
        expect(notice).to_have_attribute("data-notice", "rate-limited", timeout=10_000)
        expect(notice).to_contain_text("429")
        expect(notice).to_contain_text("Retrying in")
        assert errors == []
