"""Chat-ops end to end: real gunicorn, a real `bluegreen worker`, the sandbox cluster, real Redis.

The only stand-in is Slack itself (tests/fakeslack.py). Covers: a release posts one
message that follows it; a signed click on its Promote button promotes it and the
message ends "live" with the right buttons (none for a first release; Rollback and
Decommission once a standby exists, while the older release's message turns
standby); a click's pending rewrite that reaches Slack after the notifier has shown
the outcome does not leave the message stale; the Decommission button and the slash
command act; a stale click, an unauthorised user and bad or old signatures change
nothing — cluster and records alike — and the first two get ephemeral answers; Slack
answering 500 or 429 never holds up a release, and the message catches up; a
tampered Mattermost context is refused.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from conftest import Sandbox
from fakeslack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    FakeSlack,
    button,
    button_texts,
    message_text,
    sign,
)
from flows import Flow, S, app_body, wait_until
from proctools import free_port
from web import API_TOKEN, Gunicorn, Response, http

from worker import chatsign, notify
from worker.colors import Color

MM_SECRET = "mm-secret-1"
CHANNEL = ("CDEPLOYS", "deploys")


class ChatWorld:
    """A flow (sandbox, Redis, worker) plus gunicorn and the fake Slack, wired together."""

    def __init__(self, flow: Flow, slack: FakeSlack, tmp: Path) -> None:
        self.flow, self.slack = flow, slack
        flow.env.update(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_URL=slack.api_url,
                        SLACK_CHANNEL="#deploys", SLACK_SIGNING_SECRET=SIGNING_SECRET,
                        MATTERMOST_TOKEN=MM_SECRET, BLUEGREEN_API_TOKEN=API_TOKEN)
        self.web = Gunicorn(port=free_port(), env=dict(flow.env), log=tmp / "gunicorn.log")
        self.replies = 0

    def start(self) -> ChatWorld:
        """Gunicorn and the worker, and wait until the worker's notifier sidecar is active."""
        self.web.start()
        self.flow.start_worker()
        wait_until(lambda: self.flow.redis.exists(notify.LOCK_KEY), 60,
                   "the worker's chat notifier to start")
        return self

    def stop(self) -> None:
        self.flow.stop_workers()
        self.web.stop()

    def message(self, release: str) -> dict[str, Any] | None:
        return self.slack.message_for(release)

    def shows(self, release: str, *words: str, buttons: list[str] | None = None,
              timeout: float = 30) -> dict[str, Any]:
        """Wait until the release's message shows `words` and exactly `buttons`."""
        def check() -> dict[str, Any] | None:
            message = self.message(release)
            text = message_text(message)
            ok = message is not None and all(w in text for w in words) and (
                buttons is None or button_texts(message) == buttons)
            return json.loads(json.dumps(message)) if ok else None  # a copy, as it was then
        found: dict[str, Any] = self.slack.wait_for(check, timeout, f"{release}: {words} "
                                                    f"{buttons}; now {self.message(release)}")
        return found

    def click(self, message: dict[str, Any], label: str, *, user: str = "U1",
              headers: Callable[[bytes], dict[str, str]] | None = None,
              hold_replies: bool = False) -> tuple[Response, str]:
        """Click a button of a posted message as Slack would; the reply's response_url name.
        `hold_replies`: Slack takes the replies to it only at `slack.let_responses_through`."""
        element = button(message, label)
        block = next(b for b in message["blocks"] if b["type"] == "actions")
        self.replies += 1
        name = f"r{self.replies}"
        if hold_replies:
            self.slack.hold_responses(name)
        payload = {"type": "block_actions", "user": {"id": user, "username": user.lower()},
                   "channel": {"id": CHANNEL[0], "name": CHANNEL[1]},
                   "container": {"message_ts": message["ts"], "channel_id": message["channel"]},
                   "response_url": self.slack.response_url(
                       name, message=(message["channel"], message["ts"])),
                   "actions": [{"action_id": element["action_id"], "block_id": block["block_id"],
                                "value": element["value"], "action_ts": str(time.time())}]}
        return self.post("/chatops/slack/actions", {"payload": json.dumps(payload)},
                         headers), name

    def slash(self, text: str, *, user: str = "U1") -> Response:
        return self.post("/chatops/slack/commands", {
            "command": "/deploy", "text": text, "user_id": user, "user_name": user.lower(),
            "channel_id": CHANNEL[0], "channel_name": CHANNEL[1],
            "response_url": self.slack.response_url("slash")})

    def post(self, path: str, form: dict[str, str],
             headers: Callable[[bytes], dict[str, str]] | None = None) -> Response:
        body = urllib.parse.urlencode(form).encode()
        signed = (headers or (lambda b: sign(SIGNING_SECRET, b)))(body)
        return http("POST", self.web.url + path, body, {
            **signed, "Content-Type": "application/x-www-form-urlencoded"})

    def cluster_state(self) -> Any:
        """Everything a command could change on the cluster, with resource versions."""
        with_rv = self.flow.cluster()
        try:
            vs = with_rv.get_virtual_service(namespace="default", name="myapp-blue-green")
            dr = with_rv.get_destination_rule(namespace="default", name="myapp-blue-green")
            deployments = with_rv.list_deployments(namespace="default", selector="app=myapp")
        finally:
            with_rv.close()
        return vs, dr, sorted((d.name, d.generation, d.release_id) for d in deployments)

    def records(self, *releases: str) -> Any:
        return [(self.flow.get(r), self.flow.store.audit(r)) for r in releases]


