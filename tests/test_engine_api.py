"""The engine's public face (`worker.api.Engine`) against a real Redis and real rq queues.

Covers: a tag push recorded and queued (the rq job as a worker would see it), queue
positions, dedupe by delivery id and by repository+tag+commit, tags that are not
ours, one tag releasing two apps, all-or-nothing writes (a Redis that refuses the
enqueue part leaves no record either), Redis down → `Unavailable`; commands checked
against the records (unknown app or release, stale states with the reason), queued
with an audit entry, rollback at the front; and the read side.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import pytest
import redis as redis_lib
from conftest import RedisServer
from rq import Queue

from worker import queueing, releases
from worker.api import (
    Action,
    Engine,
    InvalidCommand,
    StaleCommand,
    TagEvent,
    Unavailable,
    UnknownApp,
    UnknownRelease,
)
from worker.colors import Color
from worker.config import Settings, parse_settings
from worker.releases import ReleaseState

S = ReleaseState
EVENT = TagEvent(forge="github", delivery_id="delivery-1", repository="acme/myapp",
                 tag="v2.0-green", commit="a" * 40, pusher="alice")
CONFIG = {"apps": {
    "myapp": {"repository": "acme/myapp"},
    "website": {"repository": "acme/website", "queue": "web",
                "tag_patterns": {"blue": "^release-.*-blue$", "green": "^release-.*-green$"}},
    "api": {"repository": "acme/mono"},
    "jobs": {"repository": "acme/mono",
             "tag_patterns": {"blue": "^(v.*)-blue$", "green": "^(v.*)-green$"}},
}}
PATHS = {
    S.CHECKING: [S.CHECKING], S.AWAITING_PROMOTION: [S.CHECKING, S.DEPLOYING, S.TESTING,
                                                     S.AWAITING_PROMOTION],
    S.FAILED: [S.CHECKING, S.FAILED], S.SUPERSEDED: [S.SUPERSEDED],
}
PATHS[S.LIVE] = [*PATHS[S.AWAITING_PROMOTION], S.LIVE]
PATHS[S.STANDBY] = [*PATHS[S.LIVE], S.STANDBY]


@pytest.fixture
def settings() -> Settings:
    return parse_settings(CONFIG, {})


@pytest.fixture
def engine(settings: Settings, redis: redis_lib.Redis) -> Engine:
    clock = itertools.count(1000)
    return Engine(settings, redis, clock=lambda: float(next(clock)))


def submit(engine: Engine, **changes: str) -> tuple[str, int | None, bool]:
    [answer] = engine.submit_tag(dataclasses.replace(EVENT, **changes))
    return answer.release.id, answer.position, answer.duplicate


def walk(engine: Engine, release_id: str, to: ReleaseState) -> None:
    for state in PATHS[to]:
        engine.store.transition(release_id, state, actor="worker", step=state.value,
                                message=f"now {state.value}")


def test_a_tag_push_is_recorded_and_queued(engine: Engine, redis: redis_lib.Redis) -> None:
    [answer] = engine.submit_tag(EVENT)
    release = answer.release
    assert (answer.duplicate, answer.position) == (False, 1)
    assert (release.app, release.color, release.version, release.state) == (
        "myapp", Color.GREEN, "v2.0", S.QUEUED)
    assert engine.get_release(release.id) == release
    queue = Queue("deploy", connection=redis)
    [job] = queue.jobs
    assert job.id == release.id and job.func_name == queueing.RELEASE_JOB
    assert job.args == (release.id,) and job.meta["release"] == release.id
    assert job.timeout == queueing.job_timeout(engine.settings.apps["myapp"]) > 120 + 60
    [entry] = engine.audit(release.id)
    assert entry.state_to == "queued" and entry.actor == "github:alice"
    assert "delivery-1" in entry.message and "v2.0-green" in entry.message


def test_positions_follow_the_queue(engine: Engine) -> None:
    positions = [submit(engine, delivery_id=f"d{i}", commit=str(i) * 40)[1] for i in range(3)]
    assert positions == [1, 2, 3]
    [web] = engine.submit_tag(dataclasses.replace(EVENT, repository="acme/website",
                                                  tag="release-1-blue", delivery_id="w"))
    assert web.position == 1 and web.release.app == "website"  # its own queue


def test_the_same_delivery_again_is_a_duplicate(engine: Engine, redis: redis_lib.Redis) -> None:
    first = submit(engine)
    assert submit(engine) == (first[0], 1, True)
    assert submit(engine, commit="b" * 40) == (first[0], 1, True)  # a redelivery wins
    assert Queue("deploy", connection=redis).count == 1


def test_each_tag_of_one_delivery_is_its_own_release(engine: Engine,
                                                    redis: redis_lib.Redis) -> None:
    first = submit(engine, tag="v1.0-green")
    second = submit(engine, tag="v1.1-green", commit="b" * 40)  # same delivery id (Bitbucket)
    assert second[0] != first[0] and not second[2]
    assert submit(engine, tag="v1.1-green", commit="b" * 40) == (second[0], 2, True)
    assert Queue("deploy", connection=redis).count == 2


def test_the_same_repository_tag_and_commit_is_a_duplicate(engine: Engine) -> None:
    first = submit(engine)
    assert submit(engine, delivery_id="org-hook", repository="ACME/myapp") == (first[0], 1, True)
    assert submit(engine, delivery_id="padded", repository=" acme/myapp\t") == (first[0], 1, True)
    assert submit(engine, delivery_id="", pusher="bob")[0] == first[0]
    moved, position, duplicate = submit(engine, delivery_id="d2", commit="b" * 40)
    assert moved != first[0] and position == 2 and not duplicate


def test_dedupe_keys_expire_after_a_week(engine: Engine, redis: redis_lib.Redis) -> None:
    submit(engine)
    ttls = [redis.ttl(key) for key in redis.scan_iter("bluegreen:seen:*")]
    assert len(ttls) == 2 and all(7 * 24 * 3600 - 60 < ttl <= 7 * 24 * 3600 for ttl in ttls)


def test_a_push_whose_release_record_is_gone_is_new_again(engine: Engine,
                                                          redis: redis_lib.Redis) -> None:
    first, _, _ = submit(engine)
    redis.delete(f"bluegreen:release:{first}")  # e.g. removed by hand; the seen marks remain
    again, position, duplicate = submit(engine)
    assert (duplicate, position) == (False, 2) and again != first
    assert engine.get_release(again) is not None


def test_a_duplicate_of_a_started_release_has_no_position(engine: Engine) -> None:
    release_id = submit(engine)[0]
    walk(engine, release_id, S.CHECKING)
    assert submit(engine) == (release_id, None, True)


@pytest.mark.parametrize("changes", [
    {"tag": "v2.0"}, {"tag": "v2.0-red"}, {"repository": "acme/other"},
    {"repository": "acme/website"},  # website's patterns want release-*
])
def test_tags_that_are_not_ours_are_ignored(engine: Engine, redis: redis_lib.Redis,
                                            changes: dict[str, str]) -> None:
    assert engine.submit_tag(dataclasses.replace(EVENT, **changes)) == []
    assert redis.keys("*") == []


def test_one_tag_may_release_two_apps(engine: Engine) -> None:
    answers = engine.submit_tag(dataclasses.replace(EVENT, repository="acme/mono"))
    assert [(a.release.app, a.position) for a in answers] == [("api", 1), ("jobs", 2)]
    again = engine.submit_tag(dataclasses.replace(EVENT, repository="acme/mono"))
    assert [a.duplicate for a in again] == [True, True]


@pytest.fixture
def refusing_redis(redis: redis_lib.Redis, redis_server: RedisServer) -> Iterator[str]:
    """A Redis user that may write our records but not push onto rq's queue lists."""
    redis.acl_setuser("norqueue", enabled=True, passwords=["+pw"], commands=["+@all"],
                      keys=["bluegreen:*", "rq:job:*", "rq:queues"], reset_keys=True)
    yield f"redis://norqueue:pw@127.0.0.1:{redis_server.port}/0"
    redis.acl_deluser("norqueue")


