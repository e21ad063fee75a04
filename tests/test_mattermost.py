"""Mattermost release posts (worker.mattermost) against a real Redis and a fake Mattermost.

Covers: rendering — an awaiting release gets Promote/Abort actions whose contexts
verify with `chatsign.verify` (a tampered copy does not) and point at
`<BLUEGREEN_PUBLIC_URL>/chatops/mattermost/actions`; posting is off unless all five
settings are set; the notifier creates one post per release and updates it in place
(the live release shows Rollback/Decommission), changing its text and buttons only (a
pinned post stays pinned, its reactions still show, its `from_bot` mark stays); a
failing Mattermost is retried and noted once, and a failing Slack does not hold up the
Mattermost post; a create that may
have worked (answered too late, or still being saved when it is retried) leaves one
post, up to date — found again by its `bluegreen_release` prop, or given back by the
server for the same `pending_post_id` within its 30 s, as the fake models it; the bot token
goes only in the Authorization header, never to the log; text from forges and people
(tag, pusher, error, audit messages) shows literally in the post as Markdown renders
it: no link, image, mention, heading, quote, table or emphasis of its own, and a tag
cannot close its code span, while our bold, code spans, Slack users and dates stay;
and end to end, the posted Promote context, sent back as Mattermost would, queues
the promote.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from html import unescape
from typing import Any

import pytest
import redis as redis_lib
from fakemattermost import BOT_TOKEN, FakeMattermost, action, action_names, attachment
from fakeslack import BOT_TOKEN as SLACK_TOKEN
from fakeslack import FakeSlack
from markdown_it import MarkdownIt
from rq import Queue

from webhook import create_app
from worker import chatsign, mattermost, notify
from worker.colors import Color
from worker.config import Settings, parse_settings
from worker.releases import AuditEntry, Release, ReleaseState, ReleaseStore, new_release_id

S = ReleaseState
SECRET = "mm-button-secret-1"
CHANNEL = "mmchannel0000000000000001"
PUBLIC = "https://bluegreen.example.com"
TO = mattermost.Target(secret=SECRET, actions_url=PUBLIC + "/chatops/mattermost/actions",
                       channel=CHANNEL)
PATH = [(S.CHECKING, "sanity_check"), (S.DEPLOYING, "deploy"), (S.TESTING, "smoke_test"),
        (S.AWAITING_PROMOTION, "smoke_test")]
PATIENCE, LATE = 1.0, 2.5  # how long the notifier waits for an answer; how late it comes


def environment(mm: FakeMattermost) -> dict[str, str]:
    return {"MATTERMOST_URL": mm.url, "MATTERMOST_BOT_TOKEN": BOT_TOKEN,
            "MATTERMOST_CHANNEL": CHANNEL, "MATTERMOST_TOKEN": SECRET,
            "BLUEGREEN_PUBLIC_URL": PUBLIC + "/"}


def make_release(tag: str, state: ReleaseState = S.QUEUED) -> Release:
    now = time.time()
    return Release(id=new_release_id("myapp", tag), app="myapp",
                   color=Color(tag.rsplit("-", 1)[1]), tag=tag, version=tag.rsplit("-", 1)[0],
                   commit="c0ffee" * 6 + "abcd", forge="github", delivery_id=f"d-{tag}",
                   repository="acme/myapp", state=state, created_at=now, updated_at=now,
                   actor="github:dev")


# -- rendering -------------------------------------------------------------------------------------

def test_an_awaiting_release_gets_signed_promote_and_abort_actions() -> None:
    release = make_release("v2.0-green", S.AWAITING_PROMOTION)
    to = mattermost.Target(secret=SECRET, actions_url=PUBLIC + "/chatops/mattermost/actions",
                           channel=CHANNEL)
    post = mattermost.render(release, [], to, now=time.time())
    assert post.message == "**myapp** `v2.0-green` → **green**: awaiting promotion"
    assert post.props["attachments"][0]["fallback"] == "myapp v2.0-green → green: " \
                                                        "awaiting promotion"
    (card,) = post.props["attachments"]
    assert release.id in card["text"] and "Cookie: test=true" in card["text"]
    assert card["color"].startswith("#")
    assert [a["name"] for a in card["actions"]] == ["Promote green", "Abort"]
    for act in card["actions"]:
        assert act["id"].isalnum()
        assert act["integration"]["url"] == PUBLIC + "/chatops/mattermost/actions"
        context = act["integration"]["context"]
        assert context["release"] == release.id and context["channel"] == CHANNEL
        assert chatsign.verify(SECRET, context)
        assert not chatsign.verify(SECRET, {**context, "release": "myapp-v9-green-00000000"})
        assert not chatsign.verify(SECRET, {**context, "action": "rollback"})
    promote = card["actions"][0]["integration"]["context"]
    assert {k: promote[k] for k in ("app", "action")} == {"app": "myapp", "action": "promote"}


def test_bidirectional_controls_in_a_tag_show_as_marks() -> None:
    # Git allows U+202E in a tag: obeyed, "v1.0-\u202enimda-green" reads "v1.0-neerg-admin".
    release = make_release("v1.0-\u202enimda\u2066-green", S.AWAITING_PROMOTION)
    post = mattermost.render(release, [], TO, now=time.time())
    (card,) = post.props["attachments"]
    for shown in (post.message, card["fallback"], card["text"]):
        assert not any(ch in shown for ch in "\u202e\u2066"), shown
    assert "v1.0-<U+202E>nimda<U+2066>-green" in post.message
    assert card["fallback"].startswith("myapp v1.0-<U+202E>nimda<U+2066>-green → green")


def test_posting_is_off_unless_everything_is_set() -> None:
    full = {"MATTERMOST_URL": "https://chat.example.com", "MATTERMOST_BOT_TOKEN": BOT_TOKEN,
            "MATTERMOST_CHANNEL": CHANNEL, "MATTERMOST_TOKEN": SECRET,
            "BLUEGREEN_PUBLIC_URL": PUBLIC}
    settings = parse_settings({}, full)
    assert mattermost.target(settings) is not None
    assert BOT_TOKEN not in repr(settings) and SECRET not in repr(settings)
    for name in full:
        assert mattermost.target(parse_settings({}, {k: v for k, v in full.items()
                                                     if k != name})) is None


# -- the notifier ----------------------------------------------------------------------------------

class Running:
    """A notifier thread, stopped at the end of the test; `patience`: how long it waits
    for Mattermost's answer."""

    def __init__(self, settings: Settings, redis: redis_lib.Redis, *,
                 clock: Callable[[], float] = time.time, patience: float | None = None) -> None:
        self.stop = threading.Event()
        self.notifier = notify.Notifier(settings, redis, backoff=(0.2, 2.0), clock=clock)
        if patience is not None:
            assert self.notifier.mattermost is not None
            self.notifier.mattermost.client.timeout = patience
        self.thread = threading.Thread(target=self.notifier.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)