def promoted_from_slack(world: ChatWorld, tag: str) -> str:
    """Release `tag`, promote it with `/deploy promote myapp` once it awaits; its id."""
    release = world.flow.release(tag)
    world.flow.wait(release, S.AWAITING_PROMOTION)
    assert "queued" in ephemeral(world.slash("promote myapp"))
    world.flow.wait(release, S.LIVE)
    return release


def ephemeral(answer: Response) -> str:
    assert answer.status == 200, answer.body
    body = answer.json
    assert body["response_type"] == "ephemeral"
    return str(body["text"])


@pytest.fixture
def make_world(sandbox: Sandbox, redis: redis_lib.Redis, redis_url: str, tmp_path: Path,
               slack: FakeSlack) -> Iterator[Callable[..., ChatWorld]]:
    worlds: list[ChatWorld] = []

    def make(**app: Any) -> ChatWorld:
        flow = Flow(sandbox, redis, redis_url, tmp_path, {"myapp": app_body(**app)})
        worlds.append(ChatWorld(flow, slack, tmp_path).start())
        return worlds[-1]
    yield make
    for world in worlds:
        world.stop()


@pytest.mark.slow
def test_a_button_click_promotes_and_stale_or_unauthorised_clicks_change_nothing(
        make_world: Callable[..., ChatWorld]) -> None:
    world = make_world(slack_users=["U1"])
    v1 = world.flow.release("v1.0-green")
    awaiting = world.shows(v1, "Awaiting promotion", buttons=["Promote green", "Abort"])
    assert len(world.slack.api_calls("chat.postMessage")) == 1  # then updated in place

    before = world.cluster_state(), world.records(v1)
    text = ephemeral(world.click(awaiting, "Promote green", user="UMALLORY")[0])
    assert text.startswith("Not allowed: you are not allowed to release myapp")
    for bad in (lambda b: {}, lambda b: sign("wrong", b),
                lambda b: sign(SIGNING_SECRET, b, int(time.time()) - 600)):
        assert world.click(awaiting, "Promote green", headers=bad)[0].status == 401
    assert (world.cluster_state(), world.records(v1)) == before

    answer, reply = world.click(awaiting, "Promote green")
    assert "queued" in ephemeral(answer)
    world.slack.wait_for(lambda: world.slack.responses_to(reply), what="the pending message")
    assert "promoting…" in message_text(world.slack.responses_to(reply)[0])
    world.flow.wait(v1, S.LIVE)
    live = world.shows(v1, "Live", "Default traffic goes to green", "<@U1>", buttons=[])
    assert world.flow.served_by() == "green v1.0"
    assert world.flow.store.audit(v1)[-1].actor == "slack:U1 (u1)"

    wait_until(lambda: world.flow.engine.queue_status()[0]["running"] is None, 10,
               "the promote job to end")
    before = world.cluster_state(), world.records(v1)
    text = ephemeral(world.click(awaiting, "Promote green")[0])  # the old, stale message
    assert text == (f"Nothing changed: release {v1} is live; promote needs a release that is "
                    "awaiting_promotion")
    time.sleep(1.0)
    assert (world.cluster_state(), world.records(v1)) == before
    now = world.message(v1)  # as people see it: the click may have had it sent again, unchanged
    assert now is not None and (now["text"], now["blocks"]) == (live["text"], live["blocks"])


