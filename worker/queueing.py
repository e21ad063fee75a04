"""Queues, jobs and the per-queue lock: how releases and commands reach a worker.

Owns the rq side of the engine: one rq queue per configured queue name; job ids
(a release's job id is its release id; commands get `<release>-<action>-<hex>`);
a release's job as rq stores it, for the intake's one-call submission
(`worker.submission`) to write; a command's job enqueued into a caller's MULTI/EXEC pipeline
(`at_front` for rollback, SPEC §5.8, and abort); queue positions; job timeouts computed from
the app's config; and the per-queue Redis lock a worker holds while it serves a
queue, so a second worker on the same queue waits instead of running jobs
alongside (SPEC §5.5). Keys:

    bluegreen:queue:<queue>:lock            the lock (token: the holding worker's name)
    bluegreen:worker:<queue>:heartbeat      JSON about the worker serving the queue, with TTL

Jobs are named by dotted path (`worker.jobs.run_release`) so enqueuing never
imports the steps. Reading a queue's state for people is `worker.queuestatus`.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import secrets
from datetime import datetime
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.lock import Lock
from rq import Queue
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import resolve_serializer
from rq.utils import now as rq_now

from worker.config import AppConfig
from worker.redistext import as_text

RELEASE_JOB = "worker.jobs.run_release"
COMMAND_JOB = "worker.jobs.run_command"
LOCK_KEY = "bluegreen:queue:{queue}:lock"
HEARTBEAT_KEY = "bluegreen:worker:{queue}:heartbeat"

RESULT_TTL = 24 * 3600            # finished jobs stay visible for a day
FAILURE_TTL = 30 * 24 * 3600      # failed jobs for a month (the release record keeps the rest)
JOB_OVERHEAD = 120                # API calls, waits and retries outside the timed parts
HEARTBEAT_INTERVAL = 10           # seconds between heartbeats, idle or working
HEARTBEAT_TTL = 3 * HEARTBEAT_INTERVAL + 15
_SERIALIZER = resolve_serializer()  # rq's default, which `get_queue`'s queues use


def job_timeout(app: AppConfig) -> int:
    """Seconds a job of `app` may run: the drain before its Deployment, the rollout, every
    hook and every smoke check (each may take `smoke_timeout`: an HTTP check, an exec
    check, or both in one), and the overhead."""
    hooks = sum(len(commands) for commands in app.hooks.values())
    checks = sum((check.path is not None) + bool(check.exec) for check in app.smoke)
    return math.ceil(app.drain_seconds + app.rollout_timeout + hooks * app.hook_timeout
                     + checks * app.smoke_timeout + JOB_OVERHEAD)


def lock_timeout() -> int:
    """Expiry of the queue lock: a few missed heartbeats.

    The holder refreshes it on every heartbeat, idle or busy, and its work horse
    exits as soon as the holder dies (`worker.runner`), so once the lock has
    expired nothing of the dead worker still touches the cluster.
    """
    return HEARTBEAT_TTL


def get_queue(redis: Redis, name: str) -> Queue:
    return Queue(name, connection=redis)


def queue_key(name: str) -> str:
    """The Redis list of queue `name`'s waiting job ids (rq's naming)."""
    return Queue.redis_queue_namespace_prefix + name


def queue_lock(redis: Redis, queue: str) -> Lock:
    """The lock a worker holds while it serves `queue`; acquire with the worker's name as token."""
    return Lock(redis, LOCK_KEY.format(queue=queue), timeout=lock_timeout(),
                sleep=0.2, blocking=True, thread_local=False)


def lock_holder(redis: Redis, queue: str) -> str | None:
    """The name of the worker holding `queue`'s lock, if any."""
    raw = redis.get(LOCK_KEY.format(queue=queue))
    return raw.decode() if isinstance(raw, bytes) else raw


def release_job_id(release_id: str) -> str:
    return release_id


def command_job_id(release_id: str, action: str) -> str:
    return f"{release_id}-{action}-{secrets.token_hex(3)}"  # (`command_jobs` reads this form)