def mm_settings(mm: FakeMattermost, redis_url: str) -> Settings:
    return parse_settings({"apps": {"myapp": {}}}, {"REDIS_URL": redis_url, **environment(mm)})


@pytest.fixture
def running(mm: FakeMattermost, redis_url: str, redis: redis_lib.Redis) -> Iterator[Running]:
    notifier = Running(mm_settings(mm, redis_url), redis)
    yield notifier
    notifier.close()


@dataclass
class Clock:
    """Wall time, moved on by `offset` seconds (for the notifier and the fake alike)."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def impatient(mm: FakeMattermost, redis_url: str, redis: redis_lib.Redis
              ) -> Iterator[tuple[Running, Clock]]:
    """A notifier that waits PATIENCE for an answer, on a clock shared with the fake."""
    clock = Clock()
    mm.clock = clock
    notifier = Running(mm_settings(mm, redis_url), redis, clock=clock, patience=PATIENCE)
    yield notifier, clock
    notifier.close()


def add(store: ReleaseStore, tag: str) -> Release:
    release = make_release(tag)
    store.add(release, message=f"tag {tag} pushed")
    return release


def walk(store: ReleaseStore, release: Release) -> None:
    for state, step in PATH:
        store.transition(release.id, state, actor="worker", step=step, message=f"{step}: {state}")


def promote(store: ReleaseStore, release: Release, previous: Release | None = None) -> None:
    if previous is not None:
        store.transition(previous.id, S.STANDBY, actor="mattermost:u1 (carol)", step="promote",
                         message="stays up, idle, as the rollback target")
    store.transition(release.id, S.LIVE, actor="mattermost:u1 (carol)", step="promote",
                     message=f"default traffic goes to {release.color}")


def shows(mm: FakeMattermost, release: Release, word: str, actions: list[str]) -> Any:
    def check() -> bool:
        post = mm.post_for(release.id)
        return post is not None and word in attachment(post)["text"] + post["message"] and \
            action_names(post) == actions
    return check


def test_one_post_per_release_created_then_updated(mm: FakeMattermost, running: Running,
                                                   redis: redis_lib.Redis,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = ReleaseStore(redis)
    blue = add(store, "v1.0-blue")
    walk(store, blue)
    promote(store, blue)
    green = add(store, "v1.1-green")
    mm.wait_for(shows(mm, green, "queued", ["Abort"]), what="the queued post")
    walk(store, green)
    mm.wait_for(shows(mm, green, "awaiting promotion", ["Promote green", "Abort"]),
                what="awaiting promotion")
    promote(store, green, previous=blue)
    mm.wait_for(shows(mm, green, "live", ["Rollback", "Decommission blue"]), what="live")
    mm.wait_for(shows(mm, blue, "standby", []), what="the older release's post")

    creates = mm.calls("POST")
    assert sorted(c.body["message"].split("`")[1] for c in creates) == ["v1.0-blue",
                                                                         "v1.1-green"]
    assert all(c.body["channel_id"] == CHANNEL and c.status == 201 for c in creates)
    post = mm.post_for(green.id)
    assert post is not None and post["edits"] >= 2
    updates = [c for c in mm.calls("PUT") if post["id"] in c.path]
    assert updates and all(c.path == f"/api/v4/posts/{post['id']}/patch" for c in updates)
    assert all(c.authorization == f"Bearer {BOT_TOKEN}" for c in mm.requests)
    context = action(post, "Decommission blue")["integration"]["context"]
    assert chatsign.verify(SECRET, context)
    assert (context["release"], context["color"]) == (blue.id, "blue")
    record = redis.hgetall(mattermost.POST_KEY.format(release=green.id))
    assert record[b"post_id"].decode() == post["id"] and record[b"digest"]
    assert BOT_TOKEN not in caplog.text


def test_updating_the_post_keeps_its_pin_reactions_and_bot_mark(
        mm: FakeMattermost, running: Running, redis: redis_lib.Redis) -> None:
    """People pin a release's post and react to it; the notifier's updates change its
    text and buttons only: it stays pinned, its reactions still show, and it keeps the
    `from_bot` mark the server gave it (clients hide "Forward" for a bot's post, and
    other integrations skip bots' posts by it)."""
    store = ReleaseStore(redis)
    release = add(store, "v1.0-green")
    mm.wait_for(shows(mm, release, "queued", ["Abort"]), what="the queued post")
    post = mm.post_for(release.id)
    assert post is not None and post["props"]["from_bot"] == "true"
    mm.pin(post["id"])
    mm.react(post["id"], "user00000000000000000000001", "eyes")
    walk(store, release)
    mm.wait_for(shows(mm, release, "awaiting promotion", ["Promote green", "Abort"]),
                what="the post updated")
    seen = mm.served(post["id"])
    assert seen["is_pinned"] is True
    assert [r["emoji_name"] for r in seen["metadata"]["reactions"]] == ["eyes"]
    assert seen["props"]["from_bot"] == "true"
    assert seen["edit_at"] > 0 and "awaiting promotion" in seen["message"]
    assert {c.path for c in mm.calls("PUT")} == {f"/api/v4/posts/{post['id']}/patch"}


def test_a_post_deleted_by_a_person_is_posted_again_at_the_next_change(
        mm: FakeMattermost, running: Running, redis: redis_lib.Redis) -> None:
    """The server answers an update of a deleted post 403 (as for a post the bot may not
    edit); the notifier reads the post, finds it gone (404) and posts the release again."""
    store = ReleaseStore(redis)
    release = add(store, "v1.0-green")
    mm.wait_for(shows(mm, release, "queued", ["Abort"]), what="the queued post")
    first = mm.post_for(release.id)
    assert first is not None
    mm.delete(first["id"])
    walk(store, release)
    mm.wait_for(shows(mm, release, "awaiting promotion", ["Promote green", "Abort"]),
                what="the release posted again")
    (post,) = mm.posts_for(release.id)
    assert post["id"] != first["id"]
    assert [(c.method, c.status) for c in mm.requests if first["id"] in c.path] == [
        ("PUT", 403), ("GET", 404)]
    record = redis.hgetall(mattermost.POST_KEY.format(release=release.id))
    assert record[b"post_id"].decode() == post["id"]
    assert not [e for e in store.audit(release.id) if e.step == "chat"]  # nothing failed


def test_a_failing_mattermost_is_retried_and_noted_once(mm: FakeMattermost, running: Running,
                                                        redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    mm.fail_next(3)
    release = add(store, "v1.0-green")
    mm.wait_for(shows(mm, release, "queued", ["Abort"]), what="the post after retries")

    def notes_so_far() -> list[str]:
        return [e.message for e in store.audit(release.id) if e.step == "chat"]

    # The caught-up note is written after the post is made.
    mm.wait_for(lambda: len(notes_so_far()) == 2, what="the failure and caught-up notes")
    notes = notes_so_far()
    assert len(notes) == 2, notes
    assert notes[0].startswith("Mattermost post not updated: Mattermost answered HTTP 500")
    assert notes[1] == "Mattermost post caught up after 3 failed attempts"
    # A 500 may come after the post was made (a proxy's, say): each retry looks first.
    assert [(c.method, c.status) for c in mm.requests] == [
        ("POST", 500), ("GET", 500), ("GET", 500), ("GET", 200), ("POST", 201), ("PUT", 200)]
    assert len(mm.posts) == 1


def test_a_failing_slack_does_not_hold_up_mattermost(mm: FakeMattermost, redis_url: str,
                                                     redis: redis_lib.Redis) -> None:
    slack = FakeSlack().start()
    try:
        slack.fail_next(1000)
        settings = parse_settings({"apps": {"myapp": {}}}, {
            "REDIS_URL": redis_url, "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "SLACK_API_URL": slack.api_url, "SLACK_CHANNEL": "#deploys", **environment(mm)})
        notifier = Running(settings, redis)
        try:
            store = ReleaseStore(redis)
            release = add(store, "v1.0-green")
            walk(store, release)
            mm.wait_for(shows(mm, release, "awaiting promotion", ["Promote green", "Abort"]),
                        what="the Mattermost post while Slack fails")
            assert len(mm.calls("POST")) == 1 and slack.message_for(release.id) is None
            tried = slack.api_calls("chat.postMessage")
            assert tried and {c.status for c in tried} == {500}  # Slack was tried, and failed
        finally:
            notifier.close()
    finally:
        slack.stop()


@pytest.mark.parametrize("later", [0.0, 31.0], ids=["within 30 s", "after 30 s"])
def test_a_create_answered_too_late_leaves_one_post_up_to_date(
        mm: FakeMattermost, impatient: tuple[Running, Clock], redis: redis_lib.Redis,
        later: float) -> None:
    """The answer is lost, the post was made: the retry finds it by its prop (after 30 s
    the server no longer knows the pending_post_id), and updates it in place."""
    _, clock = impatient
    store = ReleaseStore(redis)
    mm.answer_late_next(LATE)
    release = add(store, "v1.0-green")
    mm.wait_for(lambda: mm.post_for(release.id), what="the create, not answered yet")
    clock.offset += later  # when the retry comes, after the timeout
    walk(store, release)  # the release moves on meanwhile
    mm.wait_for(shows(mm, release, "awaiting promotion", ["Promote green", "Abort"]),
                what="the post brought up to date")
    time.sleep(LATE)  # the late answer has come and gone
    (post,) = mm.posts_for(release.id)
    assert post["props"]["bluegreen_release"] == release.id
    assert post["props"]["from_bot"] == "true"  # the found post's own, kept by the update
    assert len(mm.posts) == 1
    creates = mm.calls("POST")
    assert len({c.body["pending_post_id"] for c in creates}) == 1
    assert creates[0].body["pending_post_id"].startswith(f"{release.id}:")
    looked = mm.calls("GET")
    assert looked and all(c.path.startswith(f"/api/v4/channels/{CHANNEL}/posts?since=")
                          for c in looked)
    record = redis.hgetall(mattermost.POST_KEY.format(release=release.id))
    assert record[b"post_id"].decode() == post["id"]
    assert b"unsure" not in record and b"pending" not in record


def test_a_create_still_being_saved_when_retried_leaves_one_post(
        mm: FakeMattermost, impatient: tuple[Running, Clock], redis: redis_lib.Redis) -> None:
    """The server is slow: the retry finds no post yet, and creates again with the same
    pending_post_id, which the server answers "still pending" instead of a second post."""
    store = ReleaseStore(redis)
    mm.save_slowly_next(LATE)
    release = add(store, "v1.0-green")
    mm.wait_for(lambda: len(mm.calls("POST")) >= 2, what="a create repeated meanwhile")
    walk(store, release)
    mm.wait_for(shows(mm, release, "awaiting promotion", ["Promote green", "Abort"]),
                what="the post brought up to date")
    mm.wait_for(lambda: mm.saving == 0, what="the first create saved")
    assert len(mm.posts_for(release.id)) == 1 and len(mm.posts) == 1
    first, *repeats = mm.calls("POST")
    assert first.status == 201 and repeats[0].status == 500  # "pending": the first in flight
    assert {c.body["pending_post_id"] for c in repeats} == {first.body["pending_post_id"]}


def test_when_the_post_cannot_be_looked_for_a_retry_within_30_s_still_leaves_one(
        mm: FakeMattermost, impatient: tuple[Running, Clock], redis: redis_lib.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    """A bot that may not read the channel: the server's memory of the pending_post_id
    is all there is, and the log says so."""
    caplog.set_level(logging.INFO, logger="worker.mattermost")
    mm.refuse_reads = True
    store = ReleaseStore(redis)
    mm.answer_late_next(LATE)
    release = add(store, "v1.0-green")
    mm.wait_for(lambda: mm.post_for(release.id), what="the create, not answered yet")
    walk(store, release)
    mm.wait_for(shows(mm, release, "awaiting promotion", ["Promote green", "Abort"]),
                what="the post brought up to date")
    assert len(mm.posts_for(release.id)) == 1
    assert [c.status for c in mm.calls("POST")] == [201, 201]  # the second: the first post
    assert "cannot look for the Mattermost post" in caplog.text
    assert "HTTP 403" in caplog.text


# -- end to end: the posted button, clicked ------------------------------------------------

def test_the_posted_promote_button_queues_the_promote(mm: FakeMattermost, running: Running,
                                                      redis_url: str,
                                                      redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    release = add(store, "v2.0-green")
    walk(store, release)
    mm.wait_for(shows(mm, release, "awaiting promotion", ["Promote green", "Abort"]),
                what="awaiting promotion")
    integration = action(mm.post_for(release.id), "Promote green")["integration"]
    assert integration["url"] == PUBLIC + "/chatops/mattermost/actions"

    settings = parse_settings({"apps": {"myapp": {}}},
                              {"REDIS_URL": redis_url, **environment(mm)})
    client = create_app(settings, redis).test_client()
    answer = client.post("/chatops/mattermost/actions", json={
        "user_id": "mmuser1", "user_name": "carol", "channel_id": CHANNEL,
        "team_id": "team1", "post_id": "post1", "type": "",
        "context": integration["context"]})
    assert answer.status_code == 200
    assert "promote of v2.0-green" in answer.get_json()["ephemeral_text"]
    (job,) = [dict(j.meta) for j in Queue("deploy", connection=redis).get_jobs()]
    assert (job["action"], job["release"], job["actor"]) == (
        "promote", release.id, "mattermost:mmuser1 (carol)")
    mm.wait_for(shows(mm, release, "promoting", []), what="the pending promote in the post")


# -- text from outside, as Mattermost shows it ----------------------------------------------

HOSTILE = ("[x](https://evil.example) @channel @here **bold** `tick` <b>&amp;</b> a|b "
           "![i](u) _em_\n# heading\n> quote\n|-|-|")
FLAT = " ".join(HOSTILE.splitlines())   # a value is shown on one line
ZWJ = "\u200d"                           # after each `@` a value brings: no mention
COMMONMARK = MarkdownIt("commonmark", {"breaks": True}).enable(["table", "strikethrough"])


def rendered(markdown: str) -> str:
    """The HTML Mattermost's Markdown makes of `markdown` (CommonMark, tables, breaks)."""
    return COMMONMARK.render(markdown)


def elements(html: str) -> set[str]:
    return set(re.findall(r"<(\w+)", html))


def inside(element: str, html: str) -> list[str]:
    """What a person reads in each `element` (the zero-width joiners are invisible)."""
    return [unescape(found).replace(ZWJ, "")
            for found in re.findall(rf"<{element}>(.*?)</{element}>", html, re.S)]


def readable(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", html)).replace(ZWJ, "")


def cannot_notify_or_autolink(markdown: str) -> bool:
    """No `@name` for Mattermost to mention; no URL outside a code span to link."""
    outside_code = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", markdown)
    return re.search(f"@(?!{ZWJ})", markdown) is None and "://" not in outside_code


def test_text_from_forges_and_people_shows_literally(mm: FakeMattermost, running: Running,
                                                     redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    release = replace(make_release(f"v1{HOSTILE}-green"), actor="github:" + HOSTILE)
    store.add(release, message=f"tag pushed: {HOSTILE}")
    store.note(release.id, actor="slack:U0ADMIN (eve)", step="deploy", message=HOSTILE)
    store.transition(release.id, S.CHECKING, actor="worker", step="sanity_check",
                     message="checking")
    store.transition(release.id, S.FAILED, actor=HOSTILE, step="sanity_check",
                     message=HOSTILE, error=HOSTILE)
    mm.wait_for(shows(mm, release, "failed", []), what="the failed post")
    post = mm.post_for(release.id)
    card = attachment(post)
    assert post is not None

    message = rendered(post["message"])
    assert elements(message) == {"p", "strong", "code"}
    assert inside("strong", message) == ["myapp", "green"]
    assert inside("code", message) == [f"v1{FLAT}-green"]
    assert readable(message) == f"myapp v1{FLAT}-green → green: failed\n"

    text = rendered(card["text"])
    assert elements(text) == {"p", "strong", "code", "br"}
    assert inside("strong", text) == ["Failed", "sanity_check"]
    assert inside("code", text) == [release.id, release.commit[:12], FLAT,
                                    "github:" + FLAT, "slack:U0ADMIN", "worker", FLAT]
    lines = readable(text).splitlines()
    assert lines[1].startswith(f"sanity_check failed: {FLAT} — {FLAT} 20")
    assert lines[2].endswith(f" github:{FLAT}: tag pushed: {FLAT}")
    assert lines[3].endswith(f" slack:U0ADMIN: {FLAT}")
    assert lines[5].endswith(f" {FLAT}: {FLAT}")

    for markdown in (post["message"], card["text"]):
        assert cannot_notify_or_autolink(markdown), markdown
    assert card["fallback"] == f"myapp v1{FLAT}-green → green: failed: {FLAT}".replace(
        "@", "@" + ZWJ)


@pytest.mark.parametrize("tag", ["v1``x`-green", "`v1`-green", "v1 ` -green", "``-green"])
def test_a_tag_cannot_close_its_code_span(tag: str) -> None:
    post = mattermost.render(make_release(tag, S.AWAITING_PROMOTION), [], TO)
    message = rendered(post.message)
    assert inside("code", message) == [tag]
    assert inside("strong", message) == ["myapp", "green"]


def test_slack_users_and_dates_read_as_text() -> None:
    release = make_release("v2.0-green", S.AWAITING_PROMOTION)
    asked = AuditEntry(at=1_700_000_000.0, actor="slack:U0ADMIN (eve)", step="promote",
                       state_from=None, state_to=None, route_before=None, route_after=None,
                       message="promote requested by eve")
    (card,) = mattermost.render(release, [asked], TO).props["attachments"]
    text = rendered(card["text"])
    assert "slack:U0ADMIN" in inside("code", text)
    assert ["Awaiting promotion", "promoting…"] == inside("strong", text)
    assert "2023-11-14 22:13:20 UTC slack:U0ADMIN: promote requested by eve" in readable(text)
