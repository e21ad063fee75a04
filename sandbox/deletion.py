"""Deleting objects: finalizers, propagation policies, the garbage collector, namespaces.

Owns what a DELETE does to stored objects, as the generic registry
(staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go), the garbage
collector (pkg/controller/garbagecollector) and the namespace controller do:

- an object without finalizers goes at once, and with it, in the background,
  everything that names it in `ownerReferences` (the dependents' own finalizers
  honoured) and, for a Namespace, everything in it;
- an object with `metadata.finalizers` only gets `deletionTimestamp` (and
  `deletionGracePeriodSeconds: 0`) and stays, answered as it now is, until an
  update removes its last finalizer; no finalizer may be added meanwhile;
- `propagationPolicy: Orphan` adds the `orphan` finalizer: the collector strips the
  owner's reference from every dependent, which stays, then lets the owner go;
  `Foreground` adds `foregroundDeletion`: dependents go first, then the owner;
- a Namespace is first `Terminating` (its registry's own finalization), its
  contents are deleted, then it goes.

The collector's and the namespace controller's work is done at once, in the same
store operation, so watchers see the same events as with the real ones (the
owner MODIFIED with its finalizer, dependents changed or DELETED, the owner
DELETED) without the wait. Mixed into `sandbox.store.Store`, whose lock is held.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from sandbox.keyspace import key_of, object_key
from sandbox.resources import RESOURCES, ApiError, ResourceType, invalid, now_rfc3339, resource

if TYPE_CHECKING:
    import threading

    from sandbox.keyspace import Keyspace

Obj = dict[str, Any]
ORPHAN, FOREGROUND = "orphan", "foregroundDeletion"


class Deletion:
    """The delete operations of the Store (call the underscored ones with the lock held)."""

    if TYPE_CHECKING:
        _lock: threading.RLock

        def present(self, rt: ResourceType, obj: Obj) -> Obj: ...
        def _space(self, rt: ResourceType) -> Keyspace: ...
        def _ns(self, rt: ResourceType, namespace: str | None) -> str: ...
        def _commit(self, rt: ResourceType, kind: str, obj: Obj, old: Obj | None, *,
                    dry_run: bool = False) -> Obj: ...

    def delete(self, key: str, namespace: str | None, name: str, *, dry_run: bool = False,
               preconditions: dict[str, Any] | None = None,
               propagation: str | None = None) -> Obj | None:
        """Delete an object: the object as answered, or None when there is none.

        `preconditions` ({uid, resourceVersion}) must match the stored object (409).
        Whether it went at once is `is_gone(answer)`: a pending deletion answers with
        the object carrying `deletionTimestamp`.
        """
        rt = resource(key)
        with self._lock:
            current = self._space(rt).get(key_of(self._ns(rt, namespace), name))
            if current is None:
                return None
            _check_preconditions(rt, current, preconditions or {})
            if dry_run:
                return self.present(rt, current)
            return self._begin_delete(rt, current, propagation)

    def _begin_delete(self, rt: ResourceType, current: Obj, propagation: str | None) -> Obj:
        meta = current["metadata"]
        if meta.get("deletionTimestamp"):
            return self.present(rt, current)  # already on its way
        finalizers = list(meta.get("finalizers") or [])
        system = {"Orphan": ORPHAN, "Foreground": FOREGROUND}.get(propagation or "")
        if system and system not in finalizers:
            finalizers.append(system)
        if not finalizers and rt.kind != "Namespace":
            return self.present(rt, self._remove(rt, current))
        marked = copy.deepcopy(current)
        marked["metadata"].update(deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0)
        if finalizers:
            marked["metadata"]["finalizers"] = finalizers
        if rt.kind == "Namespace":
            marked.setdefault("status", {})["phase"] = "Terminating"
        marked = self._commit(rt, "MODIFIED", marked, current)
        answer = self.present(rt, marked)
        self._collect(rt, self._space(rt).objects[object_key(marked)])
        return answer

    def _collect(self, rt: ResourceType, obj: Obj) -> None:
        """The garbage collector and namespace controller on an object being deleted."""
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if ORPHAN in finalizers:
            for dep_rt, dependent in self._dependents(obj):
                kept = copy.deepcopy(dependent)  # (dependents never change each other here)
                kept["metadata"]["ownerReferences"] = [
                    r for r in kept["metadata"].get("ownerReferences") or []
                    if r.get("uid") != meta["uid"]]
                if not kept["metadata"]["ownerReferences"]:
                    del kept["metadata"]["ownerReferences"]
                self._commit(dep_rt, "MODIFIED", kept, dependent)
            finalizers.remove(ORPHAN)
        if FOREGROUND in finalizers:
            for dep_rt, dependent in self._dependents(obj):
                if (found := self._space(dep_rt).get(object_key(dependent))) is not None:
                    self._begin_delete(dep_rt, found, "Foreground")
            finalizers.remove(FOREGROUND)
        if rt.kind == "Namespace":
            for dep_rt, dependent in self._contents(meta["name"]):
                if (found := self._space(dep_rt).get(object_key(dependent))) is not None:
                    self._begin_delete(dep_rt, found, None)
        if not finalizers:
            self._remove(rt, obj)
        elif finalizers != meta.get("finalizers"):
            kept = copy.deepcopy(obj)
            kept["metadata"]["finalizers"] = finalizers
            self._commit(rt, "MODIFIED", kept, obj)

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        """Remove it now; then its dependents (and a Namespace's contents) in the background."""
        gone = copy.deepcopy(obj)
        self._commit(rt, "DELETED", gone, obj)
        found = self._dependents(obj)
        if rt.kind == "Namespace":
            found += self._contents(obj["metadata"]["name"])
        for dep_rt, dependent in found:
            if (current := self._space(dep_rt).get(object_key(dependent))) is not None:
                self._begin_delete(dep_rt, current, None)
        return gone

    def _released(self, rt: ResourceType, current: Obj, result: Obj) -> bool:
        """An update of an object being deleted: may not add finalizers; True when it
        removes the last one (the object then goes, as the registry's Update does)."""
        if not current["metadata"].get("deletionTimestamp"):
            return False
        before = set(current["metadata"].get("finalizers") or [])
        added = [f for f in result["metadata"].get("finalizers") or [] if f not in before]
        if added:
            shown = ", ".join(f'"{f}"' for f in added)
            raise invalid(rt, result["metadata"]["name"], [(
                "metadata.finalizers", "Forbidden: no new finalizers can be added if the "
                f"object is being deleted, found new finalizers []string{{{shown}}}")])
        return not result["metadata"].get("finalizers")

    def _dependents(self, owner: Obj) -> list[tuple[ResourceType, Obj]]:
        uid = owner["metadata"]["uid"]
        return [(dep_rt, obj) for dep_rt in _storage_types()
                for obj in list(self._space(dep_rt).objects.values())
                if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or ())]

    def _contents(self, namespace: str) -> list[tuple[ResourceType, Obj]]:
        return [(dep_rt, obj) for dep_rt in _storage_types() if dep_rt.namespaced
                for obj in list(self._space(dep_rt).objects.values())
                if obj["metadata"].get("namespace") == namespace]


def is_gone(answer: Obj) -> bool:
    """Whether a delete's answer says the object went at once (no deletionTimestamp)."""
    return not (answer.get("metadata") or {}).get("deletionTimestamp")


def _storage_types() -> list[ResourceType]:
    return [RESOURCES[key] for key in sorted({t.storage_key for t in RESOURCES.values()})]


def _check_preconditions(rt: ResourceType, current: Obj, preconditions: dict[str, Any]) -> None:
    meta = current["metadata"]
    for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        wanted = preconditions.get(key)
        if wanted and str(wanted) != meta.get(key):
            raise ApiError(409, "Conflict", f"Operation cannot be fulfilled on {rt.group_resource} "
                           f'"{meta["name"]}": Precondition failed: {label} in precondition: '
                           f"{wanted}, {label} in object meta: {meta.get(key)}",
                           {"name": meta["name"], "group": rt.group, "kind": rt.plural})
