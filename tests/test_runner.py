"""The worker process: real `bluegreen worker` subprocesses on a real Redis.

Covers: a worker runs queued jobs and keeps a heartbeat; a second worker on the
same queue waits for the queue lock instead of running jobs alongside, and takes
over (in FIFO order, never overlapping) when the first stops; SIGTERM finishes the
current job and exits 0; the queue status shows the running job and its step; a
worker waits out a lock held by another (dead) worker; a worker that loses Redis
mid-job stops the job and lets go of its lock once Redis is back; `--burst` drains
the queue and exits; an invalid configuration or an unknown queue exits 2 with a message.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import runner_jobs
from conftest import ROOT, RedisServer
from procs import wait_until
from proctools import free_port
from rq import Queue

from worker import queueing, runner
from worker.api import Engine
from worker.colors import Color
from worker.config import load_settings
from worker.releases import Release, ReleaseState

BLUEGREEN = str(Path(sys.executable).parent / "bluegreen")
LOCK = queueing.LOCK_KEY.format(queue="deploy")
HEARTBEAT = queueing.HEARTBEAT_KEY.format(queue="deploy")


class Workers:
    """Starts `bluegreen worker` processes; stops any left running at the end."""

    def __init__(self, redis_url: str, tmp_path: Path) -> None:
        self.redis_url, self.tmp_path = redis_url, tmp_path
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        full_env = {k: v for k, v in os.environ.items() if k != "BLUEGREEN_CONFIG"}
        full_env.update(REDIS_URL=self.redis_url, PYTHONPATH=str(ROOT / "tests"), **(env or {}))
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "w+")
        proc = subprocess.Popen([BLUEGREEN, "worker", *args], env=full_env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        return proc

    def log(self, index: int) -> str:
        return (self.tmp_path / f"worker-{index}.log").read_text()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(redis_url, tmp_path)
    yield started
    started.stop_all()


def runs(redis: redis_lib.Redis, key: str = runner_jobs.RUNS_KEY) -> list[dict[str, Any]]:
    return [json.loads(item) for item in redis.lrange(key, 0, -1)]


def holder(redis: redis_lib.Redis) -> str | None:
    raw = redis.get(LOCK)
    return raw.decode() if raw else None


def enqueue(redis: redis_lib.Redis, label: str, seconds: float = 0.0) -> None:
    Queue("deploy", connection=redis).enqueue("runner_jobs.record", label, seconds)


def test_worker_runs_a_job_and_keeps_a_heartbeat(redis: redis_lib.Redis,
                                                 workers: Workers) -> None:
    proc = workers.start()
    wait_until(lambda: redis.exists(HEARTBEAT), what="the heartbeat")
    enqueue(redis, "a")
    done = wait_until(lambda: runs(redis), what="the job to run")
    assert [r["label"] for r in done] == ["a"]
    assert done[0]["worker"] == proc.pid
    beat = json.loads(redis.get(HEARTBEAT) or b"{}")
    assert beat["pid"] == proc.pid and beat["worker"] == holder(redis)
    assert 0 < redis.ttl(HEARTBEAT) <= queueing.HEARTBEAT_TTL
    status = Engine(load_settings({}), redis).queue_status()
    assert status[0]["queue"] == "deploy" and status[0]["worker"]["alive"] is True
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert not redis.exists(LOCK) and not redis.exists(HEARTBEAT)


def test_second_worker_waits_then_takes_over_without_overlap(redis: redis_lib.Redis,
                                                             workers: Workers) -> None:
    first = workers.start()
    wait_until(lambda: redis.exists(HEARTBEAT), what="the first worker's heartbeat")
    second = workers.start()
    wait_until(lambda: "waiting for its lock" in workers.log(1), what="the second to wait")
    for label in "abcd":
        enqueue(redis, label, 0.6)
    wait_until(lambda: redis.llen(runner_jobs.STARTED_KEY), what="the first job to start")
    first.send_signal(signal.SIGTERM)  # warm shutdown: finishes job a, then lets go
    assert first.wait(15) == 0
    done = wait_until(lambda: len(runs(redis)) == 4 and runs(redis), what="all four jobs")
    assert [r["label"] for r in done] == list("abcd")  # FIFO across the handover
    assert [r["worker"] for r in done] == [first.pid] + [second.pid] * 3
    for earlier, later in itertools.pairwise(done):
        assert later["start"] >= earlier["end"], f"{later['label']} overlapped {earlier['label']}"
    assert json.loads(redis.get(HEARTBEAT) or b"{}")["pid"] == second.pid


def test_sigterm_while_waiting_for_the_lock_exits_cleanly(redis: redis_lib.Redis,
                                                          workers: Workers) -> None:
    workers.start()
    wait_until(lambda: redis.exists(HEARTBEAT), what="the first worker's heartbeat")
    owner = holder(redis)
    waiting = workers.start()
    wait_until(lambda: "waiting for its lock" in workers.log(1), what="the second to wait")
    waiting.send_signal(signal.SIGTERM)
    assert waiting.wait(10) == 0
    assert holder(redis) == owner


def test_a_lock_left_by_a_dead_worker_is_waited_out(redis: redis_lib.Redis,
                                                    workers: Workers) -> None:
    redis.set(LOCK, "bluegreen-gone-1", px=2500)  # as if its holder died 2.5 s before expiry
    workers.start()
    enqueue(redis, "after")
    time.sleep(1.0)
    assert runs(redis) == []
    done = wait_until(lambda: runs(redis), what="the job after the lock expired")
    assert done[0]["label"] == "after"


def test_a_worker_that_loses_redis_mid_job_lets_go_of_its_lock_when_redis_is_back(
        tmp_path: Path) -> None:
    # A Redis of its own that keeps its data across a restart, as a production one does:
    # the lock comes back with it, and a worker restarted after this one would wait it out.
    server = RedisServer(port=free_port(), dir=tmp_path)
    server.start(appendonly=True)
    workers = Workers(server.url, tmp_path)
    redis = redis_lib.Redis.from_url(server.url)
    try:
        first = workers.start()
        wait_until(lambda: redis.exists(HEARTBEAT), what="the heartbeat")
        name = holder(redis)
        Queue("deploy", connection=redis).enqueue("runner_jobs.keep_writing", "long", 60)
        started = wait_until(lambda: redis.lrange(runner_jobs.STARTED_KEY, 0, -1),
                             what="the job to start")
        horse = json.loads(started[0])["horse"]
        server.stop()
        wait_until(lambda: "lost Redis" in workers.log(0) or first.poll() is not None,
                   what="the worker to see Redis gone")
        server.start(appendonly=True)
        assert first.wait(30) == 1, workers.log(0)  # to be restarted by its supervisor
        assert not Path(f"/proc/{horse}").exists(), "the job outlived its worker"
        assert holder(redis) is None, f"the lock still held by {name}"
        assert not redis.exists(HEARTBEAT)
        workers.start()  # as its supervisor would: it takes the lock at once
        Queue("deploy", connection=redis).enqueue("runner_jobs.record", "after")
        done = wait_until(lambda: runs(redis), what="the next job")
        assert done[0]["label"] == "after"
        assert "waiting for its lock" not in workers.log(1)
    finally:
        workers.stop_all()
        redis.close()
        server.stop()


def test_a_job_rq_left_running_is_killed_before_the_lock_is_let_go_of(
        redis: redis_lib.Redis) -> None:
    # rq's loop can end on a Redis error while its horse still runs (monitoring it);
    # a worker taking the lock over would then recover the release that horse is running.
    worker = runner.LockedWorker(["deploy"], connection=redis)
    horse = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)  # a process group of its own, as rq's
    worker._horse_pid = horse.pid
    runner._stop_horse(worker)
    assert horse.poll() is not None or not Path(f"/proc/{horse.pid}").exists()
    ended = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    ended.wait()  # reaped: its pid may be anyone's by now, so nothing is killed
    worker._horse_pid = ended.pid
    runner._stop_horse(worker)  # neither kills nor waits for what is not its child


def test_invalid_config_exits_2_naming_the_key(workers: Workers, tmp_path: Path) -> None:
    config = tmp_path / "bluegreen.yml"
    config.write_text("apps:\n  myapp:\n    rollout_timeout: x\n")
    proc = workers.start(env={"BLUEGREEN_CONFIG": str(config)})
    assert proc.wait(15) == 2
    assert "apps.myapp.rollout_timeout: must be a positive number, got 'x'" in workers.log(0)


def test_unknown_queue_exits_2(workers: Workers) -> None:
    proc = workers.start("--queue", "nope")
    assert proc.wait(15) == 2
    assert "unknown queue 'nope'" in workers.log(0)


def test_queue_status_shows_the_running_job_and_its_step(redis: redis_lib.Redis,
                                                         workers: Workers) -> None:
    engine = Engine(load_settings({}), redis)
    release = Release(id="myapp-v2-0-green-0000abcd", app="myapp", color=Color.GREEN,
                      tag="v2.0-green", version="v2.0", commit="c" * 40, forge="github",
                      delivery_id="d", repository="acme/myapp", state=ReleaseState.QUEUED,
                      created_at=1.0, updated_at=1.0)
    proc = workers.start()  # first: its recovery would resume a release left mid-step
    wait_until(lambda: b'"state": "idle"' in (redis.get(HEARTBEAT) or b""), what="idle")
    engine.store.add(release, message="recorded")
    engine.store.transition(release.id, ReleaseState.CHECKING, actor="worker", step="sanity",
                            message="checking")
    engine.store.set_step(release.id, "deploy: rollout")
    Queue("deploy", connection=redis).enqueue("runner_jobs.record", "slow", 3.0,
                                              job_id=release.id,
                                              meta={"release": release.id, "action": "release"})
    wait_until(lambda: redis.llen(runner_jobs.STARTED_KEY), what="the job to start")
    [status] = engine.queue_status()
    running = status["running"]
    assert running["job_id"] == release.id and running["step"] == "deploy: rollout"
    assert running["state"] == "checking" and running["started_at"] is not None
    assert status["worker"]["alive"] and status["worker"]["pid"] == proc.pid
    proc.send_signal(signal.SIGTERM)  # warm shutdown: the job still finishes
    assert proc.wait(15) == 0
    assert [r["label"] for r in runs(redis)] == ["slow"]


def test_burst_runs_what_is_queued_then_exits(redis: redis_lib.Redis, workers: Workers) -> None:
    for label in "xy":
        enqueue(redis, label)
    proc = workers.start("--burst", "--queue", "deploy")
    assert proc.wait(30) == 0
    assert [r["label"] for r in runs(redis)] == ["x", "y"]
    assert not redis.exists(LOCK) and not redis.exists(HEARTBEAT)
