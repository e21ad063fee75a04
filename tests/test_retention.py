"""Forgetting old releases (worker.retention, `bluegreen prune`), on a real Redis.

Covers: releases that ended before the cut-off go with their audit trail, index
entries and chat records, and nothing else does (live, standby, rolled back, waiting,
recent); the release that holds a colour and the newest of each colour stay, so the
engine's answers about the colours are the same after a prune; `--app` limits it;
`--dry-run` lists and changes nothing in Redis; a release that changed since it was
read is left; a note racing the prune of its release (between the note's read of the
record and its write) leaves no audit trail or event behind, and one racing another
write still lands once; a chat message (Slack or Mattermost, failing or catching up)
sent while its release is pruned writes nothing back for it (no chat record, audit
entry or event) and the notifier lets the release go; bad durations exit 2, an
unreachable Redis exits 1.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_lib
from click.testing import CliRunner, Result
from conftest import redis_contents
from fakemattermost import BOT_TOKEN as MM_TOKEN
from fakemattermost import FakeMattermost
from fakeslack import BOT_TOKEN as SLACK_TOKEN
from fakeslack import FakeSlack
from proctools import free_port

from worker import notify, retention, sidecars
from worker.cli import main
from worker.colors import Color
from worker.config import ConfigError, Settings, parse_settings
from worker.machine import ReleaseState as S
from worker.mattermost import POST_KEY
from worker.notify import MESSAGE_KEY
from worker.releases import (
    AUDIT_KEY,
    EVENTS_KEY,
    PREFIX,
    RELEASE_KEY,
    TAKES_COLOUR_STEP,
    Release,
    ReleaseNotFound,
    ReleaseStore,
    new_release_id,
)

DAY = 86400.0
NOW = 1_800_000_000.0
BLUE, GREEN = Color.BLUE, Color.GREEN
PATHS = {
    S.LIVE: [S.CHECKING, S.DEPLOYING, S.TESTING, S.AWAITING_PROMOTION, S.LIVE],
    S.AWAITING_PROMOTION: [S.CHECKING, S.DEPLOYING, S.TESTING, S.AWAITING_PROMOTION],
    S.SUPERSEDED: [S.SUPERSEDED], S.ABORTED: [S.ABORTED],
    S.REJECTED: [S.CHECKING, S.REJECTED],
    S.FAILED: [S.CHECKING, S.DEPLOYING, S.FAILED],  # failed mid-rollout: it took its colour
}


class History:
    """Releases of two apps recorded `age` days before `now`, walked to their states."""

    def __init__(self, redis: redis_lib.Redis, now: float = NOW) -> None:
        self.redis, self.base = redis, now
        self.now = now
        self.store = ReleaseStore(redis, clock=lambda: self.now)

    def release(self, tag: str, color: Color, state: S, *, age: float, app: str = "myapp",
                via: list[S] | None = None) -> str:
        self.now = self.base - age * DAY
        release = Release(id=new_release_id(app, tag), app=app, color=color, tag=tag,
                          version=tag.rsplit("-", 1)[0], commit="c" * 40, forge="github",
                          delivery_id=f"d-{tag}", repository=f"acme/{app}",
                          state=S.QUEUED, created_at=self.now, updated_at=self.now)
        self.store.add(release, message="recorded")
        for step in via if via is not None else PATHS[state]:
            if step is S.TESTING or (step is S.FAILED and S.DEPLOYING in (via or PATHS[state])):
                self.store.note(release.id, actor="worker", step=TAKES_COLOUR_STEP,
                                message="applying Deployment")
            self.store.transition(release.id, step, actor="worker", step="test",
                                  message=f"to {step}")
        self.redis.hset(MESSAGE_KEY.format(release=release.id), "ts", "1.0")
        self.redis.hset(POST_KEY.format(release=release.id), "post_id", "p")
        self.now = self.base
        return release.id

    def colours(self, app: str = "myapp") -> dict[str, Any]:
        """What the engine reads about each colour."""
        return {str(c): (getattr(self.store.occupant_for(app, c), "id", None),
                         getattr(self.store.latest_for(app, c), "id", None)) for c in Color}

    def gone(self, release_id: str) -> bool:
        keys = [RELEASE_KEY.format(id=release_id), AUDIT_KEY.format(id=release_id),
                MESSAGE_KEY.format(release=release_id), POST_KEY.format(release=release_id)]
        listed = any(self.redis.zscore(index, release_id) is not None
                     for index in self.redis.keys(f"{PREFIX}releases*")
                     if self.redis.type(index) == b"zset")
        return not any(self.redis.exists(k) for k in keys) and not listed


@pytest.fixture
def history(redis: redis_lib.Redis) -> History:
    return History(redis)


def test_old_ended_releases_go_and_what_the_engine_reads_stays(history: History) -> None:
    h = history
    first_live = h.release("v1-blue", BLUE, S.LIVE, age=400)
    h.now = NOW - 350 * DAY
    h.store.transition(first_live, S.STANDBY, actor="worker", step="promote", message="idle")
    h.store.transition(first_live, S.DECOMMISSIONED, actor="worker", step="x", message="gone")
    h.now = NOW
    old = {
        "superseded": h.release("v2-green", GREEN, S.SUPERSEDED, age=300),
        "rejected": h.release("v3-green", GREEN, S.REJECTED, age=299),
        "aborted": h.release("v4-green", GREEN, S.ABORTED, age=298),
    }
    holds_green = h.release("v5-green", GREEN, S.FAILED, age=200)  # its pods may still run
    newest_green = h.release("v6-green", GREEN, S.SUPERSEDED, age=150)
    live = h.release("v7-blue", BLUE, S.LIVE, age=120)
    old["decommissioned"] = first_live  # blue's occupant is now v7, which is live
    recent = h.release("v8-blue", BLUE, S.FAILED, age=10, via=[S.CHECKING, S.FAILED])
    waiting = h.release("v9-blue", BLUE, S.QUEUED, age=100, via=[])
    other = h.release("v1-green", GREEN, S.ABORTED, age=300, app="docs")  # docs' newest green
    before = h.colours()

    outcome = retention.prune(h.store, before=NOW - 90 * DAY)

    assert sorted(r.id for r in outcome.removed) == sorted(old.values())
    for release_id in old.values():
        assert h.gone(release_id), release_id
        assert h.store.get(release_id) is None and h.store.audit(release_id) == []
    kept = {why: [r.id for r in rs] for why, rs in outcome.kept.items()}
    assert kept == {"holds its colour": [holds_green],
                    "newest of its colour": [other, newest_green]}
    for release_id in (holds_green, newest_green, live, recent, waiting, other):
        assert h.store.get(release_id) is not None and h.store.audit(release_id)
        assert h.redis.exists(MESSAGE_KEY.format(release=release_id))
    assert h.colours() == before and h.colours("docs") == {"blue": (None, None),
                                                          "green": (None, other)}
    assert [r.id for r in h.store.recent(app="myapp")] == [
        recent, waiting, live, newest_green, holds_green]
    assert retention.prune(h.store, before=NOW - 90 * DAY).removed == []  # nothing left to do


def test_only_the_apps_named_and_a_dry_run_changes_nothing(history: History,
                                                           redis: redis_lib.Redis) -> None:
    mine = history.release("v1-green", GREEN, S.ABORTED, age=300)
    history.release("v2-green", GREEN, S.ABORTED, age=200)  # the newest green: kept
    docs = history.release("v1-green", GREEN, S.ABORTED, age=300, app="docs")
    history.release("v2-green", GREEN, S.ABORTED, age=200, app="docs")
    contents = redis_contents(redis)
    dry = retention.prune(history.store, before=NOW - 90 * DAY, dry_run=True)
    assert sorted(r.id for r in dry.removed) == sorted([mine, docs])
    assert redis_contents(redis) == contents
    done = retention.prune(history.store, before=NOW - 90 * DAY, apps={"docs"})
    assert [r.id for r in done.removed] == [docs]
    assert history.gone(docs) and history.store.get(mine) is not None


def test_a_release_changed_since_it_was_read_is_left(history: History) -> None:
    old = history.release("v1-green", GREEN, S.ABORTED, age=300)
    history.release("v2-green", GREEN, S.ABORTED, age=200)
    read = history.store.get(old)
    assert read is not None
    history.store.set_step(old, "noted later")  # a write between the read and the delete
    assert history.store.forget(read) is False
    assert history.store.get(old) is not None and history.store.audit(old)
    with pytest.raises(ValueError, match="only an ended release"):
        history.store.forget(Release(**{**read.to_json(), "color": GREEN,
                                        "state": S.AWAITING_PROMOTION}))


def racing(then: Callable[[], object]) -> Callable[[], float]:
    """A clock that runs `then` the first time it is read: a note reads it after its read of
    the record and before its write, so `then` lands between the two."""
    ran: list[object] = []

    def clock() -> float:
        if not ran:
            ran.append(then())
        return NOW
    return clock


def test_a_note_racing_the_prune_of_its_release_leaves_nothing(history: History,
                                                               redis: redis_lib.Redis) -> None:
    old = history.release("v1-green", GREEN, S.ABORTED, age=300)
    history.release("v2-green", GREEN, S.ABORTED, age=200)  # the newest green: kept
    events = redis.xlen(EVENTS_KEY)
    pruned: list[retention.Outcome] = []
    late = ReleaseStore(redis, clock=racing(lambda: pruned.append(
        retention.prune(history.store, before=NOW - 90 * DAY))))
    with pytest.raises(ReleaseNotFound):
        late.note(old, actor="api:x", step="promote", message="promote requested by x")
    assert [r.id for r in pruned[0].removed] == [old]
    assert not redis.exists(AUDIT_KEY.format(id=old))
    assert history.gone(old) and redis.xlen(EVENTS_KEY) == events


def test_a_note_racing_another_write_lands_once(history: History) -> None:
    release_id = history.release("v1-green", GREEN, S.ABORTED, age=300)
    late = ReleaseStore(history.redis, clock=racing(
        lambda: history.store.set_step(release_id, "elsewhere")))
    late.note(release_id, actor="api:x", step="note", message="noted")
    assert [e.message for e in history.store.audit(release_id)][-2:] == ["to aborted", "noted"]
    now = history.store.get(release_id)
    assert now is not None and now.step == "elsewhere"


@pytest.mark.parametrize("chat", ["slack", "mattermost"])
@pytest.mark.parametrize("attempts", [0, 2], ids=["failing", "catching_up"])
def test_a_chat_message_racing_the_prune_of_its_release_writes_nothing_back(
        chat: str, attempts: int, history: History, redis: redis_lib.Redis, redis_url: str,
        slack: FakeSlack, mm: FakeMattermost) -> None:
    old = history.release("v1-green", GREEN, S.ABORTED, age=300)
    history.release("v2-green", GREEN, S.ABORTED, age=200)  # the newest green: kept
    if chat == "slack":
        key, env = MESSAGE_KEY.format(release=old), {
            "SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_API_URL": slack.api_url,
            "SLACK_CHANNEL": "#deploys"}
    else:
        key, env = POST_KEY.format(release=old), {
            "MATTERMOST_URL": mm.url, "MATTERMOST_BOT_TOKEN": MM_TOKEN,
            "MATTERMOST_CHANNEL": "mmchannel0000000000000001",
            "MATTERMOST_TOKEN": "mm-secret", "BLUEGREEN_PUBLIC_URL": "https://bg.example.com"}
    redis.delete(key)
    redis.hset(key, "attempts", attempts)  # 0: this try fails (noted); 2: it catches up (noted)
    if not attempts:
        (slack if chat == "slack" else mm).fail_next(1)
    redis.zadd(notify.DIRTY_KEY, {old: NOW})
    events = redis.xlen(EVENTS_KEY)
    pruned: list[retention.Outcome] = []
    settings = parse_settings({"apps": {"myapp": {}}}, {"REDIS_URL": redis_url, **env})
    # The notifier reads its clock after reading the release, before sending and writing.
    notifier = notify.Notifier(settings, redis, backoff=(0.2, 2.0), clock=racing(
        lambda: pruned.append(retention.prune(history.store, before=NOW - 90 * DAY))))
    notifier.sync(old)
    assert [r.id for r in pruned[0].removed] == [old]
    sent = ([c.method for c in slack.calls] if chat == "slack"
            else [c.method for c in mm.requests])
    assert sent[:1] == (["chat.postMessage"] if chat == "slack" else ["POST"])
    assert not redis.exists(key, AUDIT_KEY.format(id=old))
    assert history.gone(old) and redis.xlen(EVENTS_KEY) == events
    assert redis.zscore(notify.DIRTY_KEY, old) is None  # let go: nothing left to notify


@pytest.fixture
def prune(redis_url: str) -> Iterator[Callable[..., Result]]:
    def run(*args: str, url: str = redis_url) -> Result:
        return CliRunner().invoke(main, ["prune", *args], env={"REDIS_URL": url,
                                                               "BLUEGREEN_CONFIG": ""},
                                  catch_exceptions=False)
    yield run


def test_the_command_says_what_it_removed_and_kept(redis: redis_lib.Redis,
                                                   prune: Callable[..., Result]) -> None:
    history = History(redis, now=time.time())  # the command reads the real clock
    old = history.release("v1-green", GREEN, S.ABORTED, age=100)
    newest = history.release("v2-green", GREEN, S.ABORTED, age=95)
    dry = prune("--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("would remove 1 release that ended before ")
    assert "(90d ago): 1 aborted\n" in dry.output
    assert f"\n  {old}  v1-green  aborted  ended " in dry.output
    assert "kept 1 as old that the engine still reads (newest of its colour):\n" \
           f"  {newest}  v2-green  aborted  ended " in dry.output
    assert history.store.get(old) is not None
    done = prune("--older-than", "30d")
    assert done.exit_code == 0 and done.output.startswith("removed 1 release"), done.output
    assert f"  {old}" not in done.output and history.gone(old)
    assert prune("--older-than", "30d").output.startswith("removed 0 releases")


@pytest.mark.parametrize("age", ["90", "0d", "-3d", "1w", "3 days"])
def test_a_bad_duration_exits_2(age: str, prune: Callable[..., Result]) -> None:
    result = prune("--older-than", age)
    assert result.exit_code == 2
    assert f"--older-than: {age!r} is not a duration such as 90d, 36h or 45m" in result.output


def test_an_unreachable_redis_exits_1(prune: Callable[..., Result]) -> None:
    result = prune(url=f"redis://127.0.0.1:{free_port()}/0")
    assert result.exit_code == 1
    assert "Redis is unavailable, nothing more was removed" in result.output


class Once(threading.Event):
    """A stop event for one pass of `keep_pruning`, run in the test's own thread."""

    def wait(self, timeout: float | None = None) -> bool:
        self.set()
        return True


