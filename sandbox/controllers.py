"""The Deployment and ReplicaSet controllers of the sandbox (kube-controller-manager's part).

Owns the desired-state side of workloads, as the real controllers do, on the
in-process Store (the arithmetic is `sandbox.rollouts`'):

- each Deployment gets one ReplicaSet per pod-template hash, `<deploy>-<hash>`,
  owned by it, its selector and template labels extended with `pod-template-hash`,
  carrying the Deployment's annotations, `deployment.kubernetes.io/revision` (and
  desired-/max-replicas); a template that matches an older ReplicaSet reuses it (a
  rollback re-uses the old hash) and takes the next revision; the Deployment is
  annotated with its new ReplicaSet's revision (`kubectl rollout status
  --revision`, `rollout history` read it);
- `strategy.type: RollingUpdate` (rolloutRolling) scales the new ReplicaSet up
  within `replicas + maxSurge` pods in all, and old ones down while at least
  `replicas - maxUnavailable` pods stay available (unavailable old replicas go
  first); one step per pass, as each sync of the real controller does one;
- `strategy.type: Recreate` (rolloutRecreate) scales old ReplicaSets to 0 and
  creates (or scales up) the new one only once no old pod exists and no old
  process is still running;
- once a rollout is complete, old ReplicaSets beyond `revisionHistoryLimit` that
  are scaled to 0 are deleted;
- each ReplicaSet keeps `spec.replicas` Pods `<rs>-<5 chars>` (generateName),
  deleting not-ready and newest pods first when scaling down; a pod counts as
  available once Ready for `minReadySeconds`;
- statuses: ReplicaSet replicas/ready/available, Deployment `observedGeneration`,
  counts summed from its ReplicaSets' statuses (`replicas` counts the pods of old
  and new ReplicaSets alike) and the Available and Progressing conditions (with
  `progressDeadlineSeconds`), written through the status subresource only when they
  change.

Not modelled: `paused`, proportional scaling of several active ReplicaSets (a
scale during a rollout is absorbed by the rolling steps instead).

Running the pods (processes, probes, pod status) is `sandbox.kubelet`'s job;
deleting a Deployment cascades to its ReplicaSets and Pods in the Store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from sandbox import rollouts
from sandbox.defaults import drop_nulls
from sandbox.resources import ApiError, meta_of, now_rfc3339, spec_of
from sandbox.rollouts import REVISION, by_creation, replicas, revision
from sandbox.routing import is_pod_ready
from sandbox.store import Store

log = logging.getLogger(__name__)

DEPLOYMENTS, REPLICASETS, PODS = "apps/v1/deployments", "apps/v1/replicasets", "v1/pods"
HASH_LABEL = "pod-template-hash"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
_HASH_CHARS = "bcdfghjklmnpqrstvwxz2456789"

Obj = dict[str, Any]






def template_hash(template: Obj) -> str:
    """A stable, name-safe hash of a pod template (10 chars, like the real one).

    Over the template as the API holds it, JSON nulls dropped (ComputeHash hashes the
    decoded Go struct, where a null is an unset field), so a template sent back with
    `creationTimestamp: null`, as `kubectl rollout undo` does, is the same template.
    """
    normal = json.dumps(drop_nulls(template), sort_keys=True)
    digest = int(hashlib.sha256(normal.encode()).hexdigest(), 16)
    chars = []
    for _ in range(10):
        digest, index = divmod(digest, len(_HASH_CHARS))
        chars.append(_HASH_CHARS[index])
    return "".join(chars)


def owned_by(obj: Obj, owner: Obj) -> bool:
    uid = meta_of(owner).get("uid")
    return any(ref.get("uid") == uid for ref in meta_of(obj).get("ownerReferences") or [])


def owner_ref(owner: Obj, kind: str) -> Obj:
    return {"apiVersion": "apps/v1", "kind": kind, "name": meta_of(owner)["name"],
            "uid": meta_of(owner)["uid"], "controller": True, "blockOwnerDeletion": True}


def _is_live(pod: Obj) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return not meta_of(pod).get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


# Deployment annotations a ReplicaSet does not copy (deploymentutil annotationsToSkip).
_NOT_COPIED = (REVISION, "deployment.kubernetes.io/revision-history",
               "deployment.kubernetes.io/desired-replicas", "deployment.kubernetes.io/max-replicas",
               "deprecated.deployment.rollback.to",
               "kubectl.kubernetes.io/last-applied-configuration")


def _copied_annotations(deploy: Obj) -> dict[str, str]:
    """The Deployment's annotations its ReplicaSet carries (copyDeploymentAnnotationsToRS)."""
    return {k: v for k, v in (meta_of(deploy).get("annotations") or {}).items()
            if k not in _NOT_COPIED}


