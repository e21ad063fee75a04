"""The worker process: one rq worker that serves its queues only while holding their locks.

Owns the worker's life: wait for each queue's Redis lock (a second worker on the
same queue waits here, dequeuing nothing, so jobs never run side by side and FIFO
order holds — SPEC §5.5); call `worker.recovery.recover(queue)` under the lock; then
run rq's work loop. The locks and the heartbeat key of each queue are refreshed on
every rq heartbeat (every `HEARTBEAT_INTERVAL` s, idle or busy); if a lock is ever
lost the worker stops taking jobs. SIGTERM/SIGINT: while waiting, exit at once;
while working, rq's warm shutdown lets the current job finish. Redis lost mid-job
(rq's loop gives up): kill the job, let go of the locks as soon as Redis answers
again, exit 1 to be restarted; recovery then resumes the release. What a job does is
`worker.jobs`; the lock and key names are `worker.queueing`'s.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError, RedisError
from redis.lock import Lock
from rq import Worker
from rq.exceptions import StopRequested
from rq.worker import WorkerStatus

from worker import queueing, sidecars
from worker.config import Settings

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED = 0, 1
ORPHAN_CHECK_INTERVAL = 0.5
RELEASE_RETRY_INTERVAL = 0.5


class LockLost(Exception):
    """Another worker holds a queue lock this worker thought it held."""


class QueueLocks:
    """The locks (and heartbeat keys) of the queues one worker serves."""

    def __init__(self, redis: Redis, queues: list[str], name: str) -> None:
        self.redis, self.name = redis, name
        self.locks = {q: queueing.queue_lock(redis, q) for q in sorted(set(queues))}

    def acquire(self, stopping: threading.Event) -> bool:
        """Take every lock in sorted order, waiting as long as needed; False if asked to stop."""
        for queue, lock in self.locks.items():
            announced = False
            while not self._try(lock):
                if stopping.is_set():
                    return False
                if not announced:
                    holder = queueing.lock_holder(self.redis, queue)
                    log.info("queue %s is served by worker %s; waiting for its lock", queue, holder)
                    announced = True
            log.info("holding the lock of queue %s", queue)
        return True

    def _try(self, lock: Lock) -> bool:
        """One second's try; an unreachable Redis is waited out, not fatal."""
        try:
            return bool(lock.acquire(blocking=True, blocking_timeout=1.0, token=self.name))
        except RedisConnectionError as e:
            log.error("Redis is unreachable (%s); trying again", e)
            time.sleep(1.0)
            return False

    def refresh(self, state: str) -> None:
        """Extend every lock and write every heartbeat; raises LockLost if a lock is gone."""
        for queue, lock in self.locks.items():
            try:
                lock.reacquire()
            except LockError as e:
                raise LockLost(f"lost the lock of queue {queue}: {e}") from e
            beat = {"worker": self.name, "pid": os.getpid(), "host": socket.gethostname(),
                    "queues": list(self.locks), "state": state, "at": time.time()}
            self.redis.set(queueing.HEARTBEAT_KEY.format(queue=queue), json.dumps(beat),
                           ex=queueing.HEARTBEAT_TTL)

    def release(self, *, patience: float = 0.0, interrupted: threading.Event | None = None) -> None:
        """Let go of what this worker still holds (a standby worker may take over at once).

        While Redis cannot be reached, try again for up to `patience` seconds, until
        `interrupted` is set: a restarted Redis still holds the lock (persisted with its
        expiry), and a worker restarted after this one would wait it out (`lock_timeout()`).
        """
        deadline = time.monotonic() + patience
        pending = dict(self.locks)
        while True:
            for queue, lock in list(pending.items()):
                try:
                    if lock.owned():
                        self.redis.delete(queueing.HEARTBEAT_KEY.format(queue=queue))
                        lock.release()
                except LockError:  # expired between the two calls: not ours any more
                    pass
                except RedisError as e:
                    unreachable = e
                    continue
                del pending[queue]
            if not pending:
                return
            if time.monotonic() >= deadline or (interrupted and interrupted.is_set()):
                log.error("could not let go of the lock of queue(s) %s (%s); it expires within "
                          "%d s", ", ".join(pending), unreachable, queueing.lock_timeout())
                return
            (interrupted or threading.Event()).wait(RELEASE_RETRY_INTERVAL)


class LockedWorker(Worker):
    """An rq Worker whose heartbeat also keeps its queue locks and heartbeat keys fresh."""

    queue_locks: QueueLocks
    stopping: threading.Event
    lock_lost = False
    asked_to_stop = False

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        super().heartbeat(timeout, pipeline)
        if self.is_horse:
            return  # the horse's parent keeps the locks
        try:
            state = self.get_state()
            self.queue_locks.refresh(getattr(state, "value", str(state)))  # "idle", "busy"
        except LockLost as e:
            log.error("%s; stopping after the current job, taking no more", e)
            self.lock_lost = self._stop_requested = True
            if self.get_state() != WorkerStatus.BUSY:
                raise StopRequested() from e

    def main_work_horse(self, job: Any, queue: Any) -> None:
        """In the forked horse: die with the worker, so its queue lock can expire quickly."""
        _exit_when_orphaned(os.getppid())
        super().main_work_horse(job, queue)

    def request_stop(self, signum: Any, frame: Any) -> None:
        """SIGTERM/SIGINT: rq's warm shutdown, remembered so the exit code says it was asked."""
        self.asked_to_stop = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def _install_signal_handlers(self) -> None:
        """rq's handlers replace ours; a signal that came in between still stops the loop."""
        super()._install_signal_handlers()  # type: ignore[no-untyped-call]
        if self.stopping.is_set():
            self._stop_requested = True


