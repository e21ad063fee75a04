"""Recovery when a worker starts: nothing a dead worker left on its queue is lost (SPEC §5.7).

`recover(queue)` runs while the starting worker holds the queue's lock (`worker.runner`),
before it serves the queue: it takes the dead worker's jobs out of rq's
StartedJobRegistry (so rq never runs or fails them behind our back) and re-runs them
here, in order — a release left mid-step resumes (`worker.jobs.release_job`: every step
is idempotent and re-checks the cluster), a command runs again — and queues again a
queued release whose job was lost.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from worker import queueing
from worker.jobs import ACTOR, Result, Session, command_job, release_job
from worker.machine import RUNNING, ReleaseState
from worker.queueing import COMMAND_JOB, RELEASE_JOB, queue_key, release_job_id
from worker.redistext import as_text

log = logging.getLogger(__name__)

S = ReleaseState


def recover(queue: str) -> list[Result]:
    """Resume or safely fail what a dead worker left on `queue`; call before serving it."""
    session = Session.open()
    orphans = take_orphaned_jobs(session.redis, queue)
    apps = {app.name for app in session.settings.apps_on_queue(queue)}
    left = {r.id for r in session.store.in_states(RUNNING) if r.app in apps}
    left |= {str(job.args[0]) for job in orphans if _is_job(job, RELEASE_JOB)}
    for lost in session.store.get_many(jobless_queued(session, queue, apps) - left):
        # at the back of the queue, not run here: a rollback waiting in front goes first
        log.info("recover: %s was queued without a job; queueing it again", lost.id)
        queueing.requeue_release(session.redis, session.settings.apps[lost.app], lost.id)
    outcomes = []
    for release in sorted(session.store.get_many(left), key=lambda r: (r.created_at, r.id)):
        if release.state.is_running:
            session.store.note(release.id, actor=ACTOR, step="recover", message=(
                f"a worker stopped while this release was {release.state} ({release.step}); "
                "re-checking the cluster and resuming"))
        outcomes.append(release_job(session, release.id))
    for job in orphans:
        if _is_job(job, COMMAND_JOB):
            log.info("recover: running %s again (%s)", job.id, job.description)
            outcomes.append(command_job(session, *job.args))
    return outcomes


def jobless_queued(session: Session, queue: str, apps: set[str]) -> set[str]:
    """Queued releases of `apps` whose job is not waiting in `queue`: lost between rq taking
    it off the queue and recording it as started, or failed by rq before the release
    moved (Redis gone at that moment). Recovery queues them again, so none is left
    queued for ever."""
    waiting = {as_text(job_id) for job_id in session.redis.lrange(queue_key(queue), 0, -1)}
    return {r.id for r in session.store.in_states([S.QUEUED])
            if r.app in apps and release_job_id(r.id) not in waiting}


def take_orphaned_jobs(redis: Redis, queue: str) -> list[Job]:
    """Jobs a dead worker started on `queue`, moved out of StartedJobRegistry into failed."""
    rq_queue = Queue(queue, connection=redis)
    started = StartedJobRegistry(queue=rq_queue)
    failed = FailedJobRegistry(queue=rq_queue)
    jobs: list[Job] = []
    for job_id, execution_id in started.get_job_and_execution_ids(cleanup=False):
        started.remove_execution(Execution(execution_id, job_id, connection=redis))
        try:
            job = Job.fetch(job_id, connection=redis)
        except NoSuchJobError:
            continue
        job.set_status(JobStatus.FAILED)
        failed.add(job, exc_string="the worker running this job stopped; the next worker on "
                   "the queue re-ran it in recovery (see the release's audit trail)")
        jobs.append(job)
    return sorted(jobs, key=lambda j: _started(j))


def _is_job(job: Job, func_name: str) -> bool:
    return job.func_name == func_name


def _started(job: Job) -> Any:
    return job.started_at or job.enqueued_at or job.created_at