@pytest.mark.slow
def test_the_live_message_offers_rollback_and_decommission(
        make_world: Callable[..., ChatWorld]) -> None:
    world = make_world()
    v1 = promoted_from_slack(world, "v1.0-green")
    v2 = world.flow.release("v2.0-blue")
    world.flow.wait(v2, S.AWAITING_PROMOTION)
    assert "queued" in ephemeral(world.slash(f"promote myapp {v2}"))
    world.flow.wait(v2, S.LIVE)
    live = world.shows(v2, "Live", buttons=["Rollback", "Decommission green"])
    world.shows(v1, "Standby", buttons=[])
    assert world.flow.served_by() == "blue v2.0"

    text = ephemeral(world.click(live, "Decommission green")[0])
    assert f"decommission of v1.0-green ({v1}) is queued" in text
    world.flow.wait(v1, S.DECOMMISSIONED)
    world.shows(v2, "Live", buttons=[])
    world.shows(v1, "Decommissioned", "myapp-green deleted")
    assert world.flow.cluster().get_deployment(namespace="default", name="myapp-green") is None
    assert ephemeral(world.slash("rollback myapp")).startswith(
        "Nothing changed: nothing to roll back to")
    status = ephemeral(world.slash("status myapp"))
    assert f"*myapp*: live `v2.0-blue` on blue (`{v2}`)" in status and "worker up" in status


@pytest.mark.slow
def test_a_pending_reply_that_reaches_slack_late_leaves_the_outcome_showing(
        make_world: Callable[..., ChatWorld]) -> None:
    """A click's "promoting…" rewrite goes through `response_url` from the web process's
    thread pool; held up there or by Slack, it can land after the notifier has shown the
    outcome. The message must still end showing the release as it is, buttons and all."""
    world = make_world()
    promoted_from_slack(world, "v1.0-green")
    v2 = world.flow.release("v2.0-blue")
    awaiting = world.shows(v2, "Awaiting promotion", buttons=["Promote blue", "Abort"])

    answer, reply = world.click(awaiting, "Promote blue", hold_replies=True)
    assert "queued" in ephemeral(answer)
    world.flow.wait(v2, S.LIVE)
    world.shows(v2, "Live", buttons=["Rollback", "Decommission green"])  # the notifier's update
    world.slack.let_responses_through(reply)  # only now does the pending rewrite land
    (late,) = world.slack.wait_for(lambda: world.slack.responses_to(reply), what="the reply")
    assert late["replace_original"] is True and "promoting…" in message_text(late)
    world.shows(v2, "Live", "Default traffic goes to blue",
                buttons=["Rollback", "Decommission green"], timeout=15)


@pytest.mark.slow
def test_slack_down_or_rate_limiting_never_holds_up_a_release(
        make_world: Callable[..., ChatWorld]) -> None:
    world = make_world()
    world.slack.fail_next(10_000)
    v1 = world.flow.release("v1.0-green")
    world.flow.wait(v1, S.AWAITING_PROMOTION)  # Slack has answered 500 all along
    assert world.message(v1) is None and world.slack.api_calls()
    assert {c.status for c in world.slack.api_calls()} == {500}
    world.slack.faults.clear()
    world.shows(v1, "Awaiting promotion", buttons=["Promote green", "Abort"], timeout=60)
    notes = [e.message for e in world.flow.store.audit(v1) if e.step == "chat"]
    assert notes[0].startswith("Slack message not updated: Slack answered HTTP 500")

    world.slack.rate_limit_next(1, retry_after=2)
    world.flow.command("promote", v1, actor=f"api:{API_TOKEN[:3]}")
    world.flow.wait(v1, S.LIVE)  # not held up by the 429 either
    world.shows(v1, "Live", buttons=[])
    calls = world.slack.api_calls()
    limited = next(i for i, c in enumerate(calls) if c.status == 429)
    assert calls[limited + 1].at - calls[limited].at >= 1.9
    assert world.slack.api_calls("chat.postMessage")[-1].status == 200
    assert len([c for c in world.slack.api_calls("chat.postMessage") if c.status == 200]) == 1


@pytest.mark.slow
def test_a_tampered_mattermost_context_is_refused(make_world: Callable[..., ChatWorld]) -> None:
    world = make_world()
    v1 = world.flow.release("v1.0-green")
    world.flow.wait(v1, S.AWAITING_PROMOTION)
    before = world.cluster_state(), world.records(v1)
    context = chatsign.sign(MM_SECRET, app="myapp", action="abort", release=v1,
                            color=Color.GREEN.value)
    for tampered in ({**context, "action": "promote"}, {**context, "sig": "0" * 64}):
        answer = http("POST", world.web.url + "/chatops/mattermost/actions",
                      json.dumps({"user_id": "mm1", "context": tampered}).encode(),
                      {"Content-Type": "application/json"})
        assert answer.status == 401
    assert (world.cluster_state(), world.records(v1)) == before
    answer = http("POST", world.web.url + "/chatops/mattermost/actions",
                  json.dumps({"user_id": "mm1", "user_name": "dana", "context": context}).encode(),
                  {"Content-Type": "application/json"})
    assert "abort of v1.0-green" in answer.json["ephemeral_text"]
    world.flow.wait(v1, S.ABORTED)
    world.shows(v1, "Aborted", "mattermost:mm1 (dana)", buttons=[])
