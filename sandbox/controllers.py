"""The Deployment and ReplicaSet controllers of the sandbox (kube-controller-manager's part).

Owns the desired-state side of workloads, as the real controllers do, on the
in-process Store:

- each Deployment gets one ReplicaSet per pod-template hash, `<deploy>-<hash>`,
  owned by it, its selector and template labels extended with `pod-template-hash`,
  annotated with `deployment.kubernetes.io/revision`; a template that matches an
  older ReplicaSet reuses it (a rollback re-uses the old hash);
- `strategy.type: Recreate` scales old ReplicaSets to 0 and starts the new one only
  once no old pod exists and no old process is still running; `RollingUpdate`
  (simplified) scales the new ReplicaSet to `spec.replicas` at once and keeps as
  many old pods as the new ReplicaSet lacks ready ones (maxSurge/maxUnavailable
  are only used for the Available condition);
- each ReplicaSet keeps `spec.replicas` Pods `<rs>-<5 chars>` (generateName),
  deleting not-ready and newest pods first when scaling down;
- statuses: ReplicaSet replicas/ready/available, Deployment `observedGeneration`,
  replicas, updated/ready/available/unavailable replicas and the Available and
  Progressing conditions (with `progressDeadlineSeconds`), written through the
  status subresource only when they change.

Running the pods (processes, probes, pod status) is `sandbox.kubelet`'s job;
deleting a Deployment cascades to its ReplicaSets and Pods in the Store.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from sandbox.resources import ApiError, now_rfc3339
from sandbox.routing import is_pod_ready
from sandbox.store import Store

log = logging.getLogger(__name__)

DEPLOYMENTS, REPLICASETS, PODS = "apps/v1/deployments", "apps/v1/replicasets", "v1/pods"
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
_HASH_CHARS = "bcdfghjklmnpqrstvwxz2456789"

Obj = dict[str, Any]


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj.setdefault("metadata", {})
    return meta


def _spec(obj: Obj) -> Obj:
    spec: Obj = obj.get("spec") or {}
    return spec


def template_hash(template: Obj) -> str:
    """A stable, name-safe hash of a pod template (10 chars, like the real one)."""
    digest = int(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest(), 16)
    chars = []
    for _ in range(10):
        digest, index = divmod(digest, len(_HASH_CHARS))
        chars.append(_HASH_CHARS[index])
    return "".join(chars)


def owned_by(obj: Obj, owner: Obj) -> bool:
    uid = _meta(owner).get("uid")
    return any(ref.get("uid") == uid for ref in _meta(obj).get("ownerReferences") or [])


def owner_ref(owner: Obj, kind: str) -> Obj:
    return {"apiVersion": "apps/v1", "kind": kind, "name": _meta(owner)["name"],
            "uid": _meta(owner)["uid"], "controller": True, "blockOwnerDeletion": True}


def revision(rs: Obj) -> int:
    value = (_meta(rs).get("annotations") or {}).get(REVISION, "0")
    return int(value) if str(value).isdigit() else 0


def _is_live(pod: Obj) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return not _meta(pod).get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


def new_replicaset(deploy: Obj, pod_hash: str, replicas: int, rev: int) -> Obj:
    """The ReplicaSet the Deployment controller creates for a template hash."""
    template = json.loads(json.dumps(_spec(deploy).get("template") or {}))
    labels = {**(template.setdefault("metadata", {}).get("labels") or {}), HASH_LABEL: pod_hash}
    template["metadata"]["labels"] = labels
    selector = json.loads(json.dumps(_spec(deploy).get("selector") or {}))
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
    meta = _meta(deploy)
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{meta['name']}-{pod_hash}", "namespace": meta["namespace"],
                         "labels": labels,
                         "annotations": {REVISION: str(rev),
                                         "deployment.kubernetes.io/desired-replicas":
                                             str(_spec(deploy).get("replicas", 1))},
                         "ownerReferences": [owner_ref(deploy, "Deployment")]},
            "spec": {"replicas": replicas, "selector": selector, "template": template,
                     "minReadySeconds": _spec(deploy).get("minReadySeconds", 0)}}


class WorkloadControllers:
    """One pass over Deployments and ReplicaSets; the kubelet calls `sync()` repeatedly.

    `live_owners()` returns the uids of ReplicaSets that still have a running pod
    process (pods the Store no longer holds may still be shutting down).
    """

    def __init__(self, store: Store, live_owners: Callable[[], set[str]]) -> None:
        self.store = store
        self.live_owners = live_owners
        self._failed: set[tuple[str, Any, Any]] = set()

    def sync(self) -> None:
        for deploy in self.store.list(DEPLOYMENTS)[0]:
            self._guard(self.sync_deployment, deploy)
        for rs in self.store.list(REPLICASETS)[0]:
            self._guard(self.sync_replicaset, rs)
        for deploy in self.store.list(DEPLOYMENTS)[0]:
            self._guard(self.sync_deployment_status, deploy)

    def _guard(self, step: Callable[[Obj], None], obj: Obj) -> None:
        """Run one object's step; its failure must not stop the others' reconciliation
        (the real controllers requeue one key and carry on with the rest). A failure is
        logged in full once per version of the object, not on every pass."""
        where = f"{_meta(obj).get('namespace')}/{_meta(obj).get('name')}"
        try:
            step(obj)
        except ApiError as e:  # a concurrent write or delete: the next pass catches up
            log.debug("%s %s: %s", step.__name__, where, e.message)
        except Exception:
            seen = (step.__name__, _meta(obj).get("uid"), _meta(obj).get("resourceVersion"))
            if seen in self._failed:
                log.debug("%s %s still fails", step.__name__, where)
            else:
                self._failed.add(seen)
                log.exception("%s %s failed; skipping it this pass", step.__name__, where)

    # ---- Deployment → ReplicaSets --------------------------------------------------------

    def _replicasets(self, deploy: Obj) -> list[Obj]:
        items = self.store.list(REPLICASETS, _meta(deploy)["namespace"])[0]
        return [rs for rs in items if owned_by(rs, deploy)]

    def _pods(self, namespace: str) -> list[Obj]:
        return [p for p in self.store.list(PODS, namespace)[0] if _is_live(p)]

    def sync_deployment(self, deploy: Obj) -> None:
        """Make sure the template's ReplicaSet exists and scale old and new ones."""
        desired = int(_spec(deploy).get("replicas", 1))
        pod_hash = template_hash(_spec(deploy).get("template") or {})
        replicasets = self._replicasets(deploy)
        new = next((rs for rs in replicasets if
                    (_meta(rs).get("labels") or {}).get(HASH_LABEL) == pod_hash), None)
        old = [rs for rs in replicasets if rs is not new]
        top = max((revision(rs) for rs in replicasets), default=0)
        recreate = (_spec(deploy).get("strategy") or {}).get("type") == "Recreate"
        pods = self._pods(_meta(deploy)["namespace"])
        if recreate:
            old_running = any(owned_by(p, rs) for p in pods for rs in old) or bool(
                {_meta(rs)["uid"] for rs in old} & self.live_owners())
            for rs in old:
                self._scale(rs, 0)
            target = 0 if old_running else desired
        else:
            target = desired
        if new is None:
            new = self.store.create(REPLICASETS, _meta(deploy)["namespace"],
                                    new_replicaset(deploy, pod_hash, target, top + 1))
        else:
            self._scale(new, target, None if revision(new) == top and top else top + 1)
        if not recreate:
            ready_new = sum(1 for p in pods if owned_by(p, new) and is_pod_ready(p))
            self._scale_down_old(old, max(0, desired - ready_new))

    def _scale_down_old(self, old: list[Obj], allowed: int) -> None:
        for rs in sorted(old, key=revision, reverse=True):
            keep = min(int(_spec(rs).get("replicas", 0)), allowed)
            allowed -= keep
            self._scale(rs, keep)

    def _scale(self, rs: Obj, replicas: int, rev: int | None = None) -> None:
        if _spec(rs).get("replicas") == replicas and rev is None:
            return

        def change(obj: Obj) -> Obj:
            obj["spec"]["replicas"] = replicas
            if rev is not None:
                _meta(obj).setdefault("annotations", {})[REVISION] = str(rev)
            return obj

        self.store.mutate(REPLICASETS, _meta(rs)["namespace"], _meta(rs)["name"], change)

    # ---- ReplicaSet → Pods ---------------------------------------------------------------

    def sync_replicaset(self, rs: Obj) -> None:
        """Create or delete Pods to match `spec.replicas`, then report RS status."""
        namespace = _meta(rs)["namespace"]
        pods = [p for p in self._pods(namespace) if owned_by(p, rs)]
        want = int(_spec(rs).get("replicas", 1))
        for _ in range(want - len(pods)):
            self.store.create(PODS, namespace, self._pod_for(rs))
        if len(pods) > want:
            newest_first = sorted(pods, key=lambda p: _meta(p).get("creationTimestamp", ""),
                                  reverse=True)
            doomed = sorted(newest_first, key=is_pod_ready)[: len(pods) - want]
            for pod in doomed:
                self.store.delete(PODS, namespace, _meta(pod)["name"])
        pods = [p for p in self._pods(namespace) if owned_by(p, rs)]
        ready = sum(1 for p in pods if is_pod_ready(p))
        self._write_status(REPLICASETS, rs, {
            "replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
            "availableReplicas": ready, "observedGeneration": _meta(rs).get("generation", 1)})

    @staticmethod
    def _pod_for(rs: Obj) -> Obj:
        template = json.loads(json.dumps(_spec(rs).get("template") or {}))
        meta = template.get("metadata") or {}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": f"{_meta(rs)['name']}-",
                             "labels": meta.get("labels") or {},
                             "annotations": meta.get("annotations") or {},
                             "ownerReferences": [owner_ref(rs, "ReplicaSet")]},
                "spec": {**(template.get("spec") or {}), "nodeName": "sandbox"}}

    # ---- status --------------------------------------------------------------------------

    def _write_status(self, key: str, obj: Obj, status: Obj) -> None:
        if obj.get("status") == status:
            return

        def change(current: Obj) -> Obj:
            current["status"] = status
            return current

        self.store.mutate(key, _meta(obj)["namespace"], _meta(obj)["name"], change,
                          subresource="status")

    def sync_deployment_status(self, deploy: Obj) -> None:
        replicasets = self._replicasets(deploy)
        pod_hash = template_hash(_spec(deploy).get("template") or {})
        pods = self._pods(_meta(deploy)["namespace"])
        status = deployment_status(deploy, replicasets, pods, pod_hash, time.time())
        self._write_status(DEPLOYMENTS, deploy, status)


