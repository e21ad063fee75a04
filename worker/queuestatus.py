"""What each queue is doing, for people: the running job, waiting jobs, failures, the worker.

Reads rq's queue and registries and our worker heartbeat without changing
anything (registry cleanup is left to the worker). Answers plain JSON-able dicts
for `Engine.queue_status()`; the keys are described in docs/architecture.md.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from redis import Redis
from rq.job import Job

from worker import queueing
from worker.config import Settings
from worker.releases import ReleaseStore

FAILED_SHOWN = 20
WAITING_SHOWN = 100


def describe(redis: Redis, settings: Settings, store: ReleaseStore) -> list[dict[str, Any]]:
    """One entry per configured queue, sorted by name."""
    return [_describe_queue(redis, settings, store, name) for name in settings.queue_names()]


def _describe_queue(redis: Redis, settings: Settings, store: ReleaseStore,
                    name: str) -> dict[str, Any]:
    queue = queueing.get_queue(redis, name)
    waiting_ids = queue.get_job_ids(0, WAITING_SHOWN)
    waiting = [_job_summary(job, position=i + 1)
               for i, job in enumerate(_fetch(redis, waiting_ids))]
    running = [_running(store, job)
               for job in _fetch(redis, queue.started_job_registry.get_job_ids(cleanup=False))]
    failed_ids = queue.failed_job_registry.get_job_ids(0, FAILED_SHOWN - 1, desc=True,
                                                       cleanup=False)
    return {
        "queue": name,
        "apps": [app.name for app in settings.apps_on_queue(name)],
        "worker": worker_status(redis, name),
        "running": running[0] if running else None,
        "waiting": waiting,
        "waiting_count": queue.count,
        "failed": [_failed(job) for job in _fetch(redis, failed_ids)],
    }


def worker_status(redis: Redis, queue: str) -> dict[str, Any]:
    """`alive` while the worker serving `queue` keeps its heartbeat fresh."""
    raw = redis.get(queueing.HEARTBEAT_KEY.format(queue=queue))
    if raw is None:
        return {"alive": False}
    try:
        beat = json.loads(raw)
    except ValueError:
        beat = {}
    return {"alive": True, **(beat if isinstance(beat, dict) else {})}


def _fetch(redis: Redis, job_ids: list[str]) -> list[Job]:
    """The jobs that still exist (one pipelined read; expired or deleted ones are skipped)."""
    return [job for job in Job.fetch_many(job_ids, connection=redis) if job is not None]


def _job_summary(job: Job, *, position: int | None = None) -> dict[str, Any]:
    meta = job.meta or {}
    summary = {
        "job_id": job.id,
        "release": meta.get("release"),
        "app": meta.get("app"),
        "action": meta.get("action"),
        "actor": meta.get("actor"),
        "description": job.description,
        "enqueued_at": _time(job.enqueued_at),
    }
    if position is not None:
        summary["position"] = position
    return summary


def _running(store: ReleaseStore, job: Job) -> dict[str, Any]:
    summary = _job_summary(job)
    release = store.get(summary["release"]) if summary["release"] else None
    summary.update(started_at=_time(job.started_at),
                   step=release.step if release is not None else None,
                   state=release.state.value if release is not None else None)
    return summary


def _failed(job: Job) -> dict[str, Any]:
    summary = _job_summary(job)
    summary.update(ended_at=_time(job.ended_at), error=_last_line(_error_text(job)))
    return summary


def _error_text(job: Job) -> str | None:
    """The failure's traceback: from rq's latest result or, for a job a registry marked
    failed (an abandoned job), from the job itself. `latest_result()` alone misses the
    second case, so rq's deprecated `exc_info`, which reads both, is used knowingly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        text = job.exc_info
    return text


def _last_line(text: str | None) -> str | None:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def _time(value: Any) -> float | None:
    return value.timestamp() if value is not None else None
