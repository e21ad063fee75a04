"""The Deployment controller's arithmetic (`sandbox.rollouts`), as pure functions.

Covers the rolling-update fenceposts and their rounding (maxSurge up, maxUnavailable
down, never both 0), how far the new ReplicaSet may grow within maxSurge, how far
old ones may shrink while maxUnavailable holds (unavailable replicas first, oldest
first), the status summed from ReplicaSets (old pods count in `replicas`), the
Progressing condition (what counts as progress; a finished rollout never times out),
and the revision history limit.
"""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import rollouts


def deploy(replicas: int, surge: int | str = "25%", unavailable: int | str = "25%",
           **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "generation": 2, **extra.pop("metadata", {})},
            "spec": {"replicas": replicas, "strategy": {"type": "RollingUpdate",
                                                        "rollingUpdate": {
                                                            "maxSurge": surge,
                                                            "maxUnavailable": unavailable}},
                     **extra},
            "status": {}}


def rs(name: str, replicas: int, available: int = 0, created: str = "2024-01-01T00:00:00Z",
       revision: int = 1, ready: int | None = None, pods: int | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created, "generation": 1,
                         "annotations": {rollouts.REVISION: str(revision)}},
            "spec": {"replicas": replicas},
            "status": {"replicas": replicas if pods is None else pods,
                       "readyReplicas": available if ready is None else ready,
                       "availableReplicas": available, "observedGeneration": 1}}


@pytest.mark.parametrize(("replicas", "surge", "unavailable", "expected"), [
    (4, "25%", "25%", (1, 1)),
    (3, "25%", "25%", (1, 0)),  # 0.75 pods: surge rounds up, unavailable down
    (10, "25%", "25%", (3, 2)),
    (1, "0%", "0%", (0, 1)),  # both 0 would never progress: unavailable becomes 1
    (5, 2, 0, (2, 0)),
])
def test_fenceposts_round_as_the_real_controller(replicas: int, surge: int | str,
                                                 unavailable: int | str,
                                                 expected: tuple[int, int]) -> None:
    assert rollouts.fenceposts(deploy(replicas, surge, unavailable)) == expected


def test_max_unavailable_is_capped_and_zero_for_recreate() -> None:
    assert rollouts.max_unavailable(deploy(2, 1, 5)) == 2
    recreate = deploy(4)
    recreate["spec"]["strategy"] = {"type": "Recreate"}
    assert rollouts.max_unavailable(recreate) == 0 and rollouts.max_surge(recreate) == 0


def test_the_new_replicaset_grows_only_within_max_surge() -> None:
    d = deploy(4, surge=1, unavailable=0)
    assert rollouts.new_rs_replicas(d, [rs("old", 4)], 0) == 1
    assert rollouts.new_rs_replicas(d, [rs("old", 4), rs("new", 1)], 1) == 1, "5 pods: full"
    assert rollouts.new_rs_replicas(d, [rs("old", 3), rs("new", 1)], 1) == 2
    assert rollouts.new_rs_replicas(deploy(4, surge="100%"), [rs("old", 4)], 0) == 4


def test_old_replicasets_shrink_only_while_enough_stay_available() -> None:
    d = deploy(4, surge=1, unavailable=0)
    new = rs("new", 1, available=0)
    assert rollouts.old_scale_down(d, new, [rs("old", 4, available=4)]) == {}, (
        "the new pod is not available yet: 4 must stay")
    new = rs("new", 1, available=1)
    assert rollouts.old_scale_down(d, new, [rs("old", 4, available=4)]) == {"old": 3}


def test_unavailable_old_replicas_go_first_then_the_oldest() -> None:
    d = deploy(4, surge=1, unavailable=1)
    older = rs("older", 2, available=2, created="2024-01-01T00:00:00Z")
    old = rs("old", 2, available=0, created="2024-01-02T00:00:00Z")
    new = rs("new", 1, available=0)
    # 5 pods, 3 must stay available, the new one is not: 1 may go; a broken one goes first.
    assert rollouts.old_scale_down(d, new, [older, old]) == {"old": 1}
    new = rs("new", 2, available=2)
    healthy = [rs("older", 1, available=1, created="2024-01-01T00:00:00Z"),
               rs("old", 2, available=2, created="2024-01-02T00:00:00Z")]
    assert rollouts.old_scale_down(d, new, healthy) == {"older": 0, "old": 1}


def test_status_counts_the_pods_of_old_and_new_replicasets() -> None:
    d = deploy(2, surge=1, unavailable=0)
    old, new = rs("old", 2, available=2), rs("new", 1, available=0)
    status = rollouts.deployment_status(d, [old, new], new, 0.0, "2024-01-01T00:00:00Z")
    assert {k: status.get(k, 0) for k in ("replicas", "updatedReplicas", "availableReplicas",
                                          "unavailableReplicas")} == {
        "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2, "unavailableReplicas": 1}
    assert not rollouts.is_complete(d, status)
    done = rollouts.deployment_status(d, [rs("old", 0), rs("new", 2, available=2)],
                                      rs("new", 2, available=2), 0.0, "2024-01-01T00:00:00Z")
    assert rollouts.is_complete(d, done)


def test_revision_history_keeps_the_newest_scaled_down_replicasets() -> None:
    old = [rs("r1", 0, revision=1), rs("r2", 0, revision=2), rs("r3", 1, revision=3)]
    assert [r["metadata"]["name"] for r in rollouts.history_to_delete(
        deploy(1, revisionHistoryLimit=2), old)] == ["r1"]
    assert [r["metadata"]["name"] for r in rollouts.history_to_delete(
        deploy(1, revisionHistoryLimit=0), old)] == ["r1", "r2"], "r3 still runs a pod"
    assert rollouts.history_to_delete(deploy(1, revisionHistoryLimit=5), old) == []


def progressing(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Progressing")


def test_a_completed_rollout_stays_complete_when_a_pod_goes_unavailable() -> None:
    d = deploy(2, surge=1, unavailable=0)
    d["status"] = rollouts.deployment_status(d, [rs("new", 2, available=2)],
                                             rs("new", 2, available=2), 0.0,
                                             "2024-01-01T00:00:00Z")
    assert progressing(d["status"])["reason"] == "NewReplicaSetAvailable"
    sick = rs("new", 2, available=1)
    for now in (700.0, 2000.0):  # long past progressDeadlineSeconds (600)
        d["status"] = rollouts.deployment_status(d, [sick], sick, now, "2024-01-01T01:00:00Z")
        assert progressing(d["status"])["reason"] == "NewReplicaSetAvailable"
        assert progressing(d["status"])["lastUpdateTime"] == "2024-01-01T00:00:00Z"


def test_only_more_updated_ready_or_available_replicas_count_as_progress() -> None:
    d = deploy(2, surge=1, unavailable=0)
    old, new = rs("old", 2, available=2), rs("new", 1, available=0)
    d["status"] = rollouts.deployment_status(d, [old, new], new, 0.0, "1970-01-01T00:00:00Z")
    assert progressing(d["status"])["reason"] == "ReplicaSetUpdated"
    worse = rs("old", 2, available=1)  # a change, but backwards
    d["status"] = rollouts.deployment_status(d, [worse, new], new, 601.0,
                                             "1970-01-01T00:10:01Z")
    assert progressing(d["status"])["reason"] == "ProgressDeadlineExceeded"
    d["status"] = rollouts.deployment_status(d, [worse, rs("new", 1, available=1)], new, 700.0,
                                             "1970-01-01T00:11:40Z")
    assert progressing(d["status"])["reason"] == "ReplicaSetUpdated", "available went up"