def _size_annotations(deploy: Obj) -> dict[str, str]:
    """SetReplicasAnnotations: what the Deployment wanted when it last sized a ReplicaSet."""
    return {DESIRED_REPLICAS: str(replicas(deploy)),
            MAX_REPLICAS: str(replicas(deploy) + rollouts.max_surge(deploy))}


def new_replicaset(deploy: Obj, pod_hash: str, count: int, rev: int) -> Obj:
    """The ReplicaSet the Deployment controller creates for a template hash."""
    template = json.loads(json.dumps(spec_of(deploy).get("template") or {}))
    labels = {**(template.setdefault("metadata", {}).get("labels") or {}), HASH_LABEL: pod_hash}
    template["metadata"]["labels"] = labels
    selector = json.loads(json.dumps(spec_of(deploy).get("selector") or {}))
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
    meta = meta_of(deploy)
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{meta['name']}-{pod_hash}", "namespace": meta["namespace"],
                         "labels": labels,
                         "annotations": {**_copied_annotations(deploy), REVISION: str(rev),
                                         **_size_annotations(deploy)},
                         "ownerReferences": [owner_ref(deploy, "Deployment")]},
            "spec": {"replicas": count, "selector": selector, "template": template,
                     "minReadySeconds": spec_of(deploy).get("minReadySeconds", 0)}}