def automatic(redis_url: str, retention_age: str | None = "30d") -> Settings:
    environ = {"REDIS_URL": redis_url}
    if retention_age is not None:
        environ["BLUEGREEN_RETENTION"] = retention_age
    return parse_settings({}, environ)


def test_the_worker_prunes_on_its_own_when_a_retention_is_set(
        redis: redis_lib.Redis, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    assert "worker.retention.start" in sidecars.SIDECARS  # every worker runs it
    caplog.set_level(logging.INFO, logger="worker.retention")
    history = History(redis, now=time.time())  # the sidecar reads the real clock
    old = history.release("v1-green", GREEN, S.ABORTED, age=100)
    newest = history.release("v2-green", GREEN, S.ABORTED, age=95)
    recent = history.release("v3-blue", BLUE, S.ABORTED, age=10)
    stop = threading.Event()
    thread = retention.start(automatic(redis_url), redis, stop)
    deadline = time.monotonic() + 10
    while not history.gone(old) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()  # it stops when asked, not after its hour's wait
    assert history.gone(old)
    assert history.store.get(newest) is not None and history.store.get(recent) is not None
    assert "retention: removed 1 release(s) that ended before " in caplog.text
    assert "kept 1 the engine still reads" in caplog.text
    assert 0 < redis.ttl(retention.RAN_KEY) <= retention.INTERVAL  # this hour's pass is taken


def test_one_pass_an_interval_among_all_workers(redis: redis_lib.Redis,
                                                 redis_url: str) -> None:
    history = History(redis, now=time.time())
    first = history.release("v1-green", GREEN, S.ABORTED, age=100)
    history.release("v2-green", GREEN, S.ABORTED, age=99)  # stays: newest green
    retention.keep_pruning(automatic(redis_url), redis, Once())  # one worker's pass
    assert history.gone(first)
    second = history.release("v1-blue", BLUE, S.ABORTED, age=100)
    history.release("v2-blue", BLUE, S.ABORTED, age=99)
    retention.keep_pruning(automatic(redis_url), redis, Once())  # another, the same hour
    assert not history.gone(second)
    redis.delete(retention.RAN_KEY)  # the hour is over (the key expires with it)
    retention.keep_pruning(automatic(redis_url), redis, Once())
    assert history.gone(second)


def test_without_a_retention_nothing_is_pruned(redis: redis_lib.Redis, redis_url: str) -> None:
    history = History(redis, now=time.time())
    old = history.release("v1-green", GREEN, S.ABORTED, age=1000)
    history.release("v2-green", GREEN, S.ABORTED, age=999)
    thread = retention.start(automatic(redis_url, None), redis, threading.Event())
    thread.join(5)
    assert not thread.is_alive()  # it ends at once, not after an hour's wait
    assert not history.gone(old)
    assert not redis.exists(retention.RAN_KEY)


def test_a_failed_pass_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    away = redis_lib.Redis.from_url(url, socket_connect_timeout=1)
    retention.keep_pruning(automatic(url), away, Once())  # returns: it does not raise
    assert "retention: the automatic prune failed; trying again in 3600 s" in caplog.text


@pytest.mark.parametrize(("value", "seconds"), [("90d", 90 * DAY), ("36h", 129600.0),
                                                 ("45m", 2700.0), (" 30s ", 30.0)])
def test_the_retention_is_a_duration(value: str, seconds: float) -> None:
    assert automatic("redis://localhost:6379/0", value).retention == seconds


@pytest.mark.parametrize("value", ["90", "0d", "-3d", "1w", "3 days"])
def test_a_bad_retention_is_refused_at_start(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^BLUEGREEN_RETENTION: '{value.strip()}' is not "
                                          r"a duration such as 90d, 36h or 45m$"):
        automatic("redis://localhost:6379/0", value)
