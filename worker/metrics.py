"""Prometheus metrics kept in Redis, so every process counts into one place.

Owns the metric names, the Redis hashes below and `RedisCollector`, a
prometheus_client Collector that reads them at scrape time. Counters and histogram
buckets are written (HINCRBY / HINCRBYFLOAT) by whichever process does the thing:
the web process counts webhook deliveries and chat actions, the release store counts
release outcomes inside the transaction that records them (so each is counted once),
the worker times steps. Gauges (queue length, oldest job, live colour, heartbeat and
snapshot age, drift) are read from Redis at scrape time, never kept in a process.

Why not prometheus_client's multiprocess mode: it only adds up files of processes on
one host, needs a shared directory cleaned on every restart, and cannot see the
worker's process (another container) at all; Redis already holds the shared state.
Serving `/metrics` over HTTP is the web side's (`webhook.metrics_view`). Keys:

    bluegreen:metrics:releases      hash "<app>|<result>" -> count
    bluegreen:metrics:steps         hash "<step>|<le>" -> count in that bucket (not cumulative),
                                         "<step>|sum" -> seconds, "<step>|count" -> observations
    bluegreen:metrics:webhooks      hash "<forge>|<result>" -> count
    bluegreen:metrics:chat          hash "<result>" -> count
    bluegreen:metrics:step:<app>    hash release, step, started_at: the step running now
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq.job import Job
from rq.utils import utcparse

from worker import clusterview, queueing
from worker.colors import Color
from worker.config import Settings
from worker.machine import ReleaseState
from worker.redistext import as_text

log = logging.getLogger(__name__)

PREFIX = "bluegreen:metrics:"
RELEASES_KEY = "bluegreen:metrics:releases"
STEPS_KEY = "bluegreen:metrics:steps"
WEBHOOKS_KEY = "bluegreen:metrics:webhooks"
CHAT_KEY = "bluegreen:metrics:chat"
OPEN_STEP_KEY = "bluegreen:metrics:step:{app}"
OPEN_STEP_TTL = 24 * 3600
SEP = "|"
OLDEST_SCANNED = 100
"""Waiting jobs read for the oldest one's age: rollbacks and aborts are pushed to the
front, everything else to the back, so the oldest is in the front-pushed run or right
after it; a run of 100 queue-jumpers is far beyond any real queue."""
BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, math.inf)
S = ReleaseState
OUTCOMES = frozenset({S.LIVE, S.REJECTED, S.FAILED, S.SUPERSEDED, S.ABORTED, S.ROLLED_BACK,
                      S.DECOMMISSIONED})
"""States whose entry counts as a release result; live only when entered by a promotion
(from awaiting_promotion). A rollback is counted once, as the undone release's rolled_back:
the standby release it makes live again went live when it was promoted, and counting that
again would make `live` more than the releases ever promoted."""


# -- writing: called by whichever process does the thing -----------------------------------


def count_transition(pipe: Pipeline, *, app: str, before: ReleaseState,
                     after: ReleaseState) -> None:
    """Count a release result; queued into the caller's MULTI so it lands with the record."""
    if after is before or after not in OUTCOMES:
        return
    if after is S.LIVE and before is not S.AWAITING_PROMOTION:
        return  # live again by a rollback: not another release going live
    pipe.hincrby(RELEASES_KEY, _field(app, after.value), 1)


def observe_step(redis: Redis | Pipeline, step: str, seconds: float) -> None:
    """One observation of the step-duration histogram."""
    seconds = max(0.0, seconds)
    bucket = next(b for b in BUCKETS if seconds <= b)
    redis.hincrby(STEPS_KEY, _field(step, _le(bucket)), 1)
    redis.hincrbyfloat(STEPS_KEY, _field(step, "sum"), seconds)
    redis.hincrby(STEPS_KEY, _field(step, "count"), 1)


def step_started(redis: Redis, *, app: str, release_id: str, step: str,
                 now: float | None = None) -> None:
    """`step` of `release_id` starts now; the step `app` was running before has ended."""
    now = time.time() if now is None else now
    steps_ended(redis, app=app, now=now)
    key = OPEN_STEP_KEY.format(app=app)
    with redis.pipeline() as pipe:
        pipe.hset(key, mapping={"release": release_id, "step": step, "started_at": repr(now)})
        pipe.expire(key, OPEN_STEP_TTL)
        pipe.execute()