class WorkloadControllers:
    """One pass over Deployments and ReplicaSets; the kubelet calls `sync()` repeatedly.

    `live_owners()` returns the uids of ReplicaSets that still have a running pod
    process (pods the Store no longer holds may still be shutting down).
    """

    def __init__(self, store: Store, live_owners: Callable[[], set[str]]) -> None:
        self.store = store
        self.live_owners = live_owners
        # (step, uid) -> the resourceVersion whose failure in that step was last logged
        self._failed: dict[tuple[str, Any], Any] = {}

    def sync(self) -> None:
        seen: set[Any] = set()
        for key, step in ((DEPLOYMENTS, self.sync_deployment), (REPLICASETS, self.sync_replicaset),
                          (DEPLOYMENTS, self.sync_deployment_status)):
            for obj in self.store.list(key)[0]:
                seen.add(meta_of(obj).get("uid"))
                self._guard(step, obj)
        if self._failed:  # forget the failures of objects that are gone
            self._failed = {k: rv for k, rv in self._failed.items() if k[1] in seen}

    def _guard(self, step: Callable[[Obj], None], obj: Obj) -> None:
        """Run one object's step; its failure must not stop the others' reconciliation
        (the real controllers requeue one key and carry on with the rest). A failure is
        logged in full once per version of the object, not on every pass."""
        where = f"{meta_of(obj).get('namespace')}/{meta_of(obj).get('name')}"
        try:
            step(obj)
        except ApiError as e:  # a concurrent write or delete: the next pass catches up
            log.debug("%s %s: %s", step.__name__, where, e.message)
        except Exception:
            key, version = (step.__name__, meta_of(obj).get("uid")), meta_of(obj).get(
                "resourceVersion")
            if self._failed.get(key) == version:
                log.debug("%s %s still fails", step.__name__, where)
            else:
                self._failed[key] = version
                log.exception("%s %s failed; skipping it this pass", step.__name__, where)

    # ---- Deployment → ReplicaSets --------------------------------------------------------

    def _replicasets(self, deploy: Obj) -> list[Obj]:
        items = self.store.list(REPLICASETS, meta_of(deploy)["namespace"])[0]
        return [rs for rs in items if owned_by(rs, deploy)]

    def _pods(self, namespace: str) -> list[Obj]:
        return [p for p in self.store.list(PODS, namespace)[0] if _is_live(p)]

    def sync_deployment(self, deploy: Obj) -> None:
        """One step of the Deployment's rollout, as one sync of the real controller takes
        (none while it is being deleted: syncStatusOnly)."""
        if meta_of(deploy).get("deletionTimestamp"):
            return
        pod_hash = template_hash(spec_of(deploy).get("template") or {})
        replicasets = self._replicasets(deploy)
        new = next((rs for rs in replicasets if
                    (meta_of(rs).get("labels") or {}).get(HASH_LABEL) == pod_hash), None)
        old = by_creation(rs for rs in replicasets if rs is not new)
        if new is not None:
            new = self._sync_revision(deploy, new, old)
        if rollouts.is_rolling(deploy):
            new = self._roll(deploy, new, old, pod_hash)
        else:
            new = self._recreate(deploy, new, old, pod_hash)
        if new is not None:
            self._set_revision(deploy, revision(new))
        if rollouts.is_complete(deploy, deploy.get("status") or {}):
            for rs in rollouts.history_to_delete(deploy, old):
                self.store.delete(REPLICASETS, meta_of(rs)["namespace"], meta_of(rs)["name"])

    def _roll(self, deploy: Obj, new: Obj | None, old: list[Obj], pod_hash: str) -> Obj:
        """rolloutRolling: scale the new ReplicaSet up if it may, else old ones down."""
        desired = replicas(deploy)
        if new is None:
            new = self._create(deploy, pod_hash, rollouts.new_rs_replicas(deploy, old, 0), old)
        elif replicas(new) > desired:
            self._scale(deploy, new, desired)
            return new
        elif replicas(new) < desired:
            wanted = rollouts.new_rs_replicas(deploy, [*old, new], replicas(new))
            if wanted != replicas(new):
                self._scale(deploy, new, wanted)
                return new
        sizes = rollouts.old_scale_down(deploy, new, old)
        for rs in old:
            if meta_of(rs)["name"] in sizes:
                self._scale(deploy, rs, sizes[meta_of(rs)["name"]])
        return new

    def _recreate(self, deploy: Obj, new: Obj | None, old: list[Obj],
                  pod_hash: str) -> Obj | None:
        """rolloutRecreate: old ReplicaSets to 0; the new one only once no old pod runs."""
        active = [rs for rs in old if replicas(rs) > 0]
        for rs in active:
            self._scale(deploy, rs, 0)
        if active or self._old_pods_running(deploy, new, old):
            return new
        if new is None:
            return self._create(deploy, pod_hash, replicas(deploy), old)
        if replicas(new) != replicas(deploy):
            self._scale(deploy, new, replicas(deploy))
        return new

    def _set_revision(self, deploy: Obj, rev: int) -> None:
        """SetDeploymentRevision: the Deployment carries its new ReplicaSet's revision,
        written through the status subresource (which, for a Deployment, takes
        annotations and bumps no generation)."""
        if (meta_of(deploy).get("annotations") or {}).get(REVISION) == str(rev):
            return

        def change(obj: Obj) -> Obj:
            meta_of(obj).setdefault("annotations", {})[REVISION] = str(rev)
            return obj

        self.store.mutate(DEPLOYMENTS, meta_of(deploy)["namespace"], meta_of(deploy)["name"],
                          change, subresource="status")

    def _old_pods_running(self, deploy: Obj, new: Obj | None, old: list[Obj]) -> bool:
        """Pods of the Deployment's other ReplicaSets not yet ended, or their processes."""
        pods = self.store.list(PODS, meta_of(deploy)["namespace"])[0]
        if any(owned_by(p, rs) and (p.get("status") or {}).get("phase") not in (
                "Succeeded", "Failed") for p in pods for rs in old):
            return True
        return bool({meta_of(rs)["uid"] for rs in old} & self.live_owners())

    def _create(self, deploy: Obj, pod_hash: str, count: int, old: list[Obj]) -> Obj:
        rev = max((revision(rs) for rs in old), default=0) + 1
        return self.store.create(REPLICASETS, meta_of(deploy)["namespace"],
                                 new_replicaset(deploy, pod_hash, count, rev))

    def _sync_revision(self, deploy: Obj, new: Obj, old: list[Obj]) -> Obj:
        """The new ReplicaSet takes the next revision (a rollback's reused one does), the
        Deployment's annotations and its minReadySeconds (SetNewReplicaSetAnnotations)."""
        rev = max((revision(rs) for rs in old), default=0) + 1
        ready_for = spec_of(deploy).get("minReadySeconds", 0)
        copied = _copied_annotations(deploy)
        notes = meta_of(new).get("annotations") or {}
        if (revision(new) >= rev and spec_of(new).get("minReadySeconds", 0) == ready_for
                and all(notes.get(k) == v for k, v in copied.items())):
            return new

        def change(obj: Obj) -> Obj:
            annotations = meta_of(obj).setdefault("annotations", {})
            annotations.update(copied)
            if revision(obj) < rev:
                annotations[REVISION] = str(rev)
            obj["spec"]["minReadySeconds"] = ready_for
            return obj

        return self.store.mutate(REPLICASETS, meta_of(new)["namespace"], meta_of(new)["name"],
                                 change)

    def _scale(self, deploy: Obj, rs: Obj, count: int) -> None:
        """scaleReplicaSet: the size, and the annotations saying what it was sized for."""
        notes = _size_annotations(deploy)
        current = meta_of(rs).get("annotations") or {}
        if replicas(rs) == count and all(current.get(k) == v for k, v in notes.items()):
            return

        def change(obj: Obj) -> Obj:
            obj["spec"]["replicas"] = count
            meta_of(obj).setdefault("annotations", {}).update(notes)
            return obj

        self.store.mutate(REPLICASETS, meta_of(rs)["namespace"], meta_of(rs)["name"], change)

    # ---- ReplicaSet → Pods ---------------------------------------------------------------

    def sync_replicaset(self, rs: Obj) -> None:
        """Create or delete Pods to match `spec.replicas`, then report RS status."""
        namespace = meta_of(rs)["namespace"]
        pods = [p for p in self._pods(namespace) if owned_by(p, rs)]
        # A ReplicaSet being deleted manages no pods (syncReplicaSet), it only reports.
        want = len(pods) if meta_of(rs).get("deletionTimestamp") else replicas(rs)
        for _ in range(want - len(pods)):
            self.store.create(PODS, namespace, self._pod_for(rs))
        if len(pods) > want:
            newest_first = sorted(pods, key=lambda p: meta_of(p).get("creationTimestamp", ""),
                                  reverse=True)
            doomed = sorted(newest_first, key=is_pod_ready)[: len(pods) - want]
            for pod in doomed:
                self.store.delete(PODS, namespace, meta_of(pod)["name"])
        pods = [p for p in self._pods(namespace) if owned_by(p, rs)]
        ready = sum(1 for p in pods if is_pod_ready(p))
        now, ready_for = time.time(), int(spec_of(rs).get("minReadySeconds", 0))
        self._write_status(REPLICASETS, rs, {
            "replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
            "availableReplicas": sum(1 for p in pods if _is_available(p, ready_for, now)),
            "observedGeneration": meta_of(rs).get("generation", 1)})

    @staticmethod
    def _pod_for(rs: Obj) -> Obj:
        template = json.loads(json.dumps(spec_of(rs).get("template") or {}))
        meta = template.get("metadata") or {}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": f"{meta_of(rs)['name']}-",
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

        self.store.mutate(key, meta_of(obj)["namespace"], meta_of(obj)["name"], change,
                          subresource="status")

    def sync_deployment_status(self, deploy: Obj) -> None:
        replicasets = self._replicasets(deploy)
        pod_hash = template_hash(spec_of(deploy).get("template") or {})
        new = next((rs for rs in replicasets
                    if (meta_of(rs).get("labels") or {}).get(HASH_LABEL) == pod_hash), None)
        status = rollouts.deployment_status(deploy, replicasets, new, time.time(),
                                            now_rfc3339())
        self._write_status(DEPLOYMENTS, deploy, status)


def _is_available(pod: Obj, ready_for: int, now: float) -> bool:
    """Ready, and for at least `minReadySeconds` (podutil.IsPodAvailable)."""
    if not is_pod_ready(pod):
        return False
    if ready_for <= 0:
        return True
    ready: Obj = next((c for c in (pod.get("status") or {}).get("conditions") or []
                       if c.get("type") == "Ready"), {})
    since = rollouts.parse_time(ready.get("lastTransitionTime"))
    return since is not None and now - since >= ready_for
