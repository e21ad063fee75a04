"""Cluster snapshots (worker.snapshot): what they hold, and drift between cluster and records.

Pure: the drift rules on hand-built cluster views and records (a consistent picture has
none; each kind of outside change is named with a message a person can act on; a colour
being deployed right now is not drift). Against the sandbox: a release run by a real rq
worker leaves a snapshot of both colours; changes made with kubectl (default route
switched, live Deployment deleted, image changed) show up as drift at the next idle
refresh, and the idle sidecar refreshes by itself; a newer snapshot is never overwritten
by one that started before it; an unreachable cluster is reported with the last view kept.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from conftest import Sandbox
from flows import Flow, S, app_body, wait_until

from worker import clusterview, snapshot
from worker.colors import Color
from worker.config import parse_settings
from worker.kube import Cluster, DeploymentInfo
from worker.releases import Release

APP = parse_settings({}, {}).apps["myapp"]
BLUE, GREEN = Color.BLUE, Color.GREEN


def release(id_: str, color: Color, state: S, tag: str = "v1.0") -> Release:
    return Release(id=id_, app="myapp", color=color, tag=f"{tag}-{color}", version=tag,
                   commit="c" * 40, forge="github", delivery_id="d", repository="acme/myapp",
                   state=state, created_at=1.0, updated_at=2.0)


def deployment(r: Release | None, *, image: str | None = None, ready: int = 1) -> DeploymentInfo:
    return DeploymentInfo(
        name="x", color=r.color if r else None, release_id=r.id if r else None,
        image=image or (f"registry.example.com/acme/myapp:{r.version}" if r else "x"),
        replicas=1, ready_replicas=ready, updated_replicas=1, available_replicas=ready,
        current_replicas=1,
        generation=1, observed_generation=1, labels={})


LIVE = release("r-live", BLUE, S.LIVE)
WAIT = release("r-wait", GREEN, S.AWAITING_PROMOTION, "v2.0")


def view(default: str | None = "blue", test: str | None = "green",
         blue: DeploymentInfo | None = None, green: DeploymentInfo | None = None,
         subsets: tuple[str, ...] = ("blue", "green")) -> snapshot.Observed:
    referenced = {s for s in (default, test) if s}
    return snapshot.Observed(vs_exists=True, default=default, test=test, subsets=subsets,
                             referenced=frozenset(referenced),
                             deployments={BLUE: blue, GREEN: green})


def records(live: Release | None = LIVE, green: Release | None = WAIT,
            staged: tuple[Release, ...] = (WAIT,)) -> snapshot.Records:
    return snapshot.Records(
        live=live, deployed={BLUE: live, GREEN: green},
        staged={c: tuple(r for r in staged if r.color is c) for c in Color}, labelled={})


def kinds(seen: snapshot.Observed, rec: snapshot.Records) -> list[str]:
    return [d["kind"] for d in snapshot.find_drift(APP, seen, rec)]


def test_a_consistent_picture_has_no_drift() -> None:
    assert kinds(view(blue=deployment(LIVE), green=deployment(WAIT)), records()) == []


@pytest.mark.parametrize(("seen", "rec", "expected", "words"), [
    (view(default="green", blue=deployment(LIVE), green=deployment(WAIT)), records(),
     ["route"], "to green, but the live release v1.0-blue (r-live) is on blue"),
    (view(test=None, blue=deployment(LIVE)), records(live=None, green=None, staged=()),
     ["route"], "but no release of myapp is live"),
    (view(green=deployment(WAIT)), records(),
     ["deployment"], "Deployment default/myapp-blue is gone, but the live release v1.0-blue"),
    (view(blue=deployment(WAIT), green=deployment(WAIT)), records(),
     ["release_label"], "carries release r-wait, but the records say the live release"),
    (view(blue=deployment(LIVE, image="evil:latest"), green=deployment(WAIT)), records(),
     ["image"], "runs image evil:latest, but v1.0-blue (r-live) was deployed with "
                "registry.example.com/acme/myapp:v1.0"),
    (view(blue=deployment(LIVE, ready=0), green=deployment(WAIT)), records(),
     ["not_ready"], "serves live traffic with 0/1 pods ready"),
    (view(test="green", blue=deployment(LIVE), green=deployment(WAIT)),
     records(green=dataclasses.replace(WAIT, state=S.FAILED), staged=()),
     ["test_route"], "sends Cookie test=true traffic to green, but no release"),
    (view(subsets=("blue",), blue=deployment(LIVE), green=deployment(WAIT)), records(),
     ["subset"], "routes to subset green, which its DestinationRule lacks"),
])
def test_each_outside_change_is_named(seen: snapshot.Observed, rec: snapshot.Records,
                                      expected: list[str], words: str) -> None:
    found = snapshot.find_drift(APP, seen, rec)
    assert [d["kind"] for d in found] == expected
    assert words in found[0]["message"]


def test_a_colour_being_deployed_is_not_drift() -> None:
    deploying = release("r-new", GREEN, S.DEPLOYING, "v3.0")
    standby = release("r-old", GREEN, S.STANDBY, "v0.9")
    rec = records(green=standby, staged=(deploying,))
    assert kinds(view(blue=deployment(LIVE), green=deployment(deploying)), rec) == []
    idle = records(green=standby, staged=())
    assert kinds(view(test=None, blue=deployment(LIVE), green=deployment(deploying)),
                 idle) == ["release_label"]


# -- against the sandbox ------------------------------------------------------------------------


@pytest.fixture
def flow(sandbox: Sandbox, redis: redis_lib.Redis, redis_url: str,
         tmp_path: Path) -> Iterator[Flow]:
    made = Flow(sandbox, redis, redis_url, tmp_path, {"myapp": app_body()})
    yield made
    made.stop_workers()


def kubectl(flow: Flow, *args: str) -> None:
    env = {**flow.sandbox.env(), "HOME": str(flow.tmp)}
    done = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def live_release(flow: Flow) -> str:
    """v1.0-green released and promoted by an in-process rq worker."""
    v1 = flow.release("v1.0-green")
    flow.run_jobs()
    flow.command("promote", v1)
    flow.run_jobs()
    assert flow.get(v1).state is S.LIVE
    return v1


def idle_refresh(flow: Flow, **kwargs: Any) -> dict[str, Any]:
    """What the sidecar does once, now; the stored snapshot."""
    cluster = flow.cluster("bluegreen/snapshot")
    try:
        snapshot.refresh_idle(flow.settings, flow.redis, cluster, every=0, **kwargs)
    finally:
        cluster.close()
    found = clusterview.load(flow.redis, "myapp")
    assert found is not None
    return found


def test_a_release_leaves_a_snapshot_of_both_colours(flow: Flow) -> None:
    v1 = live_release(flow)
    snap = clusterview.load(flow.redis, "myapp")
    assert snap is not None
    assert (snap["source"], snap["live"], snap["drift"]) == ("job", "green", [])
    assert snap["error"] is None
    assert time.time() - snap["taken_at"] < 30
    green = snap["colors"]["green"]
    assert (green["release"], green["version"], green["tag"], green["state"]) == (
        v1, "v1.0", "v1.0-green", "live")
    assert (green["ready"], green["desired"], green["image"]) == (1, 1, "sandbox.local/myapp:v1.0")
    assert snap["colors"]["blue"] == {"deployment": "myapp-blue", "exists": False}
    assert snap["routes"]["default"] == "green" and snap["routes"]["test"] is None
    assert snap["live_since"] == flow.get(v1).updated_at


def test_a_release_shows_as_running_before_its_first_look_at_the_cluster(flow: Flow) -> None:
    # The snapshot taken as a step starts reads the cluster (slow here: 1.5 s a read); the
    # release must not show `queued` for as long, its job running.
    flow.fault(path="/virtualservices/myapp-blue-green", method="GET", latency=1.5, count=2)
    since = flow.last_request()
    v1 = flow.release("v1.0-green")
    flow.start_worker()
    flow.wait(v1, S.AWAITING_PROMOTION)
    agent = f"bluegreen/{v1}"
    first = min(r["received"] for r in flow.api_requests(since) if r["user_agent"] == agent)
    checking = next(a for a in flow.store.audit(v1) if a.step == "sanity_check")
    assert checking.at < first, "the release was queued while its job read the cluster"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_changes_made_with_kubectl_show_up_as_drift(flow: Flow) -> None:
    v1 = live_release(flow)
    kubectl(flow, "patch", "virtualservice", "myapp-blue-green", "--type=json", "-p",
            '[{"op": "replace", "path": "/spec/http/0/route/0/destination/subset", '
            '"value": "blue"}]')
    snap = idle_refresh(flow)
    assert snap["source"] == "idle" and snap["live"] == "blue"
    assert [d["kind"] for d in snap["drift"]] == ["route"]
    assert snap["drift"][0]["message"] == (
        "VirtualService default/myapp-blue-green sends default traffic to blue, but the live "
        f"release v1.0-green ({v1}) is on green")

    kubectl(flow, "set", "image", "deployment/myapp-green", "myapp=sandbox.local/myapp:hotfix")
    wait_until(lambda: "image" in [d["kind"] for d in idle_refresh(flow)["drift"]], 20,
               "image drift")
    kubectl(flow, "delete", "deployment", "myapp-green")
    kinds_now = [d["kind"] for d in idle_refresh(flow)["drift"]]
    assert kinds_now == ["route", "deployment"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_sidecar_refreshes_idle_apps_by_itself(flow: Flow,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    live_release(flow)
    monkeypatch.setenv("BLUEGREEN_SNAPSHOT_INTERVAL", "0.3")
    stop = threading.Event()
    thread = snapshot.start(flow.settings, flow.redis, stop)
    try:
        kubectl(flow, "delete", "deployment", "myapp-green")
        snap = wait_until(lambda: _with_drift(flow), 20, "the sidecar to see the deletion")
        assert snap["source"] == "idle"
        assert "Deployment default/myapp-green is gone" in snap["drift"][0]["message"]
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def _with_drift(flow: Flow) -> dict[str, Any] | None:
    snap = clusterview.load(flow.redis, "myapp")
    return snap if snap and snap["drift"] else None


def test_a_newer_snapshot_is_never_overwritten_by_an_older_read(flow: Flow) -> None:
    live_release(flow)
    newer = {"app": "myapp", "taken_at": time.time() + 60, "started_at": time.time() + 60,
             "live": "blue", "drift": []}
    flow.redis.set(clusterview.key("myapp"), clusterview.encode(newer))
    cluster = flow.cluster()
    try:
        assert snapshot.refresh(flow.redis, cluster, flow.store, flow.settings.apps["myapp"],
                                source="idle") is None
    finally:
        cluster.close()
    assert clusterview.load(flow.redis, "myapp") == newer


def test_an_unreachable_cluster_is_reported_and_the_last_view_kept(flow: Flow) -> None:
    live_release(flow)
    before = clusterview.load(flow.redis, "myapp")
    flow.sandbox.proc.terminate()
    flow.sandbox.proc.wait(15)
    cluster = Cluster(kubeconfig=flow.sandbox.kubeconfig, attempts=1)
    try:
        snapshot.refresh(flow.redis, cluster, flow.store, flow.settings.apps["myapp"],
                         source="idle")
    finally:
        cluster.close()
    after = clusterview.load(flow.redis, "myapp")
    assert after is not None and before is not None
    assert "cannot reach the API server" in after["error"]
    assert after["colors"] == before["colors"] and after["taken_at"] == before["taken_at"]