def test_record_and_enqueue_land_together_or_not_at_all(
        settings: Settings, redis: redis_lib.Redis, refusing_redis: str) -> None:
    limited = Engine(settings, redis_lib.Redis.from_url(refusing_redis))
    with pytest.raises(Unavailable, match="nothing was changed"):
        limited.submit_tag(EVENT)
    assert redis.keys("*") == []  # the record, its indexes and the dedupe keys came before
    [answer] = Engine(settings, redis).submit_tag(EVENT)  # and nothing blocks a retry
    assert not answer.duplicate


def test_redis_down_is_unavailable(settings: Settings, redis_server: RedisServer) -> None:
    engine = Engine(settings, redis_lib.Redis.from_url(redis_server.url))
    redis_server.stop()
    with pytest.raises(Unavailable) as raised:
        engine.submit_tag(EVENT)
    assert raised.value.status == 503 and raised.value.code == "redis_unavailable"
    with pytest.raises(Unavailable):
        engine.list_releases()


def test_promote_is_queued_with_an_audit_entry(engine: Engine, redis: redis_lib.Redis) -> None:
    release_id = submit(engine)[0]
    walk(engine, release_id, S.AWAITING_PROMOTION)
    queued = engine.submit_command("myapp", Action.PROMOTE, release=release_id, actor="slack:bob")
    assert queued.release.id == release_id and queued.position == 2  # behind the release job
    job = Queue("deploy", connection=redis).fetch_job(queued.job_id)
    assert job is not None and job.func_name == queueing.COMMAND_JOB
    assert job.args == ("myapp", "promote", release_id, None, "slack:bob")
    assert engine.audit(release_id)[-1].message == "promote requested by slack:bob"


