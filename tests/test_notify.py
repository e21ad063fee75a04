"""The chat notifier (worker.notify) against a real Redis and the fake Slack Web API.

Covers: one message per release, posted when it is queued and updated in place as it
moves; buttons follow the state (Promote/Abort → Rollback/Decommission → none), and
the older release's message and the live one's buttons follow other releases' changes;
a message rewritten through a click's `response_url` is sent again when the web side
asks (never one the release does not have);
Slack failing (500) or rate-limiting (429 + Retry-After) never holds up a release's
records and the message catches up, with the trouble noted once in the audit trail;
a restart resumes from the stream (pending entries and scheduled retries survive);
two notifiers never both post; old history is not backfilled; a message deleted in
Slack is posted again; a post Slack made but answered too late, or answered with its
own trouble (a 5xx, `fatal_error`, `internal_error`, `service_unavailable`,
`request_timeout`), is found by its metadata and updated, not posted twice, and one it
did not make is posted once — in a channel given by name, too, before any post to it
was answered (its id from `conversations.list`, page by page, kept; a name the list
does not have is not looked up again for `UNLISTED_FOR`) — and when Slack cannot be
asked, it is posted again and the log says why; the bot token never reaches the log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis as redis_lib
from fakeslack import BOT_TOKEN, FakeSlack, button, button_texts, message_text
from slack_sdk import WebClient
from web import http

from worker import notify, sidecars, slackapi
from worker.api import Engine
from worker.colors import Color
from worker.config import Settings, parse_settings
from worker.releases import EVENTS_KEY, Release, ReleaseState, ReleaseStore, new_release_id

S = ReleaseState
PATH = [(S.CHECKING, "sanity_check"), (S.DEPLOYING, "deploy"), (S.TESTING, "smoke_test"),
        (S.AWAITING_PROMOTION, "smoke_test")]
PATIENCE, LATE = 1.0, 2.5  # how long the notifier waits for Slack's answer; how late it comes


def make_settings(slack: FakeSlack, redis_url: str, **env: str) -> Settings:
    return parse_settings({"apps": {"myapp": {}}}, {
        "REDIS_URL": redis_url, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_API_URL": slack.api_url,
        "SLACK_CHANNEL": "#deploys", **env})


@dataclass
class Notifiers:
    """Notifier threads started by a test; all stopped at the end."""

    settings: Settings
    redis: redis_lib.Redis
    running: list[tuple[threading.Event, threading.Thread]] = field(default_factory=list)

    def start(self, **kwargs: Any) -> tuple[threading.Event, threading.Thread]:
        stop = threading.Event()
        notifier = notify.Notifier(self.settings, self.redis, backoff=(0.2, 2.0), **kwargs)
        thread = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
        thread.start()
        self.running.append((stop, thread))
        return stop, thread

    def stop_all(self) -> None:
        for stop, thread in self.running:
            stop.set()
            thread.join(15)


@pytest.fixture
def notifiers(slack: FakeSlack, redis_url: str, redis: redis_lib.Redis) -> Iterator[Notifiers]:
    started = Notifiers(make_settings(slack, redis_url), redis)
    yield started
    started.stop_all()


def add(store: ReleaseStore, tag: str, *, at: float | None = None) -> Release:
    now = time.time() if at is None else at
    color = Color(tag.rsplit("-", 1)[1])
    release = Release(id=new_release_id("myapp", tag), app="myapp", color=color, tag=tag,
                      version=tag.rsplit("-", 1)[0], commit="c0ffee" * 6 + "abcd",
                      forge="github", delivery_id=f"d-{tag}", repository="acme/myapp",
                      state=S.QUEUED, created_at=now, updated_at=now, actor="github:dev")
    store.add(release, message=f"tag {tag} pushed")
    return release


def walk(store: ReleaseStore, release: Release, *moves: tuple[ReleaseState, str]) -> None:
    for state, step in moves:
        store.transition(release.id, state, actor="worker", step=step, message=f"{step}: {state}")


def promote(store: ReleaseStore, release: Release, previous: Release | None = None) -> None:
    if previous is not None:
        store.transition(previous.id, S.STANDBY, actor="slack:U1 (alice)", step="promote",
                         message="stays up, idle, as the rollback target")
    store.transition(release.id, S.LIVE, actor="slack:U1 (alice)", step="promote",
                     message=f"default traffic goes to {release.color}")


def released(store: ReleaseStore, tag: str, previous: Release | None = None) -> Release:
    """A release of `tag` through its steps and promoted (`previous` goes to standby)."""
    release = add(store, tag)
    walk(store, release, *PATH)
    promote(store, release, previous)
    return release


def shows(slack: FakeSlack, release: Release, *words: str,
          buttons: list[str] | None = None) -> Callable[[], bool]:
    def check() -> bool:
        message = slack.message_for(release.id)
        text = message_text(message)
        return message is not None and all(w in text for w in words) and (
            buttons is None or button_texts(message) == buttons)
    return check


def test_the_notifier_is_a_registered_sidecar() -> None:
    assert "worker.notify.start" in sidecars.SIDECARS


def test_one_message_per_release_updated_in_place(slack: FakeSlack, notifiers: Notifiers,
                                                  redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    notifiers.start()
    release = add(store, "v1.0-green")
    slack.wait_for(shows(slack, release, "Queued", buttons=["Abort"]), what="the queued message")
    walk(store, release, *PATH)
    slack.wait_for(shows(slack, release, "Awaiting promotion", "Cookie: test=true",
                         buttons=["Promote green", "Abort"]), what="awaiting promotion")
    (posted,) = slack.api_calls("chat.postMessage")
    assert posted.body["channel"] == "#deploys"
    message = slack.message_for(release.id)
    assert message is not None and message["channel"] == "CDEPLOYS" and message["edits"] >= 1
    assert all(c.body["ts"] == message["ts"] for c in slack.api_calls("chat.update"))
    value = json.loads(button(message, "Promote green")["value"])
    assert value == {"app": "myapp", "action": "promote", "release": release.id}
    assert "myapp v1.0-green → green: awaiting promotion" == message["text"]


def test_promotion_moves_the_buttons_and_updates_the_older_release(
        slack: FakeSlack, notifiers: Notifiers, redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    notifiers.start()
    first = released(store, "v1.0-blue")
    slack.wait_for(shows(slack, first, "Live", buttons=[]), what="the first release live")
    second = add(store, "v2.0-green")
    walk(store, second, *PATH)
    slack.wait_for(shows(slack, second, buttons=["Promote green", "Abort"]), what="awaiting")
    promote(store, second, previous=first)
    slack.wait_for(shows(slack, second, "Live", "Default traffic goes to green", "<@U1>",
                         buttons=["Rollback", "Decommission blue"]), what="second live")
    slack.wait_for(shows(slack, first, "Standby", buttons=[]), what="first standby")
    value = json.loads(button(slack.message_for(second.id), "Decommission blue")["value"])
    assert value == {"app": "myapp", "action": "decommission", "release": first.id,
                     "color": "blue"}
    store.transition(first.id, S.DECOMMISSIONED, actor="api:x", step="decommission",
                     message="Deployment default/myapp-blue deleted")
    slack.wait_for(shows(slack, second, "Live", buttons=[]), what="buttons gone after decommission")
    slack.wait_for(shows(slack, first, "Decommissioned", "myapp-blue deleted"), what="first gone")


def test_a_message_rewritten_through_its_response_url_is_sent_again_when_asked(
        slack: FakeSlack, notifiers: Notifiers, redis: redis_lib.Redis) -> None:
    """A click's reply can rewrite the message after the notifier's last update, which the
    notifier's digest does not know: asked (`Engine.resend_chat_message`, as the web side
    does once the reply is answered), it sends the message as the release is now."""
    store = ReleaseStore(redis)
    notifiers.start()
    release = add(store, "v1.0-green")
    slack.wait_for(shows(slack, release, "Queued"), what="the queued message")
    queued = json.loads(json.dumps(slack.message_for(release.id)))  # a copy, as it is now
    walk(store, release, *PATH)
    slack.wait_for(shows(slack, release, "Awaiting promotion",
                         buttons=["Promote green", "Abort"]), what="awaiting promotion")
    late = slack.response_url("r1", message=(queued["channel"], queued["ts"]))
    reply = {"replace_original": True, "text": queued["text"], "blocks": queued["blocks"]}
    assert http("POST", late, json.dumps(reply).encode(),
                {"Content-Type": "application/json"}).status == 200
    assert shows(slack, release, "Queued", buttons=["Abort"])()  # the late reply landed
    Engine(notifiers.settings, redis).resend_chat_message(release.id)
    slack.wait_for(shows(slack, release, "Awaiting promotion",
                         buttons=["Promote green", "Abort"]), what="the message sent again")
    assert len(slack.api_calls("chat.postMessage")) == 1


def test_a_rejected_tag_on_the_standby_colour_leaves_the_rollback_button(
        slack: FakeSlack, notifiers: Notifiers, redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    notifiers.start()
    first = released(store, "v1.0-blue")
    mistaken = add(store, "v1.1-blue")  # blue is live: the sanity check refuses it
    walk(store, mistaken, (S.CHECKING, "sanity_check"), (S.REJECTED, "sanity_check"))
    second = released(store, "v2.0-green", previous=first)
    slack.wait_for(shows(slack, second, "Live", buttons=["Rollback", "Decommission blue"]),
                   what="the live message offering to go back to blue's standby release")
    value = json.loads(button(slack.message_for(second.id), "Decommission blue")["value"])
    assert value["release"] == first.id


def test_failure_says_which_step_and_why(slack: FakeSlack, notifiers: Notifiers,
                                         redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    notifiers.start()
    release = add(store, "v1.0-green")
    walk(store, release, (S.CHECKING, "sanity_check"), (S.DEPLOYING, "deploy"))
    store.transition(release.id, S.FAILED, actor="worker", step="deploy",
                     message="deploy failed: rollout timed out after 20 s. Live traffic untouched",
                     error="deploy: rollout timed out after 20 s")
    slack.wait_for(shows(slack, release, "Failed", "*deploy* failed", "rollout timed out",
                         buttons=[]), what="the failure")


def test_a_pending_command_shows_and_hides_the_buttons(slack: FakeSlack, notifiers: Notifiers,
                                                       redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    notifiers.start()
    release = add(store, "v1.0-green")
    walk(store, release, *PATH)
    store.note(release.id, actor="slack:U1 (alice)", step="promote",
               message="promote requested by slack:U1 (alice)")
    slack.wait_for(shows(slack, release, "promoting…", buttons=[]), what="promoting…")
    promote(store, release)
    slack.wait_for(shows(slack, release, "Live", buttons=[]), what="live")
    assert "promoting…" not in message_text(slack.message_for(release.id))


def test_slack_down_never_holds_up_a_release_and_the_message_catches_up(
        slack: FakeSlack, notifiers: Notifiers, redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    slack.fail_next(3)
    notifiers.start()
    release = add(store, "v1.0-green")
    walk(store, release, *PATH)  # the records move on while Slack answers 500
    assert store.get(release.id).state is S.AWAITING_PROMOTION  # type: ignore[union-attr]
    slack.wait_for(shows(slack, release, "Awaiting promotion"), what="the message to catch up")
    assert [c.status for c in slack.api_calls()][:3] == [500, 500, 500]
    slack.wait_for(lambda: len([e for e in store.audit(release.id) if e.step == "chat"]) == 2)
    notes = [e.message for e in store.audit(release.id) if e.step == "chat"]
    assert notes[0].startswith("Slack message not updated: Slack answered HTTP 500")
    assert notes[1] == "Slack message caught up after 3 failed attempts"
    # A 500 may come after the message was posted: each retry looks for it first (in the
    # channel whose id Slack lists for #deploys, as no post to it was answered yet).
    assert [(c.method, c.status) for c in slack.api_calls()][:6] == [
        ("chat.postMessage", 500), ("conversations.list", 500), ("conversations.list", 500),
        ("conversations.list", 200), ("conversations.history", 200), ("chat.postMessage", 200)]


def test_rate_limiting_is_waited_out_as_slack_asks(slack: FakeSlack, notifiers: Notifiers,
                                                   redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    slack.rate_limit_next(1, retry_after=2)
    notifiers.start()
    release = add(store, "v1.0-green")
    slack.wait_for(shows(slack, release, "Queued"), what="the message after the 429")
    limited, posted = slack.api_calls()[:2]
    assert (limited.status, posted.status) == (429, 200)
    assert posted.at - limited.at >= 1.9
    note = next(e.message for e in store.audit(release.id) if e.step == "chat")
    assert "rate-limited us (retry after 2 s)" in note


def test_a_restart_loses_nothing(slack: FakeSlack, notifiers: Notifiers,
                                 redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    redis.xgroup_create(EVENTS_KEY, notify.GROUP, id="0", mkstream=True)
    release = add(store, "v1.0-green")
    walk(store, release, *PATH[:2])
    # a notifier read these events and died before acknowledging them
    read = redis.xreadgroup(notify.GROUP, notify.CONSUMER, {EVENTS_KEY: ">"})
    assert len(read[0][1]) == 3
    walk(store, release, *PATH[2:])
    notifiers.start()
    slack.wait_for(shows(slack, release, "Awaiting promotion"), what="the backlog")
    slack.wait_for(lambda: redis.xpending(EVENTS_KEY, notify.GROUP)["pending"] == 0,
                   what="every event acknowledged")
    assert len(slack.api_calls("chat.postMessage")) == 1


def test_a_retry_scheduled_before_a_restart_still_happens(
        slack: FakeSlack, notifiers: Notifiers, redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    slack.fail_next(1000)
    stop, thread = notifiers.start()
    release = add(store, "v1.0-green")
    slack.wait_for(lambda: slack.api_calls(), what="a first failed try")
    stop.set()
    thread.join(10)
    assert redis.zscore(notify.DIRTY_KEY, release.id) is not None
    slack.faults.clear()
    notifiers.start()
    slack.wait_for(shows(slack, release, "Queued"), what="the message after the restart")


def test_two_notifiers_post_each_message_once(slack: FakeSlack, notifiers: Notifiers,
                                              redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    notifiers.start()
    notifiers.start()
    releases = [add(store, f"v1.{i}-green") for i in range(3)]
    for release in releases:
        slack.wait_for(shows(slack, release, "Queued"), what=release.tag)
    time.sleep(1.0)
    assert len(slack.api_calls("chat.postMessage")) == 3


def test_old_history_is_not_backfilled(slack: FakeSlack, notifiers: Notifiers,
                                       redis: redis_lib.Redis) -> None:
    long_ago = time.time() - 2 * notify.BACKFILL_SECONDS
    old = add(ReleaseStore(redis, clock=lambda: long_ago), "v0.9-blue", at=long_ago)
    notifiers.start()
    Engine(notifiers.settings, redis).resend_chat_message(old.id)  # no message: none to resend
    fresh = add(ReleaseStore(redis), "v1.0-green")
    slack.wait_for(shows(slack, fresh, "Queued"), what="the fresh release")
    assert slack.message_for(old.id) is None


def test_a_message_deleted_in_slack_is_posted_again(slack: FakeSlack, notifiers: Notifiers,
                                                    redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    notifiers.start()
    release = add(store, "v1.0-green")
    slack.wait_for(shows(slack, release, "Queued"), what="the first message")
    slack.delete_all_messages()
    walk(store, release, PATH[0])
    slack.wait_for(shows(slack, release, "Sanity check"), what="a new message")
    assert len(slack.api_calls("chat.postMessage")) == 2


def test_a_deleted_message_whose_new_post_may_have_worked_is_posted_once(
        slack: FakeSlack, notifiers: Notifiers, redis: redis_lib.Redis) -> None:
    """The message was deleted; posting it anew met Slack's own trouble after the post was
    made: the retry looks for that post, rather than trying the deleted one again and
    posting a second time."""
    store = ReleaseStore(redis)
    notifiers.start()
    release = add(store, "v1.0-green")
    slack.wait_for(shows(slack, release, "Queued"), what="the first message")
    slack.delete_all_messages()
    slack.fail_next_call("chat.postMessage", 500, "fatal_error", done=True)
    walk(store, release, PATH[0])
    slack.wait_for(lambda: not redis.zscore(notify.DIRTY_KEY, release.id)
                   and redis.hget(notify.MESSAGE_KEY.format(release=release.id), "ts"),
                   what="settled")
    walk(store, release, PATH[1])
    slack.wait_for(shows(slack, release, "Deploying"), what="the update in place")
    assert len(slack.messages_for(release.id)) == 1
    assert [c.status for c in slack.api_calls("chat.postMessage")] == [200, 500]


def impatient(settings: Settings) -> WebClient:
    client = slackapi.slack_client(settings)
    client.timeout = PATIENCE  # type: ignore[assignment]  # slack_sdk types it as int
    return client


def test_a_post_answered_too_late_is_found_and_updated_not_posted_twice(
        slack: FakeSlack, notifiers: Notifiers, redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    notifiers.start(client=impatient(notifiers.settings))
    first = add(store, "v1.0-blue")  # Slack's answer names #deploys' channel id
    slack.wait_for(shows(slack, first, "Queued"), what="the first message")
    slack.answer_late_next("chat.postMessage", LATE)
    second = add(store, "v1.1-green")
    slack.wait_for(lambda: slack.messages_for(second.id), what="the post, not yet answered")
    slack.fail_next(1)  # the first look meets Slack's own trouble: look again, do not post
    key = notify.MESSAGE_KEY.format(release=second.id)
    slack.wait_for(lambda: redis.hget(key, "ts"), what="the late-answered message adopted")
    walk(store, second, PATH[0])
    slack.wait_for(shows(slack, second, "Sanity check"), what="the update in place")
    time.sleep(LATE)  # the late answer has come and gone
    (message,) = slack.messages_for(second.id)
    assert message["ts"] == redis.hget(key, "ts").decode()  # type: ignore[union-attr]
    assert message["metadata"] == {"event_type": "bluegreen_release",
                                   "event_payload": {"release": second.id, "app": "myapp"}}
    assert len(slack.api_calls("chat.postMessage")) == 2  # one per release
    looked = slack.api_calls("conversations.history")
    assert [c.status for c in looked] == [500, 200]
    assert (looked[1].body["channel"], looked[1].body["include_all_metadata"]) == ("CDEPLOYS", "1")
    notes = [e.message for e in store.audit(second.id) if e.step == "chat"]
    assert notes[-1] == "Slack message caught up after 2 failed attempts"
    assert not redis.hexists(key, "unsure")


@pytest.mark.parametrize("done", [True, False], ids=["posted", "not posted"])
@pytest.mark.parametrize(("status", "error"), [
    (500, "fatal_error"), (200, "internal_error"), (503, "service_unavailable"),
    (200, "request_timeout")])
def test_a_post_answered_with_slacks_own_trouble_is_looked_for_before_posting_again(
        slack: FakeSlack, notifiers: Notifiers, redis: redis_lib.Redis,
        status: int, error: str, done: bool) -> None:
    """Slack documents such answers as possibly coming after the work was done: whether
    or not the message landed, the channel ends up with exactly one message about it."""
    store = ReleaseStore(redis)
    notifiers.start()
    first = add(store, "v1.0-blue")  # Slack's answer names #deploys' channel id
    slack.wait_for(shows(slack, first, "Queued"), what="the first message")
    slack.fail_next_call("chat.postMessage", status, error, done=done)
    second = add(store, "v1.1-green")
    key = notify.MESSAGE_KEY.format(release=second.id)
    slack.wait_for(lambda: redis.hget(key, "ts"), what="the second release's message known")
    walk(store, second, PATH[0])
    slack.wait_for(shows(slack, second, "Sanity check"), what="the update in place")
    (message,) = slack.messages_for(second.id)
    assert message["ts"] == redis.hget(key, "ts").decode()  # type: ignore[union-attr]
    assert len(slack.messages) == 2  # one per release, nothing else
    posts = slack.api_calls("chat.postMessage")
    assert [c.status for c in posts] == [200, status] + ([] if done else [200])
    looked = slack.api_calls("conversations.history")
    assert [(c.status, c.body["channel"]) for c in looked] == [(200, "CDEPLOYS")]
    notes = [e.message for e in store.audit(second.id) if e.step == "chat"]
    assert notes[0].startswith(f"Slack message not updated: Slack answered HTTP {status}, "
                               f"{error}")
    assert not redis.hexists(key, "unsure")


def test_a_found_message_is_kept_even_when_bringing_it_up_to_date_fails(
        slack: FakeSlack, notifiers: Notifiers, redis: redis_lib.Redis) -> None:
    """Once found, a message whose post may have worked is the release's: a failed update
    of it is retried as an update, without looking for it in the channel again."""
    store = ReleaseStore(redis)
    notifiers.start()
    first = add(store, "v1.0-blue")
    slack.wait_for(shows(slack, first, "Queued"), what="the first message")
    slack.fail_next_call("chat.postMessage", 500, "fatal_error", done=True)
    slack.fail_next_call("chat.update", 500, "fatal_error")
    second = add(store, "v1.1-green")
    key = notify.MESSAGE_KEY.format(release=second.id)
    slack.wait_for(lambda: redis.hget(key, "digest"), what="the found message brought up to date")
    walk(store, second, PATH[0])
    slack.wait_for(shows(slack, second, "Sanity check"), what="the update in place")
    assert len(slack.messages_for(second.id)) == 1
    assert [c.status for c in slack.api_calls("chat.update")][:2] == [500, 200]
    assert len(slack.api_calls("conversations.history")) == 1  # found once, then kept


@pytest.mark.parametrize(("channel", "private", "lacking"), [
    ("#releases", False, ""), ("ops-releases", True, ""), ("#releases", False, "groups:read")],
    ids=["public, as #name", "private, as name", "public, without groups:read"])
def test_a_channel_given_by_name_is_looked_up_before_its_first_post_is_answered(
        slack: FakeSlack, redis_url: str, redis: redis_lib.Redis,
        caplog: pytest.LogCaptureFixture, channel: str, private: bool, lacking: str) -> None:
    """The very first post to the channel is answered too late, so no answer has named
    the channel's id: Slack's list of channels does (read page by page, in a workspace
    of thousands; the public ones alone when the token may not list private ones), the
    message is found there and updated, not posted twice, and the id is kept."""
    caplog.set_level(logging.INFO, logger="worker.notify")
    slack.scopes.discard(lacking)
    slack.add_channels(2500)
    channel_id = slack.add_channel(channel.removeprefix("#"), private=private)
    started = Notifiers(make_settings(slack, redis_url, SLACK_CHANNEL=channel), redis)
    try:
        store = ReleaseStore(redis)
        slack.answer_late_next("chat.postMessage", LATE)
        started.start(client=impatient(started.settings))
        release = add(store, "v1.0-green")
        key = notify.MESSAGE_KEY.format(release=release.id)
        slack.wait_for(lambda: redis.hget(key, "ts"), what="the late-answered message adopted")
        walk(store, release, PATH[0])
        slack.wait_for(shows(slack, release, "Sanity check"), what="the update in place")
        time.sleep(LATE)  # the late answer has come and gone
    finally:
        started.stop_all()
    (message,) = slack.messages_for(release.id)
    assert (message["channel"], message["ts"]) == (
        channel_id, redis.hget(key, "ts").decode())  # type: ignore[union-attr]
    assert len(slack.api_calls("chat.postMessage")) == 1
    listed = slack.api_calls("conversations.list")
    if lacking:  # refused for both kinds at once; then the public ones alone
        assert listed[0].body["types"] == "public_channel,private_channel"
        assert listed[0].error == "missing_scope"
        listed = listed[1:]
    assert {c.body["types"] for c in listed} == {
        "public_channel" if lacking else "public_channel,private_channel"}
    cursors = [c.body.get("cursor") for c in listed]
    assert len(cursors) > 1 and cursors[0] is None and all(cursors[1:])  # page by page
    assert [c.body["channel"] for c in slack.api_calls("conversations.history")] == [channel_id]
    assert redis.hget(slackapi.CHANNELS_KEY, channel) == channel_id.encode()
    assert "posting it again" not in caplog.text


def test_the_channel_list_is_read_past_pages_that_show_none(slack: FakeSlack) -> None:
    """Slack filters a page of conversations.list after taking it: a page of archived
    channels alone comes back empty, with a cursor, and the channel is on a later one."""
    for i in range(2000):  # pages of 999: #deploys and 998 of them; 999 of them; 3 and ours
        slack.add_channel(f"old-{i}", archived=True)
    wanted = slack.add_channel("releases")
    client = WebClient(token=BOT_TOKEN, base_url=slack.api_url)
    assert slackapi.lookup_channel(client, "#releases") == wanted
    assert len(slack.api_calls("conversations.list")) == 3
    assert slackapi.lookup_channel(client, "Releases") == wanted
    assert slackapi.lookup_channel(client, "#nowhere") is None
    first = slack.api_calls("conversations.list")[0]
    assert (first.status, first.error, first.body["exclude_archived"]) == (200, "", "1")
    slack.scopes -= {"channels:read", "groups:read"}
    with pytest.raises(slackapi.ChatFailure) as refused:
        slackapi.lookup_channel(client, "#releases")
    assert refused.value.permanent and not refused.value.may_have_worked
    assert refused.value.reason == ("Slack answered missing_scope: the bot token lacks "
                                    "channels:read and groups:read")


def test_a_channel_slack_does_not_list_is_not_looked_up_again_for_a_while(
        slack: FakeSlack, redis_url: str, redis: redis_lib.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    """Each post to #hidden fails with Slack's own trouble without landing, so each retry
    looks for it first, and Slack's list of channels (two pages here) has no #hidden:
    read once, it is not read again for the next release's unsure post until
    `UNLISTED_FOR` has passed; each read warns once."""
    caplog.set_level(logging.INFO, logger="worker.notify")
    slack.add_channels(1200)
    offset = [0.0]
    notifier = notify.Notifier(make_settings(slack, redis_url, SLACK_CHANNEL="#hidden"), redis,
                               clock=lambda: time.time() + offset[0], backoff=(0.2, 2.0))
    store = ReleaseStore(redis)

    def sync_failing(release: Release) -> int:
        """Sync `release`, its post failing unsure; how many conversations.list calls it made."""
        before = len(slack.api_calls("conversations.list"))
        slack.fail_next_call("chat.postMessage", 500, "fatal_error")
        notifier.sync(release.id)
        return len(slack.api_calls("conversations.list")) - before

    first, second = add(store, "v1.0-blue"), add(store, "v1.1-green")
    assert sync_failing(first) == 0   # the first post: nothing to look for yet
    assert sync_failing(first) == 2   # unsure: the whole list, page by page
    assert sync_failing(second) == 0
    offset[0] = slackapi.UNLISTED_FOR - 1
    assert sync_failing(second) == 0  # unsure, but #hidden was not listed a moment ago
    offset[0] = slackapi.UNLISTED_FOR + 1
    assert sync_failing(second) == 2  # read again once that has passed
    assert caplog.text.count("Slack lists no channel #hidden") == 2
    assert len(slack.api_calls("chat.postMessage")) == 5
    assert slack.messages == {}


@pytest.mark.parametrize("why", ["no history scope", "no channels:read scope"])
def test_when_slack_cannot_be_asked_a_late_answered_post_is_posted_again(
        slack: FakeSlack, notifiers: Notifiers, redis: redis_lib.Redis,
        caplog: pytest.LogCaptureFixture, why: str) -> None:
    """Degraded, as before: the message may show twice, and the log says why (without
    `channels:read`, the id of a channel given by name is known only once a post to it
    has been answered: here none has)."""
    caplog.set_level(logging.INFO, logger="worker.notify")
    store = ReleaseStore(redis)
    notifiers.start(client=impatient(notifiers.settings))
    if why == "no history scope":
        slack.scopes.discard("channels:history")
        first = add(store, "v1.0-blue")
        slack.wait_for(shows(slack, first, "Queued"), what="the first message")
    else:
        slack.scopes -= {"channels:read", "groups:read"}
    slack.answer_late_next("chat.postMessage", LATE)
    second = add(store, "v1.1-green")
    slack.wait_for(lambda: len(slack.messages_for(second.id)) == 2, what="a second post")
    slack.wait_for(lambda: not redis.zscore(notify.DIRTY_KEY, second.id), what="settled")
    assert "posting it again, which may show it twice" in caplog.text
    assert {"no history scope": "needs the channels:history scope",
            "no channels:read scope": "find the id of #deploys (Slack answered missing_scope: "
            "the bot token lacks channels:read and groups:read; add channels:read "
            "(groups:read for a private channel), or give the channel as an id)"}[why] \
        in caplog.text


def test_without_a_bot_token_nothing_is_posted(slack: FakeSlack, redis_url: str,
                                               redis: redis_lib.Redis) -> None:
    settings = make_settings(slack, redis_url, SLACK_BOT_TOKEN="")
    thread = notify.start(settings, redis, threading.Event())
    thread.join(5)
    assert not thread.is_alive()
    add(ReleaseStore(redis), "v1.0-green")
    assert slack.api_calls() == []


def test_the_bot_token_is_never_logged(slack: FakeSlack, notifiers: Notifiers,
                                       redis: redis_lib.Redis,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    slack.fail_next(2)
    slack.rate_limit_next(1)
    notifiers.start()
    release = add(ReleaseStore(redis), "v1.0-green")
    slack.wait_for(shows(slack, release, "Queued"), what="the message")
    assert "chat message of" in caplog.text
    assert BOT_TOKEN not in caplog.text
    assert all(c.authorization == f"Bearer {BOT_TOKEN}" for c in slack.api_calls())
