"""`bluegreen status|releases|show|promote|rollback|decommission|abort` over the HTTP API.

Against a real gunicorn web process and a real Redis: tables for people, `--json` for
scripts, exit codes (0 queued, 1 refused/stale/none/several, 2 usage, 3 unreachable),
a malformed `--url` as a one-line usage error and a password in it never echoed,
control characters the server passes on shown as `\\xNN`, never sent to the terminal,
a server that does not speak HTTP reported in one line (exit 3),
choosing the one release a command means and saying which. The end-to-end test runs
the CLI against web + `bluegreen worker` + the sandbox cluster: promote, status, rollback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from click.testing import CliRunner, Result
from conftest import ROOT, Sandbox
from proctools import free_port
from rq import Queue
from web import API_TOKEN, Gunicorn, delivery, http, signed, start_web, with_delivery_id

from worker.cli import main
from worker.releases import ReleaseState, ReleaseStore

S = ReleaseState
TO_AWAITING = (S.CHECKING, S.DEPLOYING, S.TESTING, S.AWAITING_PROMOTION)
BLUEGREEN = str(Path(sys.executable).parent / "bluegreen")


@pytest.fixture
def cli(web: Gunicorn, redis: redis_lib.Redis) -> Callable[..., Result]:
    """Run `bluegreen ARGS...` against the web process (Redis flushed for this test)."""
    def run(*args: str, token: str | None = API_TOKEN) -> Result:
        env = {"BLUEGREEN_URL": web.url, "BLUEGREEN_API_TOKEN": token or ""}
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return run


def push(web: Gunicorn, redis: redis_lib.Redis, forge: str, name: str, delivery_id: str,
         to: tuple[ReleaseState, ...] = TO_AWAITING) -> str:
    """A release taken in through the webhook, then walked through the states `to`."""
    d = signed(with_delivery_id(delivery(forge, name), delivery_id))
    release_id: str = web.post("/webhook", d).json["releases"][0]["id"]
    store = ReleaseStore(redis)
    for state in to:
        store.transition(release_id, state, actor="worker:test", step="test", message="walked")
    return release_id


def jobs(redis: redis_lib.Redis) -> int:
    return Queue("deploy", connection=redis).count


def test_promote_without_a_release_acts_on_the_one_awaiting(
        cli: Callable[..., Result], web: Gunicorn, redis: redis_lib.Redis) -> None:
    release = push(web, redis, "github", "push__tag_lightweight", "d-1")
    result = cli("promote", "myapp")
    assert result.exit_code == 0, result.output
    assert f"promoting {release} (v2.0-green, green)" in result.output
    assert f"queued promote of {release}" in result.output
    assert "position 2 in the queue" in result.output  # behind the release's own job
    audit = http("GET", f"{web.url}/api/releases/{release}").json["audit"]
    assert audit[-1]["step"] == "promote" and audit[-1]["actor"].startswith("api:")


def test_promote_with_none_or_several_awaiting_changes_nothing(
        cli: Callable[..., Result], web: Gunicorn, redis: redis_lib.Redis) -> None:
    none = cli("promote", "myapp")
    assert none.exit_code == 1
    assert "no release of myapp is awaiting promotion" in none.stderr
    first = push(web, redis, "github", "push__tag_lightweight", "d-1")
    second = push(web, redis, "gitlab", "tag_push__annotated", "d-2")
    before = jobs(redis)
    several = cli("promote", "myapp")
    assert several.exit_code == 1
    assert first in several.stderr and second in several.stderr
    assert len(several.stderr.strip().splitlines()) == 1
    assert jobs(redis) == before


def test_promote_a_named_stale_release_exits_1_with_the_reason(
        cli: Callable[..., Result], web: Gunicorn, redis: redis_lib.Redis) -> None:
    release = push(web, redis, "github", "push__tag_lightweight", "d-1", to=())
    result = cli("promote", "myapp", release)
    assert result.exit_code == 1
    assert "is queued" in result.stderr and "stale_command" in result.stderr


def test_rollback_acts_on_the_live_release(cli: Callable[..., Result], web: Gunicorn,
                                           redis: redis_lib.Redis) -> None:
    assert "no release of myapp is live" in cli("rollback", "myapp").stderr
    live = push(web, redis, "github", "push__tag_lightweight", "d-1", to=(*TO_AWAITING, S.LIVE))
    result = cli("rollback", "myapp")
    assert result.exit_code == 1  # no standby release to go back to: the server says so
    assert f"rolling back {live}" in result.output
    assert "nothing to roll back to" in result.stderr


def test_abort_acts_on_the_release_not_live_yet(cli: Callable[..., Result], web: Gunicorn,
                                                redis: redis_lib.Redis) -> None:
    push(web, redis, "github", "push__tag_lightweight", "d-1", to=(*TO_AWAITING, S.LIVE))
    waiting = push(web, redis, "gitlab", "tag_push__annotated", "d-2", to=())
    result = cli("abort", "myapp", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert (answer["result"], answer["release"], answer["action"]) == ("queued", waiting, "abort")
    assert f"aborting {waiting}" in result.stderr


def test_abort_of_one_of_several_releases_on_their_way_names_it(
        cli: Callable[..., Result], web: Gunicorn, redis: redis_lib.Redis) -> None:
    first = push(web, redis, "github", "push__tag_lightweight", "d-1", to=())
    second = push(web, redis, "gitlab", "tag_push__annotated", "d-2", to=())
    several = cli("abort", "myapp")
    assert several.exit_code == 1
    assert several.stderr.startswith("Error: more than one release of myapp is on its way")
    assert first in several.stderr and second in several.stderr
    named = cli("abort", "myapp", second, "--json")
    assert named.exit_code == 0, named.output
    answer = json.loads(named.stdout)
    assert (answer["release"], answer["action"]) == (second, "abort")


def test_decommission_names_the_colour(cli: Callable[..., Result], web: Gunicorn,
                                       redis: redis_lib.Redis) -> None:
    push(web, redis, "github", "push__tag_lightweight", "d-1")
    result = cli("decommission", "myapp", "green")
    assert result.exit_code == 1
    assert "awaiting promotion on green: abort it instead" in result.stderr
    assert cli("decommission", "myapp", "red").exit_code == 2


def test_releases_status_and_show_for_people_and_scripts(
        cli: Callable[..., Result], web: Gunicorn, redis: redis_lib.Redis) -> None:
    live = push(web, redis, "github", "push__tag_lightweight", "d-1", to=(*TO_AWAITING, S.LIVE))
    waiting = push(web, redis, "gitlab", "tag_push__annotated", "d-2")
    listing = cli("releases", "myapp")
    assert listing.exit_code == 0
    header, *rows = listing.output.splitlines()
    assert header.split() == ["RELEASE", "APP", "COLOR", "TAG", "STATE", "STEP", "UPDATED"]
    assert rows[0].split()[:5] == [waiting, "myapp", "blue", "v2.1-blue", "awaiting_promotion"]
    assert json.loads(cli("releases", "--json").stdout)["releases"][1]["id"] == live
    status = cli("status")
    assert status.exit_code == 0
    assert live in status.output
    assert f"awaiting promotion: {waiting} (v2.1-blue, blue)" in status.output
    answer = json.loads(cli("status", "--json").stdout)  # the same document as GET /status
    assert answer["apps"]["myapp"]["live"]["release"]["id"] == live
    shown = cli("show", live)
    assert shown.exit_code == 0
    assert "commit:      6dcb09b5b57875f334f61aebed695e2e4193db5e" in shown.output
    assert "queued -> checking" in shown.output and "awaiting_promotion -> live" in shown.output
    assert json.loads(cli("show", live, "--json").stdout)["release"]["state"] == "live"


PWNED = "\x1b]0;pwned\x07"  # an OSC sequence: retitles the terminal window


def test_control_characters_from_the_server_are_shown_not_obeyed(
        cli: Callable[..., Result], web: Gunicorn, redis: redis_lib.Redis) -> None:
    d = signed(with_delivery_id(delivery("github", "push__tag_lightweight"), "d-1"))
    body = d.json
    body["ref"] = "refs/tags/v9.0\u009b2J-blue"  # C1 CSI: git allows it in a tag name
    release = web.post("/webhook", signed(d.with_body(body))).json["releases"][0]["id"]
    store = ReleaseStore(redis)
    store.note(release, actor=f"api:{PWNED}", step="promote", message=f"tab\there{PWNED}\x7f")
    # U+202E turns what follows around: "deployed by <U+202E>nimda" reads "deployed by admin"
    store.note(release, actor="api:x", step="note", message="deployed by \u202enimda · ok")
    for state in TO_AWAITING:
        store.transition(release, state, actor="worker:test", step="test", message="walked")
    store.transition(release, S.FAILED, actor="worker:test", step="smoke_test",
                     message=f"failed {PWNED}", error=f"GET /ready answered {PWNED}\nline 2")
    for args in (["releases"], ["show", release], ["status"], ["show", f"x{PWNED}"]):
        result = cli(*args)
        assert result.exit_code in (0, 1), result.output
        everything = result.stdout + result.stderr
        assert not [c for c in everything if c != "\n" and not c.isprintable()]
        assert "\\x1b]0;pwned\\x07" in everything or args == ["releases"], args
    assert "v9.0\\x9b2J-blue" in cli("releases").stdout
    shown = cli("show", release).stdout
    assert "tab\\x09here\\x1b]0;pwned\\x07\\x7f" in shown
    assert "deployed by \\u202enimda · ok" in shown  # printable non-ASCII stays as it is
    assert "GET /ready answered \\x1b]0;pwned\\x07\\x0aline 2" in shown
    raw = json.loads(cli("show", release, "--json").stdout)  # scripts get it as it is
    assert raw["release"]["tag"] == "v9.0\u009b2J-blue" and raw["release"]["error"].endswith(
        f"{PWNED}\nline 2")


def test_exit_codes_scripts_can_trust(cli: Callable[..., Result], web: Gunicorn,
                                      redis: redis_lib.Redis) -> None:
    assert cli("show", "no-such-release").exit_code == 1
    assert cli("releases", "nope").exit_code == 1
    push(web, redis, "github", "push__tag_lightweight", "d-1")
    refused = cli("promote", "myapp", token="wrong-token")
    assert refused.exit_code == 1 and "unauthorized" in refused.stderr
    assert cli("promote").exit_code == 2
    assert cli("promote", "myapp", "--url", "ftp://example.com").exit_code == 2
    unreachable = cli("status", "--url", f"http://127.0.0.1:{free_port()}")
    assert unreachable.exit_code == 3
    assert "cannot reach" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("url", ["http://127.0.0.1:abc", "http://exa mple", "http://[::1",
                                 "http://127.0.0.1:99999", "http://", "ftp://example.com",
                                 "http://127.0.0.1\x1b[2J"])
def test_a_malformed_url_is_a_one_line_usage_error(url: str) -> None:
    for env in ({}, {"BLUEGREEN_URL": url}):
        args = ["status"] if env else ["status", "--url", url]
        result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
        assert result.exit_code == 2, result.output
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("Error: --url ")


def test_a_password_in_the_url_is_never_echoed() -> None:
    port = free_port()
    for url in (f"https://ops:s3cret-pw@127.0.0.1:{port}", f"http://ops:s3cr/et@127.0.0.1:{port}",
                f"http://s3cret-token@127.0.0.1:{port}"):
        result = CliRunner().invoke(main, ["promote", "myapp", "r1", "--url", url],
                                    catch_exceptions=False)
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert "s3cr" not in result.output and "***@127.0.0.1" in result.stderr


def test_a_server_that_does_not_speak_http_is_unreachable_in_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        def answer_garbage() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(f"{PWNED} not HTTP\r\n\r\n".encode())
        thread = threading.Thread(target=answer_garbage, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        result = CliRunner().invoke(main, ["status", "--url", url], catch_exceptions=False)
        thread.join(10)
    assert result.exit_code == 3 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"Error: {url} did not answer as an HTTP server: ")
    assert "\x1b" not in result.stderr and "\\x1b]0;pwned\\x07" in result.stderr


# --- end to end: web + worker + sandbox ------------------------------------------------------

E2E_CONFIG = """\
apps:
  myapp:
    repository: acme/myapp
    rollout_timeout: 60
