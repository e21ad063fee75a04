"""The submission script writes a new release exactly as the store and rq would.

`worker.submission.SUBMIT` builds a new release's writes inside Redis from the
release's facts, with what every release shares written into the script. These
tests hold what it leaves in Redis, key for key and value for value, to what the
store's own `add_commands`, the dedupe marks and rq's own `enqueue_call` leave for the
same release: after one delivery, after a delivery of two tags, and after a batch of
deliveries in one call (apps on different queues and with different job timeouts, a
non-ASCII tag), with hostile text in every field the pusher controls.
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC
from typing import Any

import redis as redis_lib
from conftest import redis_contents
from rq import Queue
from rq.utils import utcparse

from worker import queueing, submission
from worker.api import Engine, Submitted, TagEvent
from worker.config import Settings, parse_settings
from worker.releases import AuditEntry, add_commands

SETTINGS = parse_settings({"apps": {
    "myapp": {"repository": "acme/myapp"},
    "mirror": {"repository": "acme/myapp", "queue": "mirror",  # takes the same tags
               "tag_patterns": {"blue": "^v[0-9].*-blue$", "green": "^v[0-9].*-green$"}},
    "docs": {"repository": "acme/docs", "queue": "docs",
             "hooks": {"post_deploy": [["make", "docs"]]}},
}}, {})

HOSTILE = "é \"quoted\" \\ back\nslash \x00 ]] -- 中 @channel <!here> %s {id}"


def event(tag: str, *, delivery: str = "delivery-1", repository: str = "acme/myapp",
          pusher: str = "alice", forge: str = "github") -> TagEvent:
    return TagEvent(forge=forge, delivery_id=delivery, repository=repository, tag=tag,
                    commit="0123456789abcdef" * 2 + "01234567", pusher=pusher)


def snapshot(redis: redis_lib.Redis) -> dict[bytes, Any]:
    """Every key and what it holds; a string's TTL as whether it is the dedupe TTL (the
    script's and the replay's were set a moment apart)."""
    def same_ttl(held: Any) -> Any:
        if isinstance(held, tuple) and len(held) == 2 and isinstance(held[1], int):
            return held[0], submission.DEDUPE_TTL - 60 < held[1] <= submission.DEDUPE_TTL
        return held
    return {key: same_ttl(held) for key, held in redis_contents(redis).items()}


def replay(redis: redis_lib.Redis, settings: Settings, events: list[TagEvent],
           answers: list[Submitted], written: dict[bytes, Any]) -> None:
    """Write `answers`' new releases with the store's commands, the dedupe marks and
    rq's `enqueue_call`, each job stamped with the times the script's job holds."""
    pairs = [(e, app) for e in events for app in settings.apps_for_repository(e.repository)
             if app.read_tag(e.tag) is not None]
    for (tag_event, app), answer in zip(pairs, answers, strict=True):
        release = answer.release
        [raw_entry] = written[f"bluegreen:release:{release.id}:audit".encode()]
        entry = AuditEntry.from_json(json.loads(raw_entry))
        assert entry.encoded() == raw_entry
        for command in add_commands(release, entry):
            redis.execute_command(*command)
        for key in submission.seen_keys(tag_event, app):
            redis.set(key, release.id, ex=submission.DEDUPE_TTL)
        job = Queue(app.queue, connection=redis).enqueue_call(
            queueing.RELEASE_JOB, args=(release.id,), job_id=release.id,
            timeout=queueing.job_timeout(app), result_ttl=queueing.RESULT_TTL,
            failure_ttl=queueing.FAILURE_TTL,
            description=f"release {release.tag} of {app.name} into {release.color}",
            meta={"release": release.id, "app": app.name, "action": "release"})
        stored = written[job.key.encode()]
        # rq compresses the pickled call; the script stores the same call uncompressed
        assert zlib.decompress(redis.hget(job.key, "data")) == stored[b"data"]
        redis.hset(job.key, "data", stored[b"data"])
        # rq's enqueue stamps its own instants: the script's must be one instant, read
        # by rq, at the release's creation
        stamp = utcparse(stored[b"created_at"].decode())
        assert stored[b"enqueued_at"] == stored[b"created_at"]
        assert abs(stamp.replace(tzinfo=UTC).timestamp() - release.created_at) < 1
        redis.hset(job.key, mapping={"created_at": stored[b"created_at"],
                                     "enqueued_at": stored[b"enqueued_at"]})


def submitted_and_replayed(redis: redis_lib.Redis, deliveries: list[list[TagEvent]]
                           ) -> tuple[dict[bytes, Any], dict[bytes, Any], list[Submitted]]:
    """What the script wrote for `deliveries` (one call), and what the replay writes."""
    engine = Engine(SETTINGS, redis)
    plans = [engine.plan(events) for events in deliveries]
    assert all(plans)
    script = redis.register_script(submission.SUBMIT)
    replies = script(args=submission.script_args([p for p in plans if p is not None]))
    answers = [a for p, r in zip(plans, replies, strict=True) if p is not None
               for a in submission.answers(p, r)]
    written = snapshot(redis)
    redis.flushall()
    replay(redis, SETTINGS, [e for events in deliveries for e in events], answers, written)
    return written, snapshot(redis), answers


def test_one_delivery_is_written_as_the_store_and_rq_write_it(redis: redis_lib.Redis) -> None:
    written, replayed, answers = submitted_and_replayed(redis, [[event("v2.0-green")]])
    assert [(a.duplicate, a.position) for a in answers] == [(False, 1), (False, 1)]
    assert written == replayed
    releases = {k for k in written if k.startswith(b"bluegreen:release:")}
    assert len(releases) == 4  # two apps take the tag: a record and a trail each


def test_hostile_text_lands_as_written(redis: redis_lib.Redis) -> None:
    tagged = event("v1.0-green", delivery=HOSTILE, pusher=HOSTILE, forge="gitea")
    written, replayed, answers = submitted_and_replayed(redis, [[tagged]])
    assert written == replayed
    record = written[f"bluegreen:release:{answers[0].release.id}".encode()]
    assert record[b"delivery_id"].decode() == HOSTILE
    assert record[b"actor"].decode() == f"gitea:{HOSTILE}"


def test_a_batch_of_deliveries_in_one_call(redis: redis_lib.Redis) -> None:
    deliveries = [[event("v1-blue", delivery="d1"), event("v2-green", delivery="d1")],
                  [event("vé-ü-中-green", delivery="d2", repository="acme/docs")],
                  [event("v4-blue", delivery="d3")]]
    written, replayed, answers = submitted_and_replayed(redis, deliveries)
    assert written == replayed
    assert sorted((a.release.app, a.release.tag, a.position) for a in answers) == [
        ("docs", "vé-ü-中-green", 1), ("mirror", "v1-blue", 1), ("mirror", "v2-green", 2),
        ("mirror", "v4-blue", 3), ("myapp", "v1-blue", 1), ("myapp", "v2-green", 2),
        ("myapp", "v4-blue", 3)]
