"""Slack's requests to us (Flask test client, real Redis and rq queue, fake Slack for replies).

Covers /chatops/slack/actions and /chatops/slack/commands: only requests Slack signed
in the last five minutes get past 401 (missing, wrong, old, tampered signatures; no
secret configured); a click queues its command, is audited with the Slack user and
rewrites the clicked message as pending through `response_url` (a Decommission
click on the live release's message, with the release last deployed into the other
colour as the notifier finds it); a double click, a
stale or unknown release and a refused user or channel get an ephemeral answer and
change nothing; the slash command's verbs, usage errors, help and status; a
`response_url` off Slack's hosts is not followed; nothing secret reaches the log.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from typing import Any

import pytest
import redis as redis_lib
from fakeslack import SIGNING_SECRET, FakeSlack, sign
from flask.testing import FlaskClient
from rq import Queue
from werkzeug.test import TestResponse

from webhook import create_app
from worker.colors import Color
from worker.config import Settings, parse_settings
from worker.releases import Release, ReleaseState, ReleaseStore
from worker.releases import new_release_id as release_id_for

S = ReleaseState
TO_AWAITING = [(S.CHECKING, "sanity_check"), (S.DEPLOYING, "deploy"), (S.TESTING, "smoke_test"),
               (S.AWAITING_PROMOTION, "smoke_test")]
CHANNEL = ("CDEPLOYS", "deploys")


def settings_for(slack: FakeSlack, app: dict[str, Any] | None = None, **env: str) -> Settings:
    return parse_settings({"apps": {"myapp": app or {}}}, {
        "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_CHANNEL": "#deploys",
        "SLACK_API_URL": slack.api_url, **env})


def client_for(settings: Settings, redis: redis_lib.Redis) -> FlaskClient:
    return create_app(settings, redis).test_client()


@pytest.fixture
def client(slack: FakeSlack, redis: redis_lib.Redis) -> FlaskClient:
    return client_for(settings_for(slack), redis)


def make_release(redis: redis_lib.Redis, tag: str = "v2.0-green",
                 moves: list[tuple[ReleaseState, str]] = TO_AWAITING) -> Release:
    store = ReleaseStore(redis)
    now = time.time()
    release = Release(id=release_id_for("myapp", tag), app="myapp",
                      color=Color(tag.rsplit("-", 1)[1]),
                      tag=tag, version=tag.rsplit("-", 1)[0], commit="ab" * 20, forge="github",
                      delivery_id=f"d-{tag}", repository="acme/myapp", state=S.QUEUED,
                      created_at=now, updated_at=now, actor="github:dev")
    store.add(release, message="pushed")
    for state, step in moves:
        store.transition(release.id, state, actor="worker", step=step, message=str(state))
    found = store.get(release.id)
    assert found is not None
    return found


def post_signed(client: FlaskClient, path: str, form: dict[str, str], *,
                secret: str = SIGNING_SECRET, timestamp: int | None = None,
                headers: dict[str, str] | None = None) -> TestResponse:
    body = urllib.parse.urlencode(form).encode()
    signed = sign(secret, body, timestamp) if headers is None else headers
    return client.post(path, data=body, headers={
        **signed, "Content-Type": "application/x-www-form-urlencoded"})


def click_form(slack: FakeSlack, release: Release | str, action: str = "promote", *,
               user: str = "U1", channel: tuple[str, str] = CHANNEL, reply: str = "r1",
               value: dict[str, Any] | None = None,
               on: Release | None = None) -> dict[str, str]:
    """A click on `release`'s button, in the message of `on` (default: `release`'s own)."""
    rid = release if isinstance(release, str) else release.id
    shown = rid if on is None else on.id
    payload = {
        "type": "block_actions", "user": {"id": user, "username": "alice", "team_id": "T0"},
        "channel": {"id": channel[0], "name": channel[1]},
        "container": {"type": "message", "message_ts": "1.000001", "channel_id": channel[0]},
        "response_url": slack.response_url(reply),
        "actions": [{"action_id": f"bluegreen:{action}", "block_id": f"bluegreen:{shown}",
                     "value": json.dumps(value or {"app": "myapp", "action": action,
                                                   "release": rid}),
                     "action_ts": "1.2"}]}
    return {"payload": json.dumps(payload)}


def click(client: FlaskClient, slack: FakeSlack, release: Release | str,
          action: str = "promote", **kwargs: Any) -> TestResponse:
    return post_signed(client, "/chatops/slack/actions", click_form(slack, release, action,
                                                                    **kwargs))


def slash(client: FlaskClient, text: str, *, user: str = "U1",
          channel: tuple[str, str] = CHANNEL) -> TestResponse:
    return post_signed(client, "/chatops/slack/commands", {
        "command": "/deploy", "text": text, "user_id": user, "user_name": "alice",
        "channel_id": channel[0], "channel_name": channel[1], "team_id": "T0",
        "response_url": "https://hooks.slack.com/commands/T0/1/x", "trigger_id": "t"})


def jobs(redis: redis_lib.Redis) -> list[dict[str, Any]]:
    queue = Queue("deploy", connection=redis)
    return [dict(job.meta) for job in queue.get_jobs()]


def text_of(answer: TestResponse) -> str:
    body = answer.get_json()
    assert answer.status_code == 200 and body["response_type"] == "ephemeral", answer.data
    return str(body["text"])


# -- clicks --------------------------------------------------------------------------------------


def test_a_signed_click_queues_the_command_and_shows_it_pending(
        client: FlaskClient, slack: FakeSlack, redis: redis_lib.Redis) -> None:
    release = make_release(redis)
    text = text_of(click(client, slack, release))
    assert "promote of v2.0-green" in text and "queued, position 1" in text
    (job,) = jobs(redis)
    assert (job["action"], job["release"], job["actor"]) == ("promote", release.id,
                                                             "slack:U1 (alice)")
    last = ReleaseStore(redis).audit(release.id)[-1]
    assert (last.actor, last.message) == ("slack:U1 (alice)",
                                          "promote requested by slack:U1 (alice)")
    (replaced,) = slack.wait_for(lambda: slack.responses_to("r1"), what="response_url post")
    assert replaced["replace_original"] is True
    assert "promoting…" in json.dumps(replaced["blocks"], ensure_ascii=False)
    assert not [b for b in replaced["blocks"] if b["type"] == "actions"]


def test_a_decommission_click_shows_pending_on_the_live_message(
        client: FlaskClient, slack: FakeSlack, redis: redis_lib.Redis) -> None:
    """The button is on the live release's message and acts on the release last deployed
    into the other colour, which the rewrite finds as the notifier does: a newer tag for
    that colour that has not deployed (here still queued) does not hide it."""
    store = ReleaseStore(redis)
    standby = make_release(redis, "v1.0-green")
    store.transition(standby.id, S.LIVE, actor="api:x", step="promote", message="live")
    live = make_release(redis, "v2.0-blue")
    store.transition(standby.id, S.STANDBY, actor="api:x", step="promote", message="standby")
    store.transition(live.id, S.LIVE, actor="api:x", step="promote", message="live")
    make_release(redis, "v3.0-green", moves=[])
    value = {"app": "myapp", "action": "decommission", "release": standby.id, "color": "green"}
    text = text_of(click(client, slack, standby, "decommission", value=value, on=live))
    assert f"decommission of v1.0-green ({standby.id}) is queued" in text
    (replaced,) = slack.wait_for(lambda: slack.responses_to("r1"), what="response_url post")
    shown = json.dumps(replaced["blocks"], ensure_ascii=False)
    assert "v2.0-blue" in shown and "*decommissioning…* requested by <@U1>" in shown
    assert not [b for b in replaced["blocks"] if b["type"] == "actions"]


def test_a_double_click_is_acknowledged_and_changes_nothing(
        client: FlaskClient, slack: FakeSlack, redis: redis_lib.Redis) -> None:
    release = make_release(redis)
    click(client, slack, release)
    audit = ReleaseStore(redis).audit(release.id)
    text = text_of(click(client, slack, release, reply="r2"))
    assert text.startswith("Already requested: promote of " + release.id)
    assert "changed nothing" in text
    assert len(jobs(redis)) == 1 and ReleaseStore(redis).audit(release.id) == audit
    (reply,) = slack.wait_for(lambda: slack.responses_to("r2"), what="the ephemeral reply")
    assert reply == {"response_type": "ephemeral", "replace_original": False, "text": text}


def test_a_click_while_the_same_command_is_queued_names_its_place(
        client: FlaskClient, slack: FakeSlack, redis: redis_lib.Redis) -> None:
    release = make_release(redis)
    click(client, slack, release)
    redis.delete(*redis.keys("bluegreen:chatops:click:*"))  # the quick-repeat guard expired
    text = text_of(click(client, slack, release))
    assert "is already queued (position 1)" in text and len(jobs(redis)) == 1


def test_a_stale_click_says_why_and_changes_nothing(client: FlaskClient, slack: FakeSlack,
                                                    redis: redis_lib.Redis) -> None:
    old = make_release(redis, "v2.0-green")
    newer = make_release(redis, "v2.1-green", moves=[])
    why = f"superseded by {newer.id} (v2.1-green), which takes green and its test route"
    ReleaseStore(redis).transition(old.id, S.SUPERSEDED, actor="worker", step="supersede",
                                   message=why)
    make_release(redis, "v2.2-green", moves=[])  # newer still, but not what superseded it
    audit = ReleaseStore(redis).audit(old.id)
    text = text_of(click(client, slack, old))
    assert text == f"Nothing changed: release {old.id} is {why}"
    assert jobs(redis) == [] and ReleaseStore(redis).audit(old.id) == audit
    (reply,) = slack.wait_for(lambda: slack.responses_to("r1"), what="the ephemeral reply")
    assert reply["response_type"] == "ephemeral" and reply["text"] == text
    assert text_of(click(client, slack, old)) == text  # refusals do not arm the repeat guard


def test_a_click_for_an_unknown_release_or_a_foreign_button(
        client: FlaskClient, slack: FakeSlack, redis: redis_lib.Redis) -> None:
    text = text_of(click(client, slack, "myapp-v9-green-00000000"))
    assert text == "Nothing changed: app myapp has no release 'myapp-v9-green-00000000'"
    text = text_of(click(client, slack, "x", value={"app": "myapp", "action": "explode",
                                                    "release": "x"}))
    assert text == "Nothing changed: unknown action 'explode'."
    assert jobs(redis) == []


def test_a_click_naming_a_key_that_is_no_release_is_an_unknown_release(
        client: FlaskClient, slack: FakeSlack, redis: redis_lib.Redis) -> None:
    release = make_release(redis)
    text = text_of(click(client, slack, f"{release.id}:audit"))
    assert text == f"Nothing changed: app myapp has no release '{release.id}:audit'"
    assert jobs(redis) == []


def test_clicks_on_other_apps_buttons_are_ignored(client: FlaskClient, slack: FakeSlack,
                                                  redis: redis_lib.Redis) -> None:
    form = click_form(slack, "x")
    payload = json.loads(form["payload"])
    payload["actions"][0]["action_id"] = "someone_else:ok"
    answer = post_signed(client, "/chatops/slack/actions", {"payload": json.dumps(payload)})
    assert (answer.status_code, answer.data) == (200, b"")
    payload["type"] = "view_submission"
    answer = post_signed(client, "/chatops/slack/actions", {"payload": json.dumps(payload)})
    assert (answer.status_code, answer.data) == (200, b"")


@pytest.mark.parametrize("where", ["username", "value"])
def test_a_click_whose_text_is_not_text_is_a_400_with_nothing_changed(
        client: FlaskClient, slack: FakeSlack, redis: redis_lib.Redis, where: str) -> None:
    """JSON can escape a lone surrogate (here in the clicker's name, or in the button's
    own value, JSON in the payload's JSON), which Slack never sends and no audit entry
    could hold."""
    release = make_release(redis)
    before = ReleaseStore(redis).audit(release.id)
    escaped = "\\udc80"  # the six characters of the escape, for a decoder to read
    if where == "username":  # into the payload's JSON text
        form = click_form(slack, release)
        form["payload"] = form["payload"].replace('"username": "alice"',
                                                  f'"username": "al{escaped}ice"')
    else:  # into the value's JSON text, which the payload then carries as a string
        payload = json.loads(click_form(slack, release)["payload"])
        payload["actions"][0]["value"] = payload["actions"][0]["value"].replace(
            release.id, release.id + escaped)
        form = {"payload": json.dumps(payload)}
    answer = post_signed(client, "/chatops/slack/actions", form)
    if where == "username":
        assert (answer.status_code, answer.get_json()["code"]) == (400, "bad_request")
    else:  # the payload reads; the button in it is not one of ours
        assert "this button was not made by bluegreen" in text_of(answer)
    assert jobs(redis) == [] and ReleaseStore(redis).audit(release.id) == before


@pytest.mark.parametrize("how", ["missing", "wrong secret", "old", "future", "garbage time",
                                 "tampered", "not ascii", "not ascii time"])
def test_requests_slack_did_not_sign_now_get_401(client: FlaskClient, slack: FakeSlack,
                                                 redis: redis_lib.Redis, how: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A refusal, whatever the headers hold: never a 500 (a header arrives as latin-1
    text, and `hmac.compare_digest` refuses a str that is not ASCII)."""
    caplog.set_level(logging.INFO, logger="bluegreen")
    release = make_release(redis)
    before = ReleaseStore(redis).audit(release.id)
    form = click_form(slack, release)
    body = urllib.parse.urlencode(form).encode()
    headers = {
        "missing": {},
        "wrong secret": sign("not-the-secret", body),
        "old": sign(SIGNING_SECRET, body, int(time.time()) - 330),  # Slack allows 300 s either way
        "future": sign(SIGNING_SECRET, body, int(time.time()) + 330),
        "garbage time": {**sign(SIGNING_SECRET, body), "X-Slack-Request-Timestamp": "soon"},
        "tampered": sign(SIGNING_SECRET, body.replace(b"alice", b"mallory")),
        "not ascii": {**sign(SIGNING_SECRET, body), "X-Slack-Signature": "v0=\xe9"},
        "not ascii time": {**sign(SIGNING_SECRET, body), "X-Slack-Request-Timestamp": "1\xb2"},
    }[how]
    answer = post_signed(client, "/chatops/slack/actions", form, headers=headers)
    assert answer.status_code == 401
    assert answer.get_json()["code"] == "unauthorized"
    assert [r.getMessage() for r in caplog.records] == [
        "Slack request refused (401): missing, invalid or expired signature"]
    assert jobs(redis) == [] and ReleaseStore(redis).audit(release.id) == before
    assert post_signed(client, "/chatops/slack/commands", {"text": "help", "user_id": "U1"},
                       headers=headers).status_code == 401


def test_without_a_signing_secret_chat_ops_are_off(slack: FakeSlack,
                                                   redis: redis_lib.Redis) -> None:
    client = client_for(settings_for(slack, SLACK_SIGNING_SECRET=""), redis)
    release = make_release(redis)
    answer = click(client, slack, release)
    assert answer.status_code == 401 and "SLACK_SIGNING_SECRET" in answer.get_json()["message"]
    assert jobs(redis) == []


# -- who may ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("app", "env", "user", "channel", "why"), [
    ({"slack_users": ["U1"]}, {}, "U2", CHANNEL, "your Slack user id U2 is not in its slack_users"),
    ({}, {}, "U2", ("CRANDOM", "random"), "myapp takes chat commands only in #deploys"),
    ({"slack_channels": ["C0OPS"]}, {}, "U1", CHANNEL, "only in its slack_channels"),
    ({}, {"SLACK_CHANNEL": ""}, "U1", CHANNEL, "chat commands for myapp are off"),
])
def test_a_refused_user_or_channel_gets_told_why(slack: FakeSlack, redis: redis_lib.Redis,
                                                 app: dict[str, Any], env: dict[str, str],
                                                 user: str, channel: tuple[str, str],
                                                 why: str) -> None:
    client = client_for(settings_for(slack, app, **env), redis)
    release = make_release(redis)
    before = ReleaseStore(redis).audit(release.id)
    text = text_of(click(client, slack, release, user=user, channel=channel))
    assert text.startswith("Not allowed: ") and why in text and text.endswith("Nothing changed.")
    assert text_of(slash(client, "promote myapp", user=user, channel=channel)) == text
    assert jobs(redis) == [] and ReleaseStore(redis).audit(release.id) == before