def steps_ended(redis: Redis, *, app: str, now: float | None = None) -> None:
    """The step `app` was running (if any) has ended: observe how long it took."""
    now = time.time() if now is None else now
    key = OPEN_STEP_KEY.format(app=app)
    with redis.pipeline() as pipe:
        pipe.hgetall(key)
        pipe.delete(key)
        opened, _ = pipe.execute()
    if opened:
        data = {as_text(k): as_text(v) for k, v in opened.items()}
        observe_step(redis, data.get("step", "unknown"), now - float(data["started_at"]))


def record_webhook(redis: Redis, forge: str | None, result: str) -> None:
    """Count one forge delivery by forge and result; never fails the delivery."""
    _quietly(lambda: redis.hincrby(WEBHOOKS_KEY, webhook_field(forge, result), 1))


def webhook_field(forge: str | None, result: str) -> str:
    """The field of `WEBHOOKS_KEY` that counts `forge`'s deliveries with `result`."""
    return _field(forge or "unknown", result)


def record_chat_action(redis: Redis, result: str) -> None:
    """Count one chat action (button or command) by result; never fails the action."""
    _quietly(lambda: redis.hincrby(CHAT_KEY, result, 1))


def _quietly(write: Callable[[], Any]) -> None:
    try:
        write()
    except RedisError as e:  # a lost count must never cost a delivery or a chat reply
        log.warning("could not record a metric: %s", e)


# -- reading: at scrape time ------------------------------------------------------------------


