"""Queues, job ids, timeouts, the per-queue lock and what the queue status shows.

Covers: job timeouts longer than the timed parts of a release, the lock outliving
any job, the lock as a real redis-py Lock (a second holder waits), enqueueing that
lands only when the caller's transaction executes, positions and `at_front`, a
waiting abort found at the front (behind rollbacks and other aborts, in any order,
past a page of them; none in an empty queue; not looked for behind another release's
job, where none waits),
`Engine.queue_status()` after a real (burst) rq worker ran a failing job, and job
times written as rq's `utcformat` writes them. (A release's job as the submission
script writes it is held to rq's own `enqueue_call` in `tests/test_submission.py`.)
"""

from __future__ import annotations

import dataclasses
import random
import re
from datetime import UTC, datetime, timedelta

import pytest
import redis as redis_lib
from rq import Queue, SimpleWorker
from rq.utils import utcformat

from worker import queueing
from worker.api import JUMP_THE_QUEUE, Engine, TagEvent
from worker.appconfig import SmokeCheck
from worker.config import AppConfig, Settings, parse_settings

SETTINGS = parse_settings({"apps": {
    "myapp": {"hooks": {"post_deploy": [["npm", "run", "migrate"], ["npm", "run", "seed"]]}},
    "website": {"repository": "acme/website", "rollout_timeout": 900},
    "docs": {"repository": "acme/docs", "queue": "docs"},
}}, {})


def app(name: str = "myapp", settings: Settings = SETTINGS) -> AppConfig:
    return settings.apps[name]


def test_job_timeout_covers_drain_rollout_hooks_and_every_smoke_check() -> None:
    myapp = app()
    timed = myapp.rollout_timeout + 2 * myapp.hook_timeout + myapp.smoke_timeout
    assert queueing.job_timeout(myapp) > timed
    assert queueing.job_timeout(dataclasses.replace(myapp, hooks={})) < queueing.job_timeout(myapp)
    # a long drain (up to 600 s) and several checks each add their whole time
    draining = dataclasses.replace(myapp, drain_seconds=600)
    assert queueing.job_timeout(draining) == queueing.job_timeout(myapp) + 600 - myapp.drain_seconds
    checks = (SmokeCheck(path="/ready"), SmokeCheck(path=None, exec=("true",)),
              SmokeCheck(path="/health", exec=("true",)))
    many = dataclasses.replace(myapp, smoke=checks)  # four checks: 1 + 1 + 2
    assert queueing.job_timeout(many) == queueing.job_timeout(myapp) + 3 * myapp.smoke_timeout


def test_a_waiting_command_is_matched_by_its_whole_job_id(redis: redis_lib.Redis) -> None:
    rid = "myapp-v1-0-green-1a2b3c4d"
    # a later tag whose id continues this one's with "-abort-": its promote is not an abort
    other = f"{rid}-abort-x-green-5e6f7a8b"
    queue = queueing.queue_key("deploy")
    redis.rpush(queue, rid, queueing.command_job_id(other, "promote"))
    assert queueing.waiting_command(redis, "deploy", rid, "abort") is None
    abort = queueing.command_job_id(rid, "abort")
    redis.rpush(queue, abort)
    assert queueing.waiting_command(redis, "deploy", rid, "abort") == abort


def test_a_waiting_abort_is_found_at_the_front_as_the_engine_queues_it(
        redis: redis_lib.Redis) -> None:
    mine, other, later = ("myapp-v1-0-green-1a2b3c4d", "myapp-v0-9-blue-5e6f7a8b",
                          "myapp-v1-1-blue-9c0d1e2f")
    assert {action.value for action in JUMP_THE_QUEUE} == queueing.AT_THE_FRONT
    assert queueing.waiting_command(redis, "deploy", mine, "abort") is None  # empty queue
    redis.rpush(queueing.queue_key("deploy"), mine, later)  # release jobs join at the back

    def command(action: str, release_id: str, *, behind: str | None = None) -> str:
        with redis.pipeline() as pipe:
            pipe.multi()
            job_id = queueing.enqueue_command(
                pipe, redis, app(), action=action, release_id=release_id, color=None,
                actor="bob", at_front=True, behind=behind)
            pipe.execute()
        return job_id
    first = command("rollback", other)
    abort = command("abort", mine, behind=queueing.front_rollback(redis, "deploy"))
    for _ in range(queueing.FRONT + 2):  # more than a page of commands ahead of it
        command("rollback", other)
    other_abort = command("abort", other, behind=queueing.front_rollback(redis, "deploy"))
    queue = [job_id.decode() for job_id in redis.lrange(queueing.queue_key("deploy"), 0, -1)]
    # rollbacks behind an abort: it went behind the page of them `front_rollback` reads
    assert queue.index(other_abort) == queueing.FRONT
    assert queueing.ROLLBACK_JOB.fullmatch(queue[queueing.FRONT + 1])
    assert queue[-4:] == [first, abort, mine, later]
    assert queueing.waiting_command(redis, "deploy", mine, "abort") == abort
    assert queueing.waiting_command(redis, "deploy", later, "abort") is None
    assert queueing.waiting_command(redis, "deploy", mine, "rollback") is None