def max_unavailable(deploy: Obj) -> int:
    """`rollingUpdate.maxUnavailable` in pods (percent rounds down); 0 for Recreate."""
    strategy = _spec(deploy).get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    desired = int(_spec(deploy).get("replicas", 1))
    if isinstance(value, str) and value.endswith("%"):
        return math.floor(desired * int(value[:-1]) / 100)
    return int(value)


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


def deployment_status(deploy: Obj, replicasets: list[Obj], pods: list[Obj], pod_hash: str,
                      now: float) -> Obj:
    """The status the Deployment controller reports, from its ReplicaSets and Pods."""
    desired = int(_spec(deploy).get("replicas", 1))
    new = next((rs for rs in replicasets
                if (_meta(rs).get("labels") or {}).get(HASH_LABEL) == pod_hash), None)
    mine = [p for p in pods if any(owned_by(p, rs) for rs in replicasets)]
    updated = [p for p in mine if new is not None and owned_by(p, new)]
    available = sum(1 for p in mine if is_pod_ready(p))
    total = sum(int(_spec(rs).get("replicas", 0)) for rs in replicasets)
    previous = (deploy.get("status") or {})
    stamp = now_rfc3339()
    counts = {"replicas": len(mine), "updatedReplicas": len(updated),
              "readyReplicas": available, "availableReplicas": available,
              "unavailableReplicas": max(0, total - available)}
    complete = (len(updated) == desired == len(mine) == available)
    is_available = available >= desired - max_unavailable(deploy)
    conditions = previous.get("conditions") or []
    availability = _condition(
        conditions, "Available", str(is_available),
        "MinimumReplicasAvailable" if is_available else "MinimumReplicasUnavailable",
        "Deployment has minimum availability." if is_available
        else "Deployment does not have minimum availability.", stamp)
    progress = _progressing(deploy, conditions, new, complete,
                            counts != {k: previous.get(k, 0) for k in counts}, now, stamp)
    status: Obj = {"observedGeneration": _meta(deploy).get("generation", 1), **counts,
                   "conditions": [availability, progress]}
    # The API omits zero counts; `kubectl rollout status` reads missing as 0.
    return {k: v for k, v in status.items() if v != 0 or k == "observedGeneration"}


def _progressing(deploy: Obj, conditions: list[Obj], new: Obj | None, complete: bool,
                 progressed: bool, now: float, stamp: str) -> Obj:
    name = _meta(new)["name"] if new is not None else _meta(deploy)["name"]
    if complete:
        return _condition(conditions, "Progressing", "True", "NewReplicaSetAvailable",
                          f'ReplicaSet "{name}" has successfully progressed.', stamp)
    before = next((c for c in conditions if c.get("type") == "Progressing"), {})
    deadline = int(_spec(deploy).get("progressDeadlineSeconds", 600))
    if before.get("reason") == "ProgressDeadlineExceeded" and not progressed:
        return before
    since = _parse_time(before.get("lastUpdateTime")) if not progressed else now
    if since is not None and now - since > deadline:
        return _condition(conditions, "Progressing", "False", "ProgressDeadlineExceeded",
                          f'ReplicaSet "{name}" has timed out progressing.', stamp)
    current = _condition(conditions, "Progressing", "True", "ReplicaSetUpdated",
                         f'ReplicaSet "{name}" is progressing.', stamp)
    if progressed:
        current["lastUpdateTime"] = stamp
    return current


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None