def command_jobs(release_id: str | None = None, action: str | None = None) -> re.Pattern[str]:
    """`command_job_id`'s form, matched whole: of `release_id`'s `action` jobs, or any
    release's, any action's. A release's own job id ends in 8 hex digits: it never matches."""
    release = ".+" if release_id is None else re.escape(release_id)
    verb = "[a-z]+" if action is None else re.escape(action)
    return re.compile(rf"{release}-{verb}-[0-9a-f]{{6}}")


# The fields of a release's job that differ from one job to the next, in the order
# `release_job_values` gives their values: the submission script (`worker.submission`)
# puts each in its place in `release_job_template()`.
RELEASE_JOB_VARYING = ("origin", "timeout", "created_at", "enqueued_at", "data", "description",
                       "meta")


def release_job(app: AppConfig, *, release_id: str, description: str) -> dict[str, Any]:
    """rq's `enqueue_call` arguments for `run_release(release_id)` (all of a release's
    automatic steps as one job) on `app`'s queue: the one definition of a release's job.
    `requeue_release` enqueues it through rq; `release_job_values` gives the intake's
    script the values rq would store for it."""
    return {"func": RELEASE_JOB, "args": (release_id,), "kwargs": {},
            "job_id": release_job_id(release_id), "timeout": job_timeout(app),
            "result_ttl": RESULT_TTL, "failure_ttl": FAILURE_TTL, "description": description,
            "meta": {"release": release_id, "app": app.name, "action": "release"}}


def release_job_values(app: AppConfig, *, release_id: str, description: str) -> list[Any]:
    """The values of `RELEASE_JOB_VARYING` for `release_job(...)` enqueued now on `app`'s
    queue: what rq's `enqueue_call` would store in those fields, but for two things.
    `data` is rq's `Job.data`, the pickled `(func, instance, args, kwargs)`, not
    compressed: rq's `to_dict` compresses it and its `restore` reads an uncompressed one
    as it is (its `zlib.error` fallback; a pickle never starts as a zlib stream does). Compressing
    these ~80 bytes saved nothing and cost the intake ~10 us a delivery under load.
    And `created_at` and `enqueued_at` are one instant (rq's own enqueue takes them
    microseconds apart). `tests/test_submission.py` holds the job the script writes to
    rq's own, and `tests/test_engine_api.py` reads it back through rq."""
    job = release_job(app, release_id=release_id, description=description)
    stamp = job_timestamp(rq_now())
    call = (job["func"], None, job["args"], job["kwargs"])  # rq's `Job.data`
    return [app.queue, job["timeout"], stamp, stamp, _SERIALIZER.dumps(call),
            job["description"], _SERIALIZER.dumps(job["meta"])]


def job_timestamp(moment: datetime) -> str:
    """rq's `utcformat(moment)` of a UTC `moment` (`%Y-%m-%dT%H:%M:%S.%fZ`), written by
    `isoformat`: `strftime` costs the intake ~5 µs a job (locale, a struct_time), this a
    fraction. `tests/test_queueing.py` checks that the two agree."""
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@functools.cache
def release_job_template() -> tuple[tuple[Any, ...], dict[str, int]]:
    """rq's `to_dict()` of a release job, every field a job sets present, as flat field,
    value pairs in rq's order; and the place of each `RELEASE_JOB_VARYING` field's value
    in them. Every other value is the same for every release job. (rq's `Queue` wants a
    client; this one is never connected.)"""
    job = Queue("template", connection=Redis()).create_job(
        RELEASE_JOB, args=("",), job_id="template", timeout=1, result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL, description="template", meta={"release": ""},
        status=JobStatus.QUEUED)
    job.enqueued_at = job.created_at
    fields = job.to_dict()
    places = {name: 2 * i + 1 for i, name in enumerate(fields)}
    return (tuple(itertools.chain.from_iterable(fields.items())),
            {name: places[name] for name in RELEASE_JOB_VARYING})