def test_no_abort_is_looked_for_behind_another_releases_job(redis: redis_lib.Redis) -> None:
    # Not a queue the engine makes (an abort goes ahead of every release's job): the read
    # stops at the first other release's job, whatever the queue holds behind it.
    rid = "myapp-v1-0-green-1a2b3c4d"
    redis.rpush(queueing.queue_key("deploy"), "myapp-v0-9-blue-5e6f7a8b",
                queueing.command_job_id(rid, "abort"))
    assert queueing.waiting_command(redis, "deploy", rid, "abort") is None
    with pytest.raises(ValueError, match="promote jobs wait at the back"):
        queueing.waiting_command(redis, "deploy", rid, "promote")


def test_the_lock_survives_missed_heartbeats_but_not_a_dead_worker() -> None:
    ttl = queueing.lock_timeout()
    assert ttl >= 3 * queueing.HEARTBEAT_INTERVAL  # a slow heartbeat or two keeps it
    assert ttl < 60  # a restarted worker takes over within a minute of a crash


def test_a_second_holder_of_the_queue_lock_waits(redis: redis_lib.Redis) -> None:
    first = queueing.queue_lock(redis, "deploy")
    second = queueing.queue_lock(redis, "deploy")
    assert first.acquire(token="worker-1")
    assert not second.acquire(blocking_timeout=0.3, token="worker-2")
    assert queueing.lock_holder(redis, "deploy") == "worker-1"
    ttl = redis.ttl(queueing.LOCK_KEY.format(queue="deploy"))
    assert queueing.lock_timeout() - 5 < ttl <= queueing.lock_timeout()
    assert queueing.queue_lock(redis, "docs").acquire(blocking=False, token="w3")
    first.release()
    assert second.acquire(blocking_timeout=1, token="worker-2")


def queue_release(redis: redis_lib.Redis, tag: str, name: str = "myapp") -> str:
    """Queue a release of `tag` the way a tag push does (the submission script); its id."""
    [answer] = Engine(SETTINGS, redis).submit_tag(TagEvent(
        forge="github", delivery_id=f"delivery-{tag}", repository=app(name).repository,
        tag=tag, commit=f"{random.getrandbits(160):040x}", pusher="alice"))
    return answer.release.id


def test_enqueued_jobs_appear_only_when_the_transaction_runs(redis: redis_lib.Redis) -> None:
    queue = Queue("deploy", connection=redis)
    with redis.pipeline() as pipe:
        pipe.multi()
        job_id = queueing.enqueue_command(pipe, redis, app(), action="promote",
                                          release_id="myapp-v1-blue-00000001", color=None,
                                          actor="bob", at_front=False)
        assert queue.count == 0 and not redis.exists(f"rq:job:{job_id}")
        pipe.execute()
    assert queue.job_ids == [job_id]
    assert queueing.position(redis, "deploy", job_id) == 1


def test_commands_get_their_own_job_ids_and_rollback_jumps_the_queue(
        redis: redis_lib.Redis) -> None:
    first, *_ = [queue_release(redis, f"v{i}-green") for i in range(3)]
    with redis.pipeline() as pipe:
        pipe.multi()
        promote = queueing.enqueue_command(pipe, redis, app(), action="promote",
                                           release_id=first, color=None, actor="bob",
                                           at_front=False)
        rollback = queueing.enqueue_command(pipe, redis, app(), action="rollback",
                                            release_id="r-9", color=None, actor="bob",
                                            at_front=True)
        pipe.execute()
    assert re.fullmatch(rf"{first}-promote-[0-9a-f]{{6}}", promote)
    assert queueing.position(redis, "deploy", rollback) == 1
    assert queueing.position(redis, "deploy", promote) == 5
    assert queueing.position(redis, "deploy", "not-there") is None


def test_queue_status_shows_waiting_failed_and_no_worker(redis: redis_lib.Redis) -> None:
    queue = Queue("deploy", connection=redis)
    queue.enqueue("runner_jobs.explode", "smoke test failed: GET /ready answered 503",
                  job_id="failing", meta={"release": "r-1", "app": "myapp", "action": "release"})
    SimpleWorker([queue], connection=redis).work(burst=True)
    queue.enqueue("runner_jobs.record", "a", job_id="waiting-1", meta={"release": "r-2"})
    queue.enqueue("runner_jobs.record", "b", job_id="waiting-2", meta={"release": "r-3"})
    status = {q["queue"]: q for q in Engine(SETTINGS, redis).queue_status()}
    assert list(status) == ["deploy", "docs"]
    deploy = status["deploy"]
    assert deploy["apps"] == ["myapp", "website"] and deploy["worker"] == {"alive": False}
    assert deploy["running"] is None and deploy["waiting_count"] == 2
    assert [(w["job_id"], w["position"], w["release"]) for w in deploy["waiting"]] == [
        ("waiting-1", 1, "r-2"), ("waiting-2", 2, "r-3")]
    [failed] = deploy["failed"]
    assert failed["job_id"] == "failing" and failed["release"] == "r-1"
    assert failed["error"] == "RuntimeError: smoke test failed: GET /ready answered 503"
    assert status["docs"]["waiting"] == [] and status["docs"]["failed"] == []


def test_job_timestamps_are_rqs_utcformat() -> None:
    """The job's times are written without `strftime` (slow); the text must not differ."""
    rng = random.Random(7)
    start = datetime(2000, 1, 1, tzinfo=UTC)
    moments = [start, start.replace(microsecond=1), datetime(2099, 12, 31, 23, 59, 59,
                                                             999999, tzinfo=UTC)]
    moments += [start + timedelta(microseconds=rng.randrange(100 * 365 * 86400 * 10**6))
                for _ in range(1000)]
    assert [queueing.job_timestamp(m) for m in moments] == [utcformat(m) for m in moments]
