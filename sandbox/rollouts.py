"""The arithmetic of the Deployment controller, as pure functions over API objects.

Owns what pkg/controller/deployment computes, so that `sandbox.controllers` only has
to read and write: the rolling-update fenceposts (maxSurge rounds up, maxUnavailable
rounds down, not both 0: pkg/controller/deployment/util ResolveFenceposts), how far
the new ReplicaSet may be scaled up (NewRSNewReplicas), how far old ones may be
scaled down (reconcileOldReplicaSets: unhealthy replicas first, then oldest first,
never below `replicas - maxUnavailable` available), which old ReplicaSets the
revision history limit lets go (cleanupDeployment), and the Deployment's status:
counts summed from its ReplicaSets' statuses, the Available and Progressing
conditions (calculateStatus, syncRolloutStatus).
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Iterable
from typing import Any

from sandbox.resources import ascii_digits, meta_of, spec_of, status_of

Obj = dict[str, Any]
REVISION = "deployment.kubernetes.io/revision"








def replicas(obj: Obj) -> int:
    """`spec.replicas` of a Deployment or ReplicaSet (validated and defaulted by the API)."""
    return int(spec_of(obj).get("replicas", 1))


def available(rs: Obj) -> int:
    return int(status_of(rs).get("availableReplicas", 0))


def revision(rs: Obj) -> int:
    value = (meta_of(rs).get("annotations") or {}).get(REVISION, "0")
    return int(value) if ascii_digits(str(value)) else 0


def is_rolling(deploy: Obj) -> bool:
    kind: str = (spec_of(deploy).get("strategy") or {}).get("type", "RollingUpdate")
    return kind == "RollingUpdate"


def scaled_value(value: int | str, total: int, *, round_up: bool) -> int:
    """GetScaledValueFromIntOrPercent: an int as it is, a percent of `total`, rounded."""
    if isinstance(value, str):
        share = int(value.rstrip("%")) * total / 100
        return math.ceil(share) if round_up else math.floor(share)
    return int(value)


def fenceposts(deploy: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) in pods: surge rounds up, unavailable down, and when both
    come to 0 unavailable is 1 (surge might not work, because of quota)."""
    rolling = (spec_of(deploy).get("strategy") or {}).get("rollingUpdate") or {}
    desired = replicas(deploy)
    surge = scaled_value(rolling.get("maxSurge", "25%"), desired, round_up=True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(deploy: Obj) -> int:
    return fenceposts(deploy)[0] if is_rolling(deploy) else 0


def max_unavailable(deploy: Obj) -> int:
    """MaxUnavailable: 0 unless rolling, never more than `replicas`."""
    if not is_rolling(deploy) or replicas(deploy) == 0:
        return 0
    return min(fenceposts(deploy)[1], replicas(deploy))


def new_rs_replicas(deploy: Obj, all_rs: list[Obj], new_count: int) -> int:
    """NewRSNewReplicas: what the new ReplicaSet (now at `new_count`) may be scaled up to."""
    desired = replicas(deploy)
    if not is_rolling(deploy):
        return desired
    surge = scaled_value((((spec_of(deploy).get("strategy") or {}).get("rollingUpdate") or {})
                          .get("maxSurge", "25%")), desired, round_up=True)
    current = sum(replicas(rs) for rs in all_rs)
    most = desired + surge
    if current >= most:
        return new_count
    return new_count + min(most - current, desired - new_count)


def by_creation(replicasets: Iterable[Obj]) -> list[Obj]:
    """Oldest first, as controller.ReplicaSetsByCreationTimestamp sorts (name breaks ties)."""
    return sorted(replicasets, key=lambda rs: (meta_of(rs).get("creationTimestamp", ""),
                                               meta_of(rs).get("name", "")))


def old_scale_down(deploy: Obj, new: Obj, old: list[Obj]) -> dict[str, int]:
    """reconcileOldReplicaSets: name → new size for the old ReplicaSets to scale down now."""
    old = by_creation(old)
    if sum(replicas(rs) for rs in old) == 0:
        return {}
    desired, unavailable = replicas(deploy), max_unavailable(deploy)
    min_available = desired - unavailable
    all_count = sum(replicas(rs) for rs in old) + replicas(new)
    new_unavailable = replicas(new) - available(new)
    budget = all_count - min_available - new_unavailable
    if budget <= 0:
        return {}
    before = {meta_of(rs)["name"]: replicas(rs) for rs in old}
    sizes = dict(before)
    cleaned = 0  # cleanupUnhealthyReplicas: replicas that are not available go first
    for rs in old:
        name = meta_of(rs)["name"]
        if cleaned >= budget or sizes[name] == 0 or sizes[name] == available(rs):
            continue
        down = min(budget - cleaned, sizes[name] - available(rs))
        sizes[name] -= down
        cleaned += down
    # scaleDownOldReplicaSetsForRollingUpdate: then oldest first, keeping min_available
    available_now = available(new) + sum(min(available(rs), sizes[meta_of(rs)["name"]])
                                         for rs in old)
    allowed = available_now - min_available
    for rs in old:
        name = meta_of(rs)["name"]
        if allowed <= 0:
            break
        down = min(sizes[name], allowed)
        sizes[name] -= down
        allowed -= down
    return {name: size for name, size in sizes.items() if size != before[name]}


def history_to_delete(deploy: Obj, old: list[Obj]) -> list[Obj]:
    """cleanupDeployment: the oldest revisions beyond `revisionHistoryLimit`, if scaled to 0."""
    limit = spec_of(deploy).get("revisionHistoryLimit")
    alive = [rs for rs in old if not meta_of(rs).get("deletionTimestamp")]
    if limit is None or len(alive) <= int(limit):
        return []
    doomed = sorted(alive, key=lambda rs: (revision(rs), meta_of(rs).get("creationTimestamp", "")))
    return [rs for rs in doomed[:len(alive) - int(limit)]
            if replicas(rs) == 0 and int(status_of(rs).get("replicas", 0)) == 0
            and int(status_of(rs).get("observedGeneration", 0)) >= meta_of(rs).get("generation", 1)]


def is_complete(deploy: Obj, status: Obj) -> bool:
    """DeploymentComplete: every replica updated and available, nothing old left over."""
    desired = replicas(deploy)
    return (int(status.get("updatedReplicas", 0)) == desired
            and int(status.get("replicas", 0)) == desired
            and int(status.get("availableReplicas", 0)) == desired
            and int(status.get("observedGeneration", 0)) >= int(meta_of(deploy).get(
                "generation", 1)))


# ---- status -------------------------------------------------------------------------------

def _condition(previous: Iterable[Obj], ctype: str, status: str, reason: str, message: str,
               now: str) -> Obj:
    """A condition that keeps its times unless its status (or reason/message) changed."""
    before = next((c for c in previous if c.get("type") == ctype), {})
    same_status = before.get("status") == status
    same_text = same_status and (before.get("reason"), before.get("message")) == (reason, message)
    return {"type": ctype, "status": status,
            "lastUpdateTime": before.get("lastUpdateTime") if same_text else now,
            "lastTransitionTime": before.get("lastTransitionTime") if same_status else now,
            "reason": reason, "message": message}


def deployment_status(deploy: Obj, replicasets: list[Obj], new: Obj | None, now: float,
                      stamp: str) -> Obj:
    """calculateStatus and syncRolloutStatus: counts from the ReplicaSets' statuses."""
    desired = replicas(deploy)
    available_count = sum(available(rs) for rs in replicasets)
    counts = {
        "replicas": sum(int(status_of(rs).get("replicas", 0)) for rs in replicasets),
        "updatedReplicas": int(status_of(new).get("replicas", 0)) if new is not None else 0,
        "readyReplicas": sum(int(status_of(rs).get("readyReplicas", 0)) for rs in replicasets),
        "availableReplicas": available_count,
        "unavailableReplicas": max(0, sum(replicas(rs) for rs in replicasets)
                                   - available_count)}
    previous = status_of(deploy)
    status: Obj = {"observedGeneration": meta_of(deploy).get("generation", 1), **counts}
    is_available = available_count >= desired - max_unavailable(deploy)
    conditions = previous.get("conditions") or []
    availability = _condition(
        conditions, "Available", str(is_available),
        "MinimumReplicasAvailable" if is_available else "MinimumReplicasUnavailable",
        "Deployment has minimum availability." if is_available
        else "Deployment does not have minimum availability.", stamp)
    progress = _progressing(deploy, conditions, new, status, now, stamp)
    status["conditions"] = [availability, progress]
    # The API omits zero counts; `kubectl rollout status` reads missing as 0.
    return {k: v for k, v in status.items() if v != 0 or k == "observedGeneration"}


def _progressing(deploy: Obj, conditions: list[Obj], new: Obj | None, status: Obj,
                 now: float, stamp: str) -> Obj:
    """syncRolloutStatus's Progressing condition (pkg/controller/deployment/progress.go)."""
    name = (f'ReplicaSet "{meta_of(new)["name"]}"' if new is not None
            else f'Deployment "{meta_of(deploy)["name"]}"')
    before = next((c for c in conditions if c.get("type") == "Progressing"), {})
    if (before.get("reason") == "NewReplicaSetAvailable"
            and status["replicas"] == status["updatedReplicas"]):
        return before  # isCompleteDeployment: a finished rollout is not watched any more
    if is_complete(deploy, status):
        return _condition(conditions, "Progressing", "True", "NewReplicaSetAvailable",
                          f"{name} has successfully progressed.", stamp)
    progressed = _has_progressed(status_of(deploy), status)
    deadline = int(spec_of(deploy).get("progressDeadlineSeconds", 600))
    if before.get("reason") in ("ProgressDeadlineExceeded", "NewReplicaSetAvailable") and (
            not progressed):
        return before  # DeploymentTimedOut: the first stays, the second never times out
    since = parse_time(before.get("lastUpdateTime")) if not progressed else now
    if since is not None and now - since > deadline:
        return _condition(conditions, "Progressing", "False", "ProgressDeadlineExceeded",
                          f"{name} has timed out progressing.", stamp)
    current = _condition(conditions, "Progressing", "True", "ReplicaSetUpdated",
                         f"{name} is progressing.", stamp)
    if progressed:
        current["lastUpdateTime"] = stamp
    return current


def _has_progressed(before: Obj, after: Obj) -> bool:
    """DeploymentProgressing: more updated, ready or available replicas, or fewer old ones;
    any other change (a pod going unready, a scale-down) is no progress."""
    def old(status: Obj) -> int:
        return int(status.get("replicas", 0)) - int(status.get("updatedReplicas", 0))
    return (old(after) < old(before) or any(
        int(after.get(k, 0)) > int(before.get(k, 0))
        for k in ("updatedReplicas", "readyReplicas", "availableReplicas")))


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None