def test_rollback_goes_to_the_front(engine: Engine, redis: redis_lib.Redis) -> None:
    old = submit(engine, tag="v1.0-blue", commit="1" * 40, delivery_id="d1")[0]
    new = submit(engine, tag="v2.0-green", commit="2" * 40, delivery_id="d2")[0]
    walk(engine, old, S.STANDBY)
    walk(engine, new, S.LIVE)
    submit(engine, tag="v3.0-blue", commit="3" * 40, delivery_id="d3")
    queued = engine.submit_command("myapp", "rollback", release=None, actor="api:ops")
    assert queued.release.id == new and queued.position == 1
    assert Queue("deploy", connection=redis).job_ids[0] == queued.job_id


def test_an_abort_goes_to_the_front_but_never_ahead_of_a_rollback(
        engine: Engine, redis: redis_lib.Redis) -> None:
    """Both jump the queue; a rollback (SPEC §5.8) is never kept waiting for an abort,
    whichever was asked first."""
    old = submit(engine, tag="v1.0-blue", commit="1" * 40, delivery_id="d1")[0]
    new = submit(engine, tag="v2.0-green", commit="2" * 40, delivery_id="d2")[0]
    walk(engine, old, S.STANDBY)
    walk(engine, new, S.LIVE)
    waiting = submit(engine, tag="v3.0-blue", commit="3" * 40, delivery_id="d3")[0]
    queue = Queue("deploy", connection=redis)
    rollback = engine.submit_command("myapp", "rollback", release=None, actor="api:ops")
    abort = engine.submit_command("myapp", "abort", release=waiting, actor="api:dev")
    assert (rollback.position, abort.position) == (1, 2)
    assert queue.job_ids[:2] == [rollback.job_id, abort.job_id]
    assert queue.job_ids[2:] == [old, new, waiting]  # every job still there, once
    queue.empty()
    alone = engine.submit_command("myapp", "abort", release=waiting, actor="api:dev")
    assert alone.position == 1  # with no rollback waiting, at the front