class RedisCollector(Collector):
    """Builds every metric from Redis on each scrape (one pipelined read)."""

    def __init__(self, redis: Redis, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis, self.settings, self.clock = redis, settings, clock

    def collect(self) -> Iterator[Metric]:
        raw = self._read()
        now = self.clock()
        yield _counter("bluegreen_releases", "Release results by app (a release promoted to "
                       "live, or entering rejected, failed, superseded, aborted, rolled_back "
                       "or decommissioned; a rollback's return to live is not counted).",
                       ["app", "result"], raw["releases"])
        yield _histogram(raw["steps"])
        yield _counter("bluegreen_webhook_deliveries", "Forge webhook deliveries by forge and "
                       "result (queued, duplicate, ignored, error).", ["forge", "result"],
                       raw["webhooks"])
        yield _counter("bluegreen_chat_actions", "Chat actions (buttons, commands) by result.",
                       ["result"], raw["chat"])
        yield from self._queues(raw, now)
        yield from self._apps(raw, now)

    def _read(self) -> dict[str, Any]:
        queues = self.settings.queue_names()
        apps = sorted(self.settings.apps)
        with self.redis.pipeline(transaction=False) as pipe:
            for key in (RELEASES_KEY, STEPS_KEY, WEBHOOKS_KEY, CHAT_KEY):
                pipe.hgetall(key)
            for queue in queues:
                pipe.llen(queueing.queue_key(queue))
                pipe.lrange(queueing.queue_key(queue), 0, OLDEST_SCANNED - 1)
                pipe.get(queueing.HEARTBEAT_KEY.format(queue=queue))
            clusterview.queue_reads(pipe, apps)
            answers = pipe.execute()
        releases, steps, webhooks, chat = answers[:4]
        per_queue = answers[4:4 + 3 * len(queues)]
        return {"releases": releases, "steps": steps, "webhooks": webhooks, "chat": chat,
                "queues": {q: per_queue[3 * i:3 * i + 3] for i, q in enumerate(queues)},
                "snapshots": clusterview.parse_reads(apps, answers[4 + 3 * len(queues):])}

    def _queues(self, raw: dict[str, Any], now: float) -> Iterator[Metric]:
        length = GaugeMetricFamily("bluegreen_queue_length", "Jobs waiting in the queue.",
                                   labels=["queue"])
        oldest = GaugeMetricFamily("bluegreen_queue_oldest_job_age_seconds",
                                   "Age of the oldest waiting job (0 when none waits).",
                                   labels=["queue"])
        alive = GaugeMetricFamily("bluegreen_worker_alive",
                                  "1 while the queue's worker keeps its heartbeat fresh.",
                                  labels=["queue"])
        beat_age = GaugeMetricFamily("bluegreen_worker_heartbeat_age_seconds",
                                     "Seconds since the queue's worker last beat (absent when "
                                     "no heartbeat is left).", labels=["queue"])
        for queue, (count, head, beat) in raw["queues"].items():
            length.add_metric([queue], float(count))
            oldest.add_metric([queue], self._oldest_age(head, now))
            alive.add_metric([queue], 0.0 if beat is None else 1.0)
            at = _beat_time(beat)
            if at is not None:
                beat_age.add_metric([queue], max(0.0, now - at))
        yield from (length, oldest, alive, beat_age)

    def _oldest_age(self, job_ids: list[bytes], now: float) -> float:
        """The age of the longest-waiting of `job_ids` (not just the head's: a rollback
        or abort at the front is the youngest job there). One pipelined read of each
        job's `enqueued_at`; a job whose hash is gone is skipped."""
        if not job_ids:
            return 0.0
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(Job.key_for(as_text(job_id)), "enqueued_at")
            stamps = pipe.execute()
        ages = [now - enqueued for enqueued in map(_job_time, stamps) if enqueued is not None]
        return max(0.0, *ages)

    def _apps(self, raw: dict[str, Any], now: float) -> Iterator[Metric]:
        live = GaugeMetricFamily("bluegreen_live_color", "1 for the colour the app's default "
                                 "route sends users to (as last seen on the cluster).",
                                 labels=["app", "color"])
        age = GaugeMetricFamily("bluegreen_snapshot_age_seconds",
                                "Seconds since the worker last read the app's cluster state "
                                "(absent until a read succeeds).", labels=["app"])
        drift = GaugeMetricFamily("bluegreen_drift", "Differences between the cluster and the "
                                  "release records (0: none).", labels=["app"])
        for app, snap in raw["snapshots"].items():
            for color in Color:
                on = snap is not None and snap.get("live") == color.value
                live.add_metric([app, color.value], 1.0 if on else 0.0)
            if snap is None:
                continue
            taken = snap.get("taken_at")
            if isinstance(taken, int | float):  # None: no look at the cluster has succeeded
                age.add_metric([app], max(0.0, now - taken))
            drift.add_metric([app], float(len(snap.get("drift") or [])))
        yield from (live, age, drift)


def registry(redis: Redis, settings: Settings) -> CollectorRegistry:
    """A registry holding only the Redis-backed metrics (no per-process defaults)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RedisCollector(redis, settings))
    return reg


def _counter(name: str, doc: str, labels: list[str],
             raw: Mapping[bytes, bytes]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(raw.items()):
        parts = as_text(key).split(SEP)
        if len(parts) == len(labels):
            family.add_metric(parts, float(value))
    return family


def _histogram(raw: Mapping[bytes, bytes]) -> HistogramMetricFamily:
    family = HistogramMetricFamily("bluegreen_step_duration_seconds",
                                   "How long each release step and command took.",
                                   labels=["step"])
    data: dict[str, dict[str, float]] = {}
    for key, value in raw.items():
        step, _, part = as_text(key).rpartition(SEP)
        data.setdefault(step, {})[part] = float(value)
    for step, parts in sorted(data.items()):
        running, buckets = 0.0, []
        for bound in BUCKETS:
            running += parts.get(_le(bound), 0.0)
            buckets.append((_le(bound), running))
        family.add_metric([step], buckets, parts.get("sum", 0.0))
    return family


def _beat_time(raw: bytes | str | None) -> float | None:
    if raw is None:
        return None
    try:
        at = json.loads(raw).get("at")
    except (ValueError, AttributeError):
        return None
    return float(at) if isinstance(at, int | float) else None


def _job_time(raw: bytes | str | None) -> float | None:
    """A timestamp rq wrote (`utcformat`), as seconds since the epoch."""
    if not raw:
        return None
    try:
        return utcparse(as_text(raw)).timestamp()
    except ValueError:
        return None


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


def _field(*parts: str) -> str:
    return SEP.join(parts)
