"""Whole releases through a real `bluegreen worker` process, watched by the invariant monitor.

Covers the seed's cycle (v1.0-green → promote → v2.0-blue → promote → rollback →
decommission) with what users get through the ingress, with and without the test
cookie, at each stage, and zero failed default requests under steady load while the
default route switches colour; API errors injected mid-step (retried, or the release
fails cleanly with live traffic untouched); and that the monitor itself catches a
violation made by hand, so its silence means something.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from conftest import Sandbox
from flows import Flow, S, app_body, wait_until
from invariants import Monitor

from worker.colors import Color
from worker.kube import Cluster
from worker.releases import ReleaseStore

PROMOTED = (S.AWAITING_PROMOTION, S.LIVE, S.STANDBY)


@pytest.fixture
def make_flow(sandbox: Sandbox, redis: redis_lib.Redis, redis_url: str,
              tmp_path: Path) -> Iterator[Callable[..., Flow]]:
    flows: list[Flow] = []

    def make(**overrides: Any) -> Flow:
        flows.append(Flow(sandbox, redis, redis_url, tmp_path, {"myapp": app_body(**overrides)}))
        return flows[-1]
    yield make
    for flow in flows:
        flow.stop_workers()


def monitor_for(flow: Flow) -> Monitor:
    """A monitor that accepts on the default route only releases that passed their tests."""
    store = ReleaseStore(redis_lib.Redis.from_url(flow.redis_url))

    def promotable(release_id: str) -> bool:
        release = store.get(release_id)
        return release is not None and release.state in PROMOTED
    return Monitor(api=flow.sandbox.api, ingress=flow.sandbox.ingress, release_ok=promotable)


def seen(flow: Flow) -> tuple[str | None, str | None]:
    """Who answers default traffic, and who answers the test cookie."""
    return flow.served_by(), flow.served_by(cookie=True)


@pytest.mark.slow
def test_seed_cycle_with_steady_default_traffic(make_flow: Callable[..., Flow]) -> None:
    flow = make_flow()
    flow.start_worker()
    with monitor_for(flow) as monitor:
        v1 = flow.release("v1.0-green")
        flow.wait(v1, S.AWAITING_PROMOTION)
        assert flow.ingress("/")[0] == 404 and flow.served_by(cookie=True) == "green v1.0"
        flow.command("promote", v1)
        flow.wait(v1, S.LIVE)
        assert seen(flow) == ("green v1.0", "green v1.0")

        v2 = flow.release("v2.0-blue")
        flow.wait(v2, S.AWAITING_PROMOTION)
        assert seen(flow) == ("green v1.0", "blue v2.0")
        flow.command("promote", v2)
        flow.wait(v2, S.LIVE)
        assert flow.get(v1).state is S.STANDBY
        assert seen(flow) == ("blue v2.0", "blue v2.0")
        monitor.wait_for_traffic(20)

        flow.command("rollback", v2)
        flow.wait(v2, S.ROLLED_BACK)
        flow.wait(v1, S.LIVE)
        assert seen(flow) == ("green v1.0", "green v1.0")
        monitor.wait_for_traffic(20)

        flow.command("decommission", v2, color=Color.BLUE)
        flow.wait(v2, S.DECOMMISSIONED)
        assert seen(flow) == ("green v1.0", "green v1.0")
        monitor.wait_for_traffic(20)
    assert monitor.violations == []
    judged = monitor.answers_since(0)
    assert len(judged) > 50 and {a.status for a in judged} == {200}
    assert {(a.color, a.version) for a in judged} == {("green", "v1.0"), ("blue", "v2.0")}


@pytest.mark.slow
def test_api_errors_mid_step_are_retried_or_fail_cleanly(make_flow: Callable[..., Flow]) -> None:
    flow = make_flow()
    flow.start_worker()
    with monitor_for(flow) as monitor:
        v1 = flow.release("v1.0-green")
        flow.wait(v1, S.AWAITING_PROMOTION)
        flow.command("promote", v1)
        flow.wait(v1, S.LIVE)

        since = flow.last_request()
        flow.fault(path="/deployments/myapp-blue$", method="PATCH", status=500, count=3)
        flow.fault(path="/destinationrules/", method="PATCH", status=409, count=2)
        v2 = flow.release("v2.0-blue")
        flow.wait(v2, S.AWAITING_PROMOTION)
        mine = [r for r in flow.api_requests(since) if r["user_agent"] == f"bluegreen/{v2}"]
        assert [r["status"] // 100 for r in mine if r["path"].endswith("/myapp-blue")
                and r["method"] == "PATCH"] == [5, 5, 5, 2]  # 201: created on the 4th try
        assert [r["status"] for r in mine if "/destinationrules/" in r["path"]
                and r["method"] == "PATCH"][:3] == [409, 409, 200]

        flow.fault(path="/virtualservices/", method="PATCH", status=503)  # for good
        v3 = flow.release("v3.0-blue")
        failed = flow.wait(v3, S.FAILED, timeout=90)
        assert failed.error is not None
        assert "the API server is unavailable (503) after 6 attempts" in failed.error
        assert "cleaning up failed too" in flow.store.audit(v3)[-1].message
        flow.clear_faults()
        assert flow.served_by() == "green v1.0"
        assert flow.get(v2).state is S.SUPERSEDED
    assert monitor.violations == []


def test_the_monitor_catches_violations_made_by_hand(make_flow: Callable[..., Flow]) -> None:
    flow = make_flow()
    v1 = flow.release("v1.0-green")
    flow.run_jobs()
    flow.command("promote", v1)
    flow.run_jobs()
    cluster = Cluster(kubeconfig=flow.sandbox.kubeconfig, user_agent="by-hand")
    with monitor_for(flow) as monitor:
        monitor.wait_for_traffic(5)
        assert monitor.violations == []
        vs = cluster.get_virtual_service(namespace="default", name="myapp-blue-green")
        assert vs is not None
        vs["spec"]["http"][-1]["route"][0]["destination"]["subset"] = "purple"
        cluster.apply(manifest={"apiVersion": vs["apiVersion"], "kind": "VirtualService",
                                "metadata": {"name": "myapp-blue-green", "namespace": "default"},
                                "spec": vs["spec"]})
        wait_until(lambda: len(monitor.violations) >= 2, 5, "the purple subset to be noticed")
        vs["spec"]["http"][-1]["route"][0]["destination"]["subset"] = "green"
        cluster.apply(manifest={"apiVersion": vs["apiVersion"], "kind": "VirtualService",
                                "metadata": {"name": "myapp-blue-green", "namespace": "default"},
                                "spec": vs["spec"]})
        cluster.delete_deployment(namespace="default", name="myapp-green")
        wait_until(lambda: len(monitor.violations) >= 3, 5, "the deletion to be noticed")
    cluster.close()
    kinds = {v.split(":")[0] for v in monitor.violations}
    assert {"5.4 subset missing", "default traffic failed", "5.3 live deployment missing"} <= kinds