def test_rollback_needs_a_standby(engine: Engine) -> None:
    live = submit(engine)[0]
    walk(engine, live, S.LIVE)
    with pytest.raises(StaleCommand, match="nothing to roll back to: no standby release"):
        engine.submit_command("myapp", Action.ROLLBACK, release=live, actor="x")


def test_unknown_app_and_release(engine: Engine) -> None:
    with pytest.raises(UnknownApp, match="no app named 'nope'") as raised:
        engine.submit_command("nope", Action.PROMOTE, release=None, actor="x")
    assert (raised.value.status, raised.value.code) == (404, "unknown_app")
    with pytest.raises(UnknownRelease, match="app myapp has no release 'r-1'"):
        engine.submit_command("myapp", Action.PROMOTE, release="r-1", actor="x")
    website = engine.submit_tag(dataclasses.replace(
        EVENT, repository="acme/website", tag="release-1-blue"))[0].release.id
    with pytest.raises(UnknownRelease):  # a release of another app
        engine.submit_command("myapp", Action.PROMOTE, release=website, actor="x")
    with pytest.raises(InvalidCommand, match="unknown action 'deploy'"):
        engine.submit_command("myapp", "deploy", release=None, actor="x")


def test_stale_commands_say_why(engine: Engine, redis: redis_lib.Redis) -> None:
    old = submit(engine, delivery_id="d1", commit="1" * 40)[0]
    new = submit(engine, delivery_id="d2", commit="2" * 40)[0]
    walk(engine, old, S.SUPERSEDED)
    # the reason is the supersede entry's (the worker's entries name the release: test_steps)
    why = f"^release {old} is superseded: now superseded$"
    with pytest.raises(StaleCommand, match=why) as raised:
        engine.submit_command("myapp", Action.PROMOTE, release=old, actor="x")
    assert (raised.value.status, raised.value.code) == (409, "stale_command")
    with pytest.raises(StaleCommand, match=f"release {new} is queued; promote needs"):
        engine.submit_command("myapp", Action.PROMOTE, release=new, actor="x")
    walk(engine, new, S.FAILED)
    with pytest.raises(StaleCommand, match=f"release {new} failed"):
        engine.submit_command("myapp", Action.ABORT, release=new, actor="x")
    assert Queue("deploy", connection=redis).count == 2  # only the two release jobs


def test_decommission_checks_the_colour(engine: Engine) -> None:
    blue = submit(engine, tag="v1.0-blue", commit="1" * 40, delivery_id="d1")[0]
    green = submit(engine, tag="v2.0-green", commit="2" * 40, delivery_id="d2")[0]
    walk(engine, blue, S.STANDBY)
    walk(engine, green, S.LIVE)
    with pytest.raises(StaleCommand, match="the live colour is never decommissioned"):
        engine.submit_command("myapp", Action.DECOMMISSION, release=green, actor="x")
    with pytest.raises(StaleCommand, match=f"release {blue} is on blue, not green"):
        engine.submit_command("myapp", "decommission", release=blue, color=Color.GREEN,
                              actor="x")
    with pytest.raises(InvalidCommand, match="decommission needs a colour"):
        engine.submit_command("myapp", "decommission", release=None, actor="x")
    queued = engine.submit_command("myapp", "decommission", release=None, color=Color.BLUE,
                                   actor="x")
    assert queued.release.id == blue


def through(engine: Engine, release_id: str, *states: ReleaseState) -> None:
    for state in states:
        engine.store.transition(release_id, state, actor="worker", step=state.value,
                                message=f"now {state.value}")


