"""The live board (GET /) in a real headless Chromium, against real gunicorn, worker and sandbox.

Covers what a person watching the board sees without ever reloading it: the live
colour (and only it) marked live, a release awaiting promotion, the switch of the live
colour when a promote happens through the API, and a failed release in red with its
reason. Against gunicorn and records and a snapshot written to Redis: a live colour
that disagrees with the records' live release, headlined with the release it runs
and the disagreement said; an open audit trail that shows a note (a command
requested) added without a state change; a tag carrying a bidirectional control
(U+202E) shown as a mark, not obeyed. Also the token: the board opened as
`/?token=...` polls with it, and sends it when it fetches a release's audit trail (a
click on the row). A screenshot is saved in the test's temp dir at the end, and on
failure.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import yaml
from stack import Stack, app_config, running
from web import CONFIG_YAML, Gunicorn, push

from worker import clusterview
from worker.api import Engine
from worker.config import parse_settings
from worker.releases import ReleaseState, ReleaseStore

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="chromium and chromedriver are missing: run `make test`"),
]
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-proxy-server",
                 "--window-size=1400,1100")
STATUS_TOKEN = "board-token-1"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Chromium driven by Debian's chromedriver; the last view is saved as board.png."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.save_screenshot(str(tmp_path / "board.png"))
        driver.quit()


@contextlib.contextmanager
def screenshot_on_failure(driver: Any, tmp_path: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        driver.save_screenshot(str(tmp_path / "board-failure.png"))
        raise


def eventually(driver: Any, check: Callable[[], Any], what: str, timeout: float = 40) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(
        lambda _: check(), message=f"the board never showed {what}")


def board(driver: Any, script: str) -> Any:
    """Run a query in the page (plain DOM; the board has no framework)."""
    return driver.execute_script(script)


LIVE_COLORS = """return [...document.querySelectorAll('[data-app="myapp"] .color')]
  .filter(e => e.dataset.live === 'true').map(e => e.dataset.color);"""
LIVE_LINE = """const e = document.querySelector('[data-app="myapp"] .live-line');
  return e ? e.textContent : '';"""
AUDIT_STEPS = """return [...document.querySelectorAll('tr.audit li strong')]
  .map(e => e.textContent);"""
AWAITING = """return [...document.querySelectorAll('[data-app="myapp"] .awaiting')]
  .map(e => e.textContent);"""
FAILED_ROWS = """return [...document.querySelectorAll('tr.release.bad')].map(row => ({
  id: row.dataset.release, state: row.dataset.state,
  reason: (row.querySelector('.reason') || {}).textContent || '',
  color: getComputedStyle(row.querySelector('.reason') || row).color}));"""


def promote_and_wait(stack: Stack, release: str) -> None:
    stack.act("myapp", "promote", release)
    stack.wait(release, "live")


def test_the_board_follows_a_release_without_reloading(browser: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLUEGREEN_SNAPSHOT_INTERVAL", "1")
    monkeypatch.setenv("BLUEGREEN_STATUS_TOKEN", STATUS_TOKEN)
    with (running(tmp_path, {"myapp": app_config("acme/myapp")}) as stack,
          screenshot_on_failure(browser, tmp_path)):
        v1 = stack.release_id("v1.0-green")
        stack.wait(v1, "awaiting_promotion")
        promote_and_wait(stack, v1)

        browser.get(f"{stack.url}/?token={STATUS_TOKEN}")
        eventually(browser, lambda: board(browser, LIVE_COLORS) == ["green"], "green live")
        assert "GREEN is live" in board(browser, LIVE_LINE)
        assert "v1.0-green" in board(browser, LIVE_LINE)
        browser.find_element("css selector", f'tr.release[data-release="{v1}"]').click()
        eventually(browser, lambda: board(browser, AUDIT_STEPS), "v1.0-green's audit trail")
        browser.execute_script("window.sameDocument = true;")  # gone if the page reloads

        v2 = stack.release_id("v2.0-blue")
        stack.wait(v2, "awaiting_promotion")
        eventually(browser, lambda: any("v2.0-blue" in a for a in board(browser, AWAITING)),
                   "v2.0-blue awaiting promotion")
        promote_and_wait(stack, v2)
        eventually(browser, lambda: board(browser, LIVE_COLORS) == ["blue"], "blue live")
        assert "BLUE is live" in board(browser, LIVE_LINE)
        assert board(browser, AWAITING) == []

        stack.fault(path="/deployments/myapp-green$", method="PATCH", status=422, count=50)
        v3 = stack.release_id("v3.0-green")
        stack.wait(v3, "failed")
        rows = eventually(browser, lambda: board(browser, FAILED_ROWS), "a failed release")
        assert rows[0]["id"] == v3 and rows[0]["state"] == "failed"
        assert rows[0]["reason"].startswith("deploy: ")
        assert rows[0]["color"] == "rgb(200, 30, 30)"  # the board's red
        assert board(browser, LIVE_COLORS) == ["blue"]  # a failure leaves live traffic alone
        card = board(browser, "return document.querySelector('[data-app=\"myapp\"] .failure')"
                              ".textContent;")
        assert card.startswith("v3.0-green failed") and rows[0]["reason"] in card
        assert browser.execute_script("return window.sameDocument === true;")
        assert "live · updated" in board(browser, "return document.getElementById("
                                                  "'connection').textContent;")
        browser.save_screenshot(str(tmp_path / "board-live.png"))


CONFLICT = """const e = document.querySelector('[data-app="myapp"] .conflict');
  return e ? e.textContent : null;"""


def live_release(redis: redis_lib.Redis, tag: str, *then: str) -> str:
    """A release of myapp walked to live (and on through `then`), as the worker would."""
    release = push(redis, tag)
    store = ReleaseStore(redis)
    for state in ("checking", "deploying", "testing", "awaiting_promotion", "live", *then):
        store.transition(release, ReleaseState(state), actor="worker", step="test",
                         message=state)
    return release


def test_the_board_says_when_the_live_colour_disagrees_with_the_records(
        browser: Any, tmp_path: Path, web: Gunicorn, redis: redis_lib.Redis) -> None:
    v2 = live_release(redis, "v2.0-green", "standby")
    v3 = live_release(redis, "v3.0-blue")
    assert ReleaseStore(redis).get(v3).state is ReleaseState.LIVE  # what the records say
    colors = {c: {"deployment": f"myapp-{c}", "exists": True, "release": r, "version": v,
                  "ready": 1, "desired": 1, "is_ready": True}
              for c, r, v in (("blue", v3, "v3.0"), ("green", v2, "v2.0"))}
    redis.set(clusterview.key("myapp"), clusterview.encode(  # the route switched by hand
        {"app": "myapp", "taken_at": time.time(), "live": "green", "live_since": time.time(),
         "colors": colors, "drift": []}))
    with screenshot_on_failure(browser, tmp_path):
        browser.get(web.url + "/")
        eventually(browser, lambda: board(browser, LIVE_COLORS) == ["green"], "green live")
        line = board(browser, LIVE_LINE)
        assert "GREEN is live · v2.0-green" in line and "v3.0-blue" not in line
        assert board(browser, CONFLICT) == (
            "Cluster and records disagree: the default route sends users to green, whose "
            f"Deployment myapp-green carries v2.0-green ({v2}), but the records say v3.0-blue "
            f"({v3}) is live on blue")


AUDIT_LINES = """return [...document.querySelectorAll('tr.audit li')].map(e => e.textContent);"""


def test_an_open_audit_trail_shows_a_note_added_without_a_state_change(
        browser: Any, tmp_path: Path, web: Gunicorn, redis: redis_lib.Redis) -> None:
    release = push(redis, "v1.0-green")
    engine = Engine(parse_settings(yaml.safe_load(CONFIG_YAML), {}), redis)
    updated_at = engine.get_release(release).updated_at
    with screenshot_on_failure(browser, tmp_path):
        browser.get(web.url + "/")
        row = f'tr.release[data-release="{release}"]'
        eventually(browser, lambda: browser.find_elements("css selector", row), "the release")
        browser.find_element("css selector", row).click()
        eventually(browser, lambda: len(board(browser, AUDIT_LINES)) == 1, "the first entry")
        engine.submit_command("myapp", "abort", release=release, actor="api:ops")
        assert engine.get_release(release).updated_at == updated_at
        eventually(browser, lambda: len(board(browser, AUDIT_LINES)) == 2,
                   "the abort request's note", timeout=10)
        assert "abort requested by api:ops" in board(browser, AUDIT_LINES)[1]


def test_bidirectional_controls_in_a_tag_are_shown_not_obeyed(
        browser: Any, tmp_path: Path, web: Gunicorn, redis: redis_lib.Redis) -> None:
    # Git allows U+202E in a tag name; obeyed, "v1.0-\u202enimda-green" would read
    # "v1.0-neerg-admin" on the board.
    release = push(redis, "v1.0-\u202enimda-green")
    row = f'tr.release[data-release="{release}"]'
    with screenshot_on_failure(browser, tmp_path):
        browser.get(web.url + "/")
        eventually(browser, lambda: browser.find_elements("css selector", row), "the release")
        text = browser.find_element("css selector", row).text
        assert "v1.0-<U+202E>nimda-green" in text, text
        assert "\u202e" not in board(browser, "return document.body.textContent;")