def test_allowed_users_and_channels_may_act(slack: FakeSlack, redis: redis_lib.Redis) -> None:
    client = client_for(settings_for(slack, {"slack_users": ["U1", "U7"],
                                             "slack_channels": ["#ops", "C0REL"]}), redis)
    release = make_release(redis)
    assert "queued" in text_of(click(client, slack, release, user="U7",
                                     channel=("C9", "ops")))


# -- the slash command -------------------------------------------------------------------------


def test_slash_command_promotes_the_awaiting_release(client: FlaskClient, slack: FakeSlack,
                                                     redis: redis_lib.Redis) -> None:
    release = make_release(redis)
    text = text_of(slash(client, "promote myapp"))
    assert f"promote of v2.0-green ({release.id}) is queued" in text
    assert [(j["action"], j["release"]) for j in jobs(redis)] == [("promote", release.id)]
    again = text_of(slash(client, f"promote myapp {release.id}"))
    assert again.startswith("Already requested")


def test_a_repeated_slash_command_without_a_release_is_acknowledged_and_changes_nothing(
        client: FlaskClient, slack: FakeSlack, redis: redis_lib.Redis) -> None:
    """The command acts on the release the state implies: a repeat of it, or of the click
    for that release, meets the same repeat guard as a repeated click."""
    release = make_release(redis)
    assert "queued, position 1" in text_of(click(client, slack, release))
    audit = ReleaseStore(redis).audit(release.id)
    for _ in range(2):
        text = text_of(slash(client, "promote myapp"))
        assert text == (f"Already requested: promote of {release.id} is already queued "
                        "(position 1); this request changed nothing.")
    assert len(jobs(redis)) == 1 and ReleaseStore(redis).audit(release.id) == audit

    make_release(redis, "v2.0-blue")  # two awaiting now: the command must name one
    text = text_of(slash(client, "promote myapp"))
    assert text.startswith("Nothing changed: promote needs exactly one awaiting_promotion")
    assert len(jobs(redis)) == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("rollback myapp", "Nothing changed: rollback needs exactly one live release of myapp"),
    ("promote", "Usage: promote APP [RELEASE]"),
    ("decommission myapp", "Usage: decommission APP COLOR [RELEASE]"),
    ("decommission myapp purple", "purple"),
    ("promote myapp not/an/id", "is not a release id"),
    ("promote nope", "Nothing changed: no app named 'nope' is configured."),
    ("launch myapp", "Unknown command 'launch'."),
])
def test_slash_command_mistakes_are_explained(client: FlaskClient, redis: redis_lib.Redis,
                                              text: str, expected: str) -> None:
    make_release(redis)
    assert expected in text_of(slash(client, text))
    assert jobs(redis) == []


