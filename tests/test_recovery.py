"""SPEC §5.7: nothing accepted is lost when a worker dies mid-step; restarts resume safely.

A real `bluegreen worker` is SIGKILLed (with its work horse, as a node or OOM kill
would) while a release waits for its rollout; a tag pushed while no worker runs waits
in the queue. The dead worker's queue lock would expire on its own after the longest
job timeout; the test moves that clock forward by shortening the lock's TTL. The next
worker's recovery takes the dead job out of rq's StartedJobRegistry, re-checks the
cluster, resumes the release, and then serves the queue. In-process tests show that a
release whose cluster changed meanwhile is failed with why, not forced through.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from conftest import Sandbox
from flows import Flow, S, app_body, environ, wait_until
from invariants import Monitor
from proctools import descendants
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry
from sandbox_objects import pid_exists

from worker import recovery
from worker.queueing import LOCK_KEY
from worker.releases import Release


@pytest.fixture
def flow(sandbox: Sandbox, redis: redis_lib.Redis, redis_url: str,
         tmp_path: Path) -> Iterator[Flow]:
    world = Flow(sandbox, redis, redis_url, tmp_path, {"myapp": app_body(rollout_timeout=30)})
    yield world
    world.stop_workers()


def as_if_a_worker_died(flow: Flow, tag: str, *, step: str) -> Release:
    """A release a worker had taken to `deploying` (at `step`) before it died."""
    rid = flow.release(tag)
    flow.store.transition(rid, S.CHECKING, actor="worker", step="sanity_check", message="")
    flow.store.transition(rid, S.DEPLOYING, actor="worker", step="deploy", message="")
    return flow.store.set_step(rid, step)


@pytest.mark.slow
def test_the_work_horse_dies_with_its_worker(flow: Flow) -> None:
    """A worker SIGKILLed alone leaves no job running: its lock may then expire safely."""
    worker = flow.start_worker()
    rid = flow.release("v1.0-slow-ready-green")
    wait_until(lambda: flow.get(rid).step == "deploy: rollout", 30, "the rollout wait")
    family = descendants(worker.pid)
    assert family, "the worker runs its job in a forked work horse"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)

    wait_until(lambda: not any(pid_exists(pid) for pid in family), 10,
               "the work horse and sidecars to exit")
    assert flow.get(rid).state is S.DEPLOYING  # left for the next worker's recovery


@pytest.mark.slow
def test_worker_killed_mid_deploy_resumes_on_restart(flow: Flow) -> None:
    v1 = flow.promoted("v1.0-green")
    with Monitor(api=flow.sandbox.api, ingress=flow.sandbox.ingress) as monitor:
        worker = flow.start_worker()
        v2 = flow.release("v2.0-slow-ready-blue")
        wait_until(lambda: flow.get(v2).step == "deploy: rollout", 30, "the rollout wait")
        flow.kill_worker(worker)
        queue = Queue("deploy", connection=flow.redis)
        assert v2 in StartedJobRegistry(queue=queue).get_job_ids(cleanup=False)
        assert flow.get(v2).state is S.DEPLOYING

        v3 = flow.release("v2.1-blue")  # accepted while no worker runs
        flow.redis.pexpire(LOCK_KEY.format(queue="deploy"), 100)  # the lock's timeout passes
        flow.start_worker()
        flow.wait(v3, S.AWAITING_PROMOTION, timeout=60)

        trail = flow.store.audit(v2)
        assert any(a.step == "recover" and "resuming" in a.message for a in trail)
        assert [a.state_to for a in trail if a.state_to][-2:] == ["awaiting_promotion",
                                                                  "superseded"]
        wait_until(lambda: StartedJobRegistry(queue=queue).get_job_ids(cleanup=False) == [],
                   10, "the jobs to finish")
        assert v2 in FailedJobRegistry(queue=queue).get_job_ids(cleanup=False)
        assert flow.get(v1).state is S.LIVE
        assert flow.served_by() == "green v1.0"
        assert flow.served_by(cookie=True) == "blue v2.1"
        monitor.wait_for_traffic(5)
    assert monitor.violations == []


def test_recovery_resumes_a_release_left_mid_deploy(flow: Flow) -> None:
    left = as_if_a_worker_died(flow, "v1.0-green", step="deploy: rollout")
    with environ(flow.env):
        outcomes = recovery.recover("deploy")
    assert [o["result"] for o in outcomes] == ["awaiting_promotion"]
    assert flow.get(left.id).state is S.AWAITING_PROMOTION
    assert flow.served_by(cookie=True) == "green v1.0"


def test_recovery_queues_again_a_queued_release_whose_job_was_lost(flow: Flow) -> None:
    lost, waiting = flow.release("v1.0-green"), flow.release("v2.0-blue")
    queue = Queue("deploy", connection=flow.redis)
    queue.remove(lost)  # taken off the queue, never started
    with environ(flow.env):
        assert recovery.recover("deploy") == []  # nothing run here: a rollback may wait in front
    assert queue.job_ids == [waiting, lost]
    flow.run_jobs()
    assert flow.get(lost).state is S.AWAITING_PROMOTION
    assert flow.get(waiting).state is S.AWAITING_PROMOTION


def test_recovery_fails_a_release_whose_colour_went_live_meanwhile(flow: Flow) -> None:
    flow.promoted("v1.0-green")
    v2 = flow.promoted("v2.0-blue")
    left = as_if_a_worker_died(flow, "v3.0-green", step="deploy: deployment")
    flow.command("rollback", v2)  # green (v1.0) goes live again before any worker restarts
    Queue("deploy", connection=flow.redis).remove(left.id)  # its job died with the worker
    flow.run_jobs()
    with environ(flow.env):
        outcomes = recovery.recover("deploy")
    assert [o["result"] for o in outcomes] == ["failed"]
    failed = flow.get(left.id)
    assert failed.state is S.FAILED
    assert failed.error is not None and "green, which is live" in failed.error
    assert flow.served_by() == "green v1.0"  # the live colour was never touched


@pytest.mark.slow
def test_worker_killed_mid_promote_finishes_it_on_restart(flow: Flow) -> None:
    v1 = flow.promoted("v1.0-green")
    v2 = flow.release("v2.0-blue")
    flow.run_jobs()
    flow.fault(path="/virtualservices/", method="PATCH", latency=3, count=1)
    with Monitor(api=flow.sandbox.api, ingress=flow.sandbox.ingress) as monitor:
        worker = flow.start_worker()
        queued = flow.command("promote", v2)
        wait_until(lambda: queued.job_id in StartedJobRegistry(
            queue=Queue("deploy", connection=flow.redis)).get_job_ids(cleanup=False), 20,
            "the promote job to start")
        since = flow.last_request() - 50
        wait_until(lambda: any("/destinationrules/" in r["path"] and r["method"] == "PATCH"
                               for r in flow.api_requests(since)), 20, "the switch to begin")
        time.sleep(0.5)  # the VirtualService write is under way (it takes 3 s)
        flow.kill_worker(worker)
        assert flow.get(v2).state is S.AWAITING_PROMOTION
        flow.redis.pexpire(LOCK_KEY.format(queue="deploy"), 100)  # the lock's timeout passes
        flow.start_worker()
        flow.wait(v2, S.LIVE, timeout=30)
        assert flow.get(v1).state is S.STANDBY
        assert flow.served_by() == "blue v2.0"
        monitor.wait_for_traffic(5)
    assert monitor.violations == []