def requeue_release(redis: Redis, app: AppConfig, release_id: str) -> None:
    """Queue `run_release(release_id)` again, at the back of `app`'s queue: for a queued
    release whose job was lost (`worker.recovery.recover`). Its id is the release's, as at
    intake; a failed copy of it leaves rq's failed registry."""
    queue = get_queue(redis, app.queue)
    job = release_job(app, release_id=release_id, description=f"release {release_id} (requeued)")
    FailedJobRegistry(queue=queue).remove(job["job_id"])
    queue.enqueue_call(**job)


def enqueue_command(pipe: Pipeline, redis: Redis, app: AppConfig, *, action: str,
                    release_id: str, color: str | None, actor: str, at_front: bool,
                    behind: str | None = None) -> str:
    """Queue `run_command(...)` into `pipe`, which must already be in MULTI (nothing runs
    until EXEC); rollback and abort pass `at_front=True` to jump the queue, and `behind`
    (a job id waiting there: `front_rollback`) puts it right after that job instead."""
    job = get_queue(redis, app.queue).enqueue_call(
        COMMAND_JOB, args=(app.name, action, release_id, color, actor),
        job_id=command_job_id(release_id, action), timeout=job_timeout(app),
        result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
        description=f"{action} {release_id} requested by {actor}",
        meta={"release": release_id, "app": app.name, "action": action, "actor": actor},
        at_front=at_front, pipeline=pipe)
    if behind is not None:
        pipe.lrem(queue_key(app.queue), 1, job.id)
        pipe.linsert(queue_key(app.queue), "AFTER", behind, job.id)
    return str(job.id)


ROLLBACK_JOB = command_jobs(action="rollback")
FRONT = 10


def front_rollback(reader: Redis | Pipeline, queue: str) -> str | None:
    """The last of the rollback jobs waiting at the front of `queue`, if the front is one:
    an abort goes right behind them, as rollback must never wait (SPEC §5.8). Read with
    the queue WATCHed, so the job is still there when the abort is queued behind it."""
    last = None
    for job_id in map(as_text, reader.lrange(queue_key(queue), 0, FRONT - 1)):
        if not ROLLBACK_JOB.fullmatch(job_id):
            break
        last = job_id
    return last


COMMAND_JOB_ID = command_jobs()
AT_THE_FRONT = frozenset({"rollback", "abort"})
"""The commands queued at the front (`enqueue_command`'s `at_front`, `worker.api`)."""


def waiting_command(redis: Redis, queue: str, release_id: str, action: str) -> str | None:
    """The id of a `action` job for `release_id` waiting in `queue`, if one is (the first);
    `action` is one queued at the front (`AT_THE_FRONT`).

    Only the front is read, a page at a time: such a job goes ahead of every release's
    job waiting when it is queued (behind rollbacks at most: `front_rollback`), and
    release jobs join at the back, so none waits behind another release's job. The read
    stops at the first one (`release_id`'s own job is passed over; it does not wait while
    the release runs): mostly one short page, however long the queue.

    Matched whole (`command_job_id`'s form): a prefix would also match a command of
    another release whose tag happens to continue this one's id with `-abort-...`."""
    if action not in AT_THE_FRONT:
        raise ValueError(f"{action} jobs wait at the back of the queue, not at the front")
    wanted = command_jobs(release_id, action)
    own, start = release_job_id(release_id), 0
    # Commands queued in front meanwhile shift the pages back: an id may be read twice,
    # none is skipped (while the release runs, its worker holds the queue's lock: no
    # other job is taken off the queue).
    while page := redis.lrange(queue_key(queue), start, start + FRONT - 1):
        for job_id in map(as_text, page):
            if wanted.fullmatch(job_id):
                return job_id
            if job_id != own and not COMMAND_JOB_ID.fullmatch(job_id):
                return None  # another release's job: nothing at the front is behind it
        start += FRONT
    return None


def position(redis: Redis, queue: str, job_id: str) -> int | None:
    """1 for the next job to run; None when the job is not waiting in `queue`."""
    index = redis.lpos(queue_key(queue), job_id)
    return index + 1 if isinstance(index, int) else None