def _exit_when_orphaned(parent: int) -> None:
    """Exit at once if the worker that forked this horse dies (SIGKILL, OOM kill).

    rq puts the horse in a process group of its own, so it would otherwise outlive
    its worker and go on changing the cluster while a restarted worker, holding the
    lock the dead one could no longer refresh, recovers the same release.
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_INTERVAL)
        log.error("the worker that started this job is gone; stopping the job here")
        os._exit(EXIT_FAILED)

    threading.Thread(target=watch, name="bluegreen-orphan-watch", daemon=True).start()


def run(settings: Settings, queues: list[str], *, burst: bool = False) -> int:
    """Serve `queues` until stopped; the process's exit code."""
    redis = Redis.from_url(settings.redis_url)
    # The pid alone repeats across container restarts, and rq refuses a name still registered.
    name = f"bluegreen-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    locks = QueueLocks(redis, queues, name)
    stopping = threading.Event()
    _stop_on_signals(stopping)
    try:
        if not locks.acquire(stopping):
            log.info("stopped while waiting for a queue lock")
            return EXIT_OK
        with _keep_fresh(locks, "recovering"):
            recovered = all(_recover(queue) for queue in locks.locks)
        if not recovered:
            return EXIT_FAILED
        if stopping.is_set():
            return EXIT_OK
        helpers = sidecars.spawn(settings)  # only while this worker serves its queues
        try:
            return _work(redis, locks, name, stopping, burst=burst)
        finally:
            sidecars.stop(helpers)
    finally:
        stopping.set()
        interrupted = threading.Event()  # rq's signal handlers went with its work loop
        _stop_on_signals(interrupted)
        locks.release(patience=queueing.lock_timeout(), interrupted=interrupted)


def _work(redis: Redis, locks: QueueLocks, name: str, stopping: threading.Event, *,
          burst: bool) -> int:
    worker = LockedWorker(list(locks.locks), connection=redis, name=name,
                          worker_ttl=queueing.HEARTBEAT_INTERVAL + 15,
                          job_monitoring_interval=queueing.HEARTBEAT_INTERVAL)
    worker.queue_locks, worker.stopping = locks, stopping
    try:
        worker.work(burst=burst, logging_level="INFO")
    except RedisError as e:  # rq gives up on a Redis it cannot reach mid-job
        log.error("lost Redis while serving (%s); exiting to be restarted, the lock let go of "
                  "as soon as Redis answers", e)
        return EXIT_FAILED
    finally:
        _stop_horse(worker)
    if worker.lock_lost:
        return EXIT_FAILED
    if burst or worker.asked_to_stop or stopping.is_set():
        return EXIT_OK
    log.error("rq's work loop ended without being asked to (see above); exiting to be restarted")
    return EXIT_FAILED


def _stop_horse(worker: LockedWorker) -> None:
    """Kill a work horse rq left running (its loop ended on an error mid-job).

    Before the queue lock is let go of: a worker that takes the lock over recovers the
    same release, and must not find this one's job still changing the cluster. Only
    an unreaped child is killed (a pid rq already reaped may belong to anyone now).
    """
    pid = worker.horse_pid
    if not pid:
        return
    try:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return  # it had ended; now reaped
    except ChildProcessError:
        return  # rq reaped it
    log.error("stopping the job still running in work horse %d", pid)
    worker.kill_horse(signal.SIGKILL)
    os.waitpid(pid, 0)


def _recover(queue: str) -> bool:
    """Run `worker.recovery.recover(queue)`; False if it failed."""
    recover = importlib.import_module("worker.recovery").recover
    try:
        recover(queue)
    except Exception:
        log.exception("recovery of queue %s failed; not serving it (restart to try again)", queue)
        return False
    return True


@contextlib.contextmanager
def _keep_fresh(locks: QueueLocks, state: str) -> Iterator[None]:
    """Refresh locks and heartbeats from a thread while the main thread recovers.

    Used only before rq's work loop starts: rq forks for every job, and a thread
    holding a connection at fork time is best avoided.
    """
    done = threading.Event()

    def beat() -> None:
        while not done.is_set():
            try:
                locks.refresh(state)
            except Exception:  # logged; the main thread decides what happens next
                log.exception("could not refresh the queue locks")
            done.wait(queueing.HEARTBEAT_INTERVAL)

    thread = threading.Thread(target=beat, name="bluegreen-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _stop_on_signals(stopping: threading.Event) -> None:
    """Until rq's work loop installs its own handlers, SIGTERM/SIGINT set `stopping`."""
    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("got %s; stopping", signal.Signals(signum).name)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
