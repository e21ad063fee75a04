"""Mattermost buttons: signed contexts (worker.chatsign) and POST /chatops/mattermost/actions.

Mattermost does not sign requests, so each button's context carries our HMAC over app,
action, release, colour and channel. Covers: signing round trips; changing, adding or
dropping any signed field, another secret or no secret fails verification; the
endpoint (Flask test client, real Redis and rq queue) queues a signed click with the
Mattermost user as actor, answers 401 with nothing changed for a tampered or unsigned
context, refuses a context signed for another channel, and renders stale commands
and double clicks as ephemeral text.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis as redis_lib
from flask.testing import FlaskClient
from rq import Queue
from werkzeug.test import TestResponse

from webhook import create_app
from worker import chatsign
from worker.colors import Color
from worker.config import parse_settings
from worker.releases import Release, ReleaseState, ReleaseStore, new_release_id

S = ReleaseState
SECRET = "mm-button-secret-1"
TO_AWAITING = [(S.CHECKING, "sanity_check"), (S.DEPLOYING, "deploy"), (S.TESTING, "smoke_test"),
               (S.AWAITING_PROMOTION, "smoke_test")]


def test_a_signed_context_verifies() -> None:
    context = chatsign.sign(SECRET, app="myapp", action="promote", release="r1",
                            channel="ch1")
    assert chatsign.verify(SECRET, context)
    assert chatsign.verify(SECRET, json.loads(json.dumps(context)))  # as it comes back


@pytest.mark.parametrize("change", [
    {"app": "other"}, {"action": "rollback"}, {"release": "r2"}, {"channel": "ch2"},
    {"color": "blue"}, {"sig": "0" * 64}, {"sig": None}, {"app": None}, {"channel": None},
    {"release": "r1\nchannel"}, {"app": ["myapp"]},
])
def test_any_change_to_a_signed_context_fails(change: dict[str, Any]) -> None:
    context: dict[str, Any] = chatsign.sign(SECRET, app="myapp", action="promote",
                                            release="r1", channel="ch1")
    for key, value in change.items():
        if value is None:
            context.pop(key, None)
        else:
            context[key] = value
    assert not chatsign.verify(SECRET, context)


def test_another_secret_or_no_secret_fails() -> None:
    context = chatsign.sign(SECRET, app="myapp", action="promote", release="r1")
    assert not chatsign.verify("another-secret", context)
    assert not chatsign.verify(None, context) and not chatsign.verify("", context)
    assert not chatsign.verify(SECRET, "not a mapping")
    assert not chatsign.verify(SECRET, None)


@pytest.fixture
def client(redis: redis_lib.Redis) -> FlaskClient:
    settings = parse_settings({"apps": {"myapp": {}}}, {"MATTERMOST_TOKEN": SECRET})
    return create_app(settings, redis).test_client()


def awaiting_release(redis: redis_lib.Redis) -> Release:
    store = ReleaseStore(redis)
    now = time.time()
    release = Release(id=new_release_id("myapp", "v2.0-green"), app="myapp", color=Color.GREEN,
                      tag="v2.0-green", version="v2.0", commit="ab" * 20, forge="github",
                      delivery_id="d-1", repository="acme/myapp", state=S.QUEUED,
                      created_at=now, updated_at=now, actor="github:dev")
    store.add(release, message="pushed")
    for state, step in TO_AWAITING:
        store.transition(release.id, state, actor="worker", step=step, message=str(state))
    return release


def press(client: FlaskClient, context: dict[str, Any], *, channel: str = "ch1") -> TestResponse:
    return client.post("/chatops/mattermost/actions", json={
        "user_id": "mmuser1", "user_name": "carol", "channel_id": channel,
        "team_id": "team1", "post_id": "post1", "type": "", "context": context})


def jobs(redis: redis_lib.Redis) -> list[dict[str, Any]]:
    return [dict(job.meta) for job in Queue("deploy", connection=redis).get_jobs()]


def test_a_signed_click_is_queued_with_the_mattermost_user(client: FlaskClient,
                                                           redis: redis_lib.Redis) -> None:
    release = awaiting_release(redis)
    context = chatsign.sign(SECRET, app="myapp", action="promote", release=release.id,
                            channel="ch1")
    answer = press(client, context)
    assert answer.status_code == 200
    assert "promote of v2.0-green" in answer.get_json()["ephemeral_text"]
    (job,) = jobs(redis)
    assert (job["action"], job["actor"]) == ("promote", "mattermost:mmuser1 (carol)")
    again = press(client, context).get_json()["ephemeral_text"]
    assert again.startswith("Already requested") and len(jobs(redis)) == 1


@pytest.mark.parametrize("tamper", ["release", "action", "unsigned", "not ascii", "no context"])
def test_a_tampered_context_is_refused_with_nothing_changed(
        client: FlaskClient, redis: redis_lib.Redis, tamper: str) -> None:
    release = awaiting_release(redis)
    before = ReleaseStore(redis).audit(release.id)
    context: dict[str, Any] = chatsign.sign(SECRET, app="myapp", action="abort",
                                            release="myapp-v1-0-green-00000000")
    if tamper == "release":
        context["release"] = release.id  # reuse a signature made for another release
    elif tamper == "action":
        context = {**chatsign.sign(SECRET, app="myapp", action="promote", release=release.id),
                   "action": "abort"}
    elif tamper == "unsigned":
        context = {"app": "myapp", "action": "abort", "release": release.id}
    elif tamper == "not ascii":  # hmac.compare_digest refuses a str that is not ASCII
        context = {**chatsign.sign(SECRET, app="myapp", action="abort", release=release.id),
                   "sig": "\xe9" * 64}
    else:
        context = {}
    answer = press(client, context)
    assert answer.status_code == 401 and answer.get_json()["code"] == "unauthorized"
    assert jobs(redis) == [] and ReleaseStore(redis).audit(release.id) == before


def test_without_a_secret_every_click_is_refused(redis: redis_lib.Redis) -> None:
    client = create_app(parse_settings({"apps": {"myapp": {}}}, {}), redis).test_client()
    release = awaiting_release(redis)
    context = chatsign.sign(SECRET, app="myapp", action="promote", release=release.id)
    assert press(client, context).status_code == 401 and jobs(redis) == []


def test_a_button_acts_only_in_its_own_channel(client: FlaskClient,
                                               redis: redis_lib.Redis) -> None:
    release = awaiting_release(redis)
    context = chatsign.sign(SECRET, app="myapp", action="promote", release=release.id,
                            channel="ch1")
    text = press(client, context, channel="elsewhere").get_json()["ephemeral_text"]
    assert text.startswith("Not allowed: this button acts only in the channel")
    assert jobs(redis) == []


def test_a_stale_click_is_explained(client: FlaskClient, redis: redis_lib.Redis) -> None:
    release = awaiting_release(redis)
    context = chatsign.sign(SECRET, app="myapp", action="rollback", release=release.id)
    text = press(client, context).get_json()["ephemeral_text"]
    assert text.startswith(f"Nothing changed: release {release.id} is awaiting_promotion")
    assert jobs(redis) == []


def test_a_body_that_is_not_json_is_a_400(client: FlaskClient) -> None:
    answer = client.post("/chatops/mattermost/actions", data=b"{nope",
                         content_type="application/json")
    assert answer.status_code == 400


def test_a_user_name_that_is_not_text_is_a_400_with_nothing_changed(
        client: FlaskClient, redis: redis_lib.Redis) -> None:
    """JSON can escape a lone surrogate, which no audit entry could hold."""
    release = awaiting_release(redis)
    before = ReleaseStore(redis).audit(release.id)
    context = chatsign.sign(SECRET, app="myapp", action="promote", release=release.id)
    body = json.dumps({"user_id": "mmuser1", "user_name": "car\udc80ol", "channel_id": "ch1",
                       "context": context})
    answer = client.post("/chatops/mattermost/actions", data=body.encode(),
                         content_type="application/json")
    assert (answer.status_code, answer.get_json()["code"]) == (400, "invalid_json")
    assert jobs(redis) == [] and ReleaseStore(redis).audit(release.id) == before