def test_a_colours_occupant_is_the_last_release_that_deployed_into_it(engine: Engine) -> None:
    def blue(n: int) -> str:
        return submit(engine, tag=f"v{n}.0-blue", commit=f"{n:040x}", delivery_id=f"d{n}")[0]

    def occupant() -> str | None:
        found = engine.store.occupant_for("myapp", Color.BLUE)
        return None if found is None else found.id

    assert occupant() is None
    first = blue(1)
    assert occupant() is None  # queued: it has not deployed yet
    through(engine, first, S.CHECKING, S.DEPLOYING, S.TESTING, S.AWAITING_PROMOTION, S.LIVE,
            S.ROLLED_BACK)
    # Newer releases into blue that never applied a Deployment, more than one page of them
    never = [blue(n) for n in range(2, 2 + releases.OCCUPANT_PAGE + 3)]
    endings = [(S.CHECKING, S.REJECTED), (S.SUPERSEDED,), (S.ABORTED,), (S.FAILED,),
               (S.CHECKING, S.FAILED), (S.CHECKING,), (), (S.CHECKING, S.ABORTED),
               (S.CHECKING, S.DEPLOYING, S.FAILED)]  # (its Service refused, say)
    for release_id, states in zip(never, itertools.cycle(endings)):
        through(engine, release_id, *states)
    assert occupant() == first
    deploying = blue(50)  # its Service written, its drain waited: no Deployment yet
    through(engine, deploying, S.CHECKING, S.DEPLOYING)
    assert occupant() == first
    engine.store.note(deploying, actor="worker", step=releases.TAKES_COLOUR_STEP,
                      message="applying Deployment default/myapp-blue")
    assert occupant() == deploying
    through(engine, deploying, S.FAILED)
    # Ended after applying its Deployment: each is the colour's occupant
    for n, states in enumerate([(S.FAILED,), (S.TESTING, S.AWAITING_PROMOTION, S.SUPERSEDED),
                                (S.TESTING, S.AWAITING_PROMOTION, S.ABORTED)], start=100):
        deployed = blue(n)
        through(engine, deployed, S.CHECKING, S.DEPLOYING)
        engine.store.note(deployed, actor="worker", step=releases.TAKES_COLOUR_STEP,
                          message="applying Deployment default/myapp-blue")
        through(engine, deployed, *states)
        assert occupant() == deployed
    rejected = blue(200)
    through(engine, rejected, S.CHECKING, S.REJECTED)
    assert engine.store.latest_for("myapp", Color.BLUE).id == rejected  # type: ignore[union-attr]
    assert occupant() == deployed
    assert engine.store.occupant_for("myapp", Color.GREEN) is None


def test_commands_without_a_release_need_exactly_one_candidate(engine: Engine) -> None:
    with pytest.raises(StaleCommand, match="promote needs exactly one awaiting_promotion"):
        engine.submit_command("myapp", Action.PROMOTE, release=None, actor="x")
    waiting = submit(engine)[0]
    walk(engine, waiting, S.AWAITING_PROMOTION)
    assert engine.submit_command("myapp", "abort", release=None, actor="x").release.id == waiting
    assert [r.id for r in engine.awaiting("myapp")] == [waiting]


def test_listing_is_newest_first_and_filters(engine: Engine) -> None:
    ids = [submit(engine, delivery_id=f"d{i}", commit=str(i) * 40)[0] for i in range(3)]
    walk(engine, ids[0], S.FAILED)
    assert [r.id for r in engine.list_releases()] == ids[::-1]
    assert [r.id for r in engine.list_releases(limit=2)] == ids[:0:-1]
    assert [r.id for r in engine.list_releases(app="myapp", state=S.QUEUED)] == ids[:0:-1]
    assert [r.id for r in engine.list_releases(state=S.FAILED)] == ids[:1]
    assert engine.list_releases(app="website") == []
    assert engine.get_release("nope") is None and engine.audit("nope") == []
    with pytest.raises(UnknownApp):
        engine.awaiting("nope")