def test_slash_help_and_status(client: FlaskClient, redis: redis_lib.Redis) -> None:
    assert "/deploy decommission APP COLOR [RELEASE]" in text_of(slash(client, "help"))
    assert "/deploy status [APP]" in text_of(slash(client, ""))
    release = make_release(redis)
    status = text_of(slash(client, "status"))
    assert "*myapp*: nothing is live" in status
    assert f"awaiting promotion: `v2.0-green` on green (`{release.id}`)" in status
    assert "queue `deploy`: 0 waiting; worker *not running*" in status
    assert "No app named 'nope'" in text_of(slash(client, "status nope"))


# -- what must never happen --------------------------------------------------------------------


def test_a_response_url_off_slacks_hosts_is_not_followed(
        client: FlaskClient, slack: FakeSlack, redis: redis_lib.Redis) -> None:
    release = make_release(redis)
    form = click_form(slack, release)
    payload = json.loads(form["payload"])
    payload["response_url"] = "http://169.254.169.254/latest/meta-data"
    answer = post_signed(client, "/chatops/slack/actions", {"payload": json.dumps(payload)})
    assert "queued" in text_of(answer)
    time.sleep(0.3)
    assert slack.responses == []


def test_secrets_and_response_urls_stay_out_of_the_log(
        client: FlaskClient, slack: FakeSlack, redis: redis_lib.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    release = make_release(redis)
    click(client, slack, release)
    click(client, slack, release, reply="r2")
    post_signed(client, "/chatops/slack/actions", click_form(slack, release),
                secret="wrong")
    slack.wait_for(lambda: len(slack.responses) == 2, what="both replies")
    for secret in (SIGNING_SECRET, slack.response_url("r1"), "secret-r1", "secret-r2"):
        assert secret not in caplog.text