"""


def wait_for_state(web: Gunicorn, release: str, states: set[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = http("GET", f"{web.url}/api/releases/{release}").json["release"]["state"]
        if state in states:
            return state
        time.sleep(0.2)
    raise AssertionError(f"{release} is {state}, not {states}, after {timeout}s")


def bluegreen(web: Gunicorn, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BLUEGREEN_URL": web.url, "BLUEGREEN_API_TOKEN": API_TOKEN}
    return subprocess.run([BLUEGREEN, *args], env=env, capture_output=True, text=True,
                          timeout=30, cwd=ROOT)


def tag(web: Gunicorn, name: str, delivery_id: str) -> str:
    d = delivery("github", "push__tag_lightweight")
    body = d.json
    body["ref"] = f"refs/tags/{name}"
    answer = web.post("/webhook", signed(with_delivery_id(d.with_body(body), delivery_id)))
    assert answer.status == 202, answer.body
    release: str = answer.json["releases"][0]["id"]
    return release


def served_color(sandbox: Sandbox) -> Any:
    return http("GET", sandbox.ingress + "/").json["color"]


@pytest.fixture
def stack(redis_url: str, sandbox: Sandbox, tmp_path: Path) -> Iterator[Gunicorn]:
    """Web (gunicorn) and `bluegreen worker`, both on this test's Redis and sandbox."""
    config = tmp_path / "e2e.yml"
    config.write_text(E2E_CONFIG)
    env = {**sandbox.env(), "REDIS_URL": redis_url, "BLUEGREEN_CONFIG": str(config)}
    web = start_web(redis_url, tmp_path, BLUEGREEN_CONFIG=str(config))
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen([BLUEGREEN, "worker"], env=env, cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        yield web
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        web.stop()


@pytest.mark.slow
def test_cli_promotes_shows_status_and_rolls_back_on_the_sandbox(
        stack: Gunicorn, sandbox: Sandbox) -> None:
    web = stack
    first = tag(web, "v1.0-blue", "e2e-1")
    wait_for_state(web, first, {"awaiting_promotion"})
    promoted = bluegreen(web, "promote", "myapp")
    assert promoted.returncode == 0, promoted.stderr
    assert f"promoting {first} (v1.0-blue, blue)" in promoted.stdout
    wait_for_state(web, first, {"live"})
    assert served_color(sandbox) == "blue"

    second = tag(web, "v2.0-green", "e2e-2")
    wait_for_state(web, second, {"awaiting_promotion"})
    assert bluegreen(web, "promote", "myapp", second).returncode == 0
    wait_for_state(web, second, {"live"})
    assert wait_for_state(web, first, {"standby"}) == "standby"
    assert served_color(sandbox) == "green"

    status = bluegreen(web, "status")
    assert status.returncode == 0
    assert f"{second} (v2.0-green, green)" in status.stdout

    rolled = bluegreen(web, "rollback", "myapp")
    assert rolled.returncode == 0, rolled.stderr
    assert f"rolling back {second}" in rolled.stdout
    wait_for_state(web, second, {"rolled_back"})
    wait_for_state(web, first, {"live"})
    assert served_color(sandbox) == "blue"
    assert bluegreen(web, "rollback", "myapp").returncode == 1  # nothing left to roll back to
