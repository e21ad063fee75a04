"""The garbage collector and the namespace controller, run right after each write.

Owns what kube-controller-manager's garbage collector (pkg/controller/garbagecollector)
and namespace controller (pkg/controller/namespace/deletion) do once objects are being
deleted, on the store's own indexes (objects by uid, dependents by owner uid) instead
of an informer's graph:

- `_observe` is the graph builder: after each commit it queues what the change gives
  to do (an object gone: its dependents, and its owners waiting for it; a reference
  that no longer blocks: its waiting owner; a reference added that names no owner
  there is, the real graph's virtual node: the object itself; an object starting to
  orphan, or to wait for its dependents; a namespace starting to terminate, or any
  change inside one). Like the real one it queues nothing for a dependent added
  under an owner that already waits: that owner's next look finds it;
- a dependent whose owner is gone or waits for it (attemptToDeleteItem): while another
  owner stays, it only loses its references to those; otherwise it is deleted, in the
  foreground when an owner waits for it and it has dependents of its own, else as its
  own finalizers say (Background when they say nothing). An owner is gone unless its
  kind and name (in the dependent's namespace) hold the reference's uid; a reference
  the collector cannot resolve (a kind not served, or a namespaced kind named by a
  cluster-scoped object) leaves the object alone;
- an owner deleted in the foreground keeps `foregroundDeletion`, and stays, until no
  dependent with `blockOwnerDeletion: true` is left; then the finalizer goes, and the
  owner with it unless other finalizers hold it; `orphan`: every dependent loses its
  reference to the owner, then the finalizer goes;
- a terminating namespace: everything in it is deleted (Background, a chunk at a
  time), its status conditions say what remains and which finalizers hold it, and
  once nothing remains its `kubernetes` finalizer goes, and the namespace with it.

`_settle()` runs the queue after every write, one item per hold of the lock: a write
returns once the work it gave is done, and readers get in between the steps.
Mixed into `sandbox.store.Store`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from sandbox.deletion import FOREGROUND, ORPHAN, gc_finalizers
from sandbox.keyspace import object_key, scope_of
from sandbox.resources import RESOURCES, ResourceType, now_rfc3339

if TYPE_CHECKING:
    import threading

    from sandbox.keyspace import Keyspace

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Work = tuple[str, str, str, str]  # (step, storage key, object key, uid)
NAMESPACES = "v1/namespaces"
NAMESPACE_FINALIZER = "kubernetes"
CHUNK = 100  # objects a namespace's controller deletes per hold of the lock

# The conditions of a terminating namespace when all is well (status_condition_utils.go).
_CONDITIONS_OK = {
    "NamespaceDeletionDiscoveryFailure": ("ResourcesDiscovered",
                                          "All resources successfully discovered"),
    "NamespaceDeletionGroupVersionParsingFailure": ("ParsedGroupVersions",
                                                    "All legacy kube types successfully parsed"),
    "NamespaceDeletionContentFailure": (
        "ContentDeleted", "All content successfully deleted, may be waiting on finalization"),
    "NamespaceContentRemaining": ("ContentRemoved", "All content successfully removed"),
    "NamespaceFinalizersRemaining": ("ContentRemoved", "All content successfully removed"),
}


class Collector:
    """The collectors' part of the Store (call the underscored methods with the lock held,
    but `_settle`)."""

    if TYPE_CHECKING:
        _lock: threading.RLock
        _uids: dict[str, tuple[str, str]]
        _owned: dict[str, set[tuple[str, str]]]
        _work: dict[Work, None]

        def _space(self, rt: ResourceType) -> Keyspace: ...
        def _commit(self, rt: ResourceType, kind: str, obj: Obj, old: Obj | None, *,
                    dry_run: bool = False) -> Obj: ...
        def _begin_delete(self, rt: ResourceType, current: Obj, propagation: str | None, *,
                          dry_run: bool = False) -> Obj: ...
        def _update_deleting(self, rt: ResourceType, current: Obj, new: Obj) -> None: ...

    # ---- the graph builder: indexes and queued work ----------------------------------

    def _index(self, rt: ResourceType, key: str, obj: Obj | None, old: Obj | None) -> None:
        """Keep the uid and owner indexes true to a commit (`obj` None: it is gone)."""
        held, owners = _owner_uids(old), _owner_uids(obj)
        for uid in held - owners:
            dependents = self._owned.get(uid)
            if dependents is not None:
                dependents.discard((rt.storage_key, key))
                if not dependents:
                    del self._owned[uid]
        for uid in owners - held:
            self._owned.setdefault(uid, set()).add((rt.storage_key, key))
        uid = ((obj or old) or {}).get("metadata", {}).get("uid")
        if uid and obj is None:
            self._uids.pop(uid, None)
        elif uid:
            self._uids[uid] = (rt.storage_key, key)

    def _observe(self, rt: ResourceType, kind: str, obj: Obj, old: Obj | None) -> None:
        """Queue the work a committed change gives the collectors."""
        meta, before = obj["metadata"], (old or {}).get("metadata") or {}
        uid = meta.get("uid") or ""
        if kind == "DELETED":
            for skey, key in list(self._owned.get(uid, ())):
                self._queue("delete", skey, key)
            for ref in meta.get("ownerReferences") or ():
                self._queue_waiting(ref.get("uid"))
        else:
            refs = {r.get("uid"): r for r in meta.get("ownerReferences") or ()}
            for ref in before.get("ownerReferences") or ():
                now = refs.pop(ref.get("uid"), None)
                if ref.get("blockOwnerDeletion") and not (now or {}).get("blockOwnerDeletion"):
                    self._queue_waiting(ref.get("uid"))
            if any(self._owner(obj, ref) is None for ref in refs.values()):
                # an added reference names no owner the graph has (a virtual node,
                # which the real collector verifies and, found absent, deletes)
                self._queue("delete", rt.storage_key, object_key(obj))
            if meta.get("deletionTimestamp"):
                self._observe_deleting(rt, obj, before)
        if rt.namespaced:
            namespace = self._space(RESOURCES[NAMESPACES]).get(meta.get("namespace") or "")
            if namespace is not None and namespace["metadata"].get("deletionTimestamp"):
                self._queue("namespace", NAMESPACES, namespace["metadata"]["name"])

    def _observe_deleting(self, rt: ResourceType, obj: Obj, before: Obj) -> None:
        meta, key = obj["metadata"], object_key(obj)
        finalizers, was = meta.get("finalizers") or (), before.get("finalizers") or ()
        deleting_before = bool(before.get("deletionTimestamp"))
        if ORPHAN in finalizers and not (deleting_before and ORPHAN in was):
            self._queue("orphan", rt.storage_key, key)
        elif FOREGROUND in finalizers and not (deleting_before and FOREGROUND in was):
            for skey, dependent in list(self._owned.get(meta.get("uid") or "", ())):
                self._queue("delete", skey, dependent)
            self._queue("delete", rt.storage_key, key)
        if rt.kind == "Namespace" and not deleting_before:
            self._queue("namespace", rt.storage_key, key)

    def _queue(self, step: str, skey: str, key: str) -> None:
        obj = self._space(RESOURCES[skey]).get(key)
        if obj is not None:
            self._work[(step, skey, key, obj["metadata"].get("uid") or "")] = None

    def _queue_waiting(self, uid: str | None) -> None:
        """Queue an owner that waits for its dependents, to look at them again."""
        found = self._uids.get(uid or "")
        owner = self._space(RESOURCES[found[0]]).get(found[1]) if found else None
        if found and owner is not None and _waiting(owner):
            self._queue("delete", *found)

    def _settle(self) -> None:
        """Run the queued work to the end, one item per hold of the lock (the queue is
        seen empty under the lock, so work another thread took is done too)."""
        while True:
            with self._lock:
                if not self._work:
                    return
                item = next(iter(self._work))
                del self._work[item]
                self._run(item)
            time.sleep(0)  # let a thread waiting for the lock have it between two items

    def _run(self, item: Work) -> None:
        step, skey, key, uid = item
        rt = RESOURCES[skey]
        obj = self._space(rt).get(key)
        if obj is None or obj["metadata"].get("uid") != uid:
            return
        try:
            {"delete": self._attempt_delete, "orphan": self._orphan,
             "namespace": self._sync_namespace}[step](rt, obj)
        except Exception:  # one object's trouble must not stop the others'
            log.exception("%s of %s %s failed", step, skey, key)

    # ---- the garbage collector ---------------------------------------------------------

    def _attempt_delete(self, rt: ResourceType, obj: Obj) -> None:
        """attemptToDeleteItem: an object some owner of which is gone or waits for it,
        or an owner waiting for its dependents."""
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            if _waiting(obj):
                self._process_waiting(rt, obj)
            return  # being deleted: its own dependents are seen to once it is gone
        refs = meta.get("ownerReferences") or []
        if not refs or not all(_resolvable(obj, ref) for ref in refs):
            return  # classifyReferences fails: the real collector retries, or gives up
        solid: list[Obj] = []
        dangling: list[Obj] = []
        waiting: list[Obj] = []
        for ref in refs:
            owner = self._owner(obj, ref)
            (dangling if owner is None else waiting if _waiting(owner) else solid).append(ref)
        if solid:
            if dangling or waiting:
                self._drop_references(rt, obj, {r.get("uid") for r in dangling + waiting})
            return
        if waiting and self._owned.get(meta.get("uid") or ""):
            if any(_waiting(dep) for _, dep in self._dependents(meta.get("uid"))):
                obj = self._unblock(rt, obj)  # a cycle of waiting objects: break it
            self._begin_delete(rt, obj, "Foreground")
            return
        finalizers = meta.get("finalizers") or ()
        self._begin_delete(rt, obj, "Orphan" if ORPHAN in finalizers
                           else "Foreground" if FOREGROUND in finalizers else "Background")

    def _process_waiting(self, rt: ResourceType, owner: Obj) -> None:
        """processDeletingDependentsItem: the owner goes once nothing blocks it."""
        uid = owner["metadata"].get("uid")
        blocking = [(drt, dep) for drt, dep in self._dependents(uid) if any(
            r.get("uid") == uid and r.get("blockOwnerDeletion")
            for r in dep["metadata"].get("ownerReferences") or ())]
        if not blocking:
            self._update_deleting(rt, owner, _without_finalizer(owner, FOREGROUND))
        for drt, dep in blocking:
            if not _waiting(dep):
                self._queue("delete", drt.storage_key, object_key(dep))

    def _orphan(self, rt: ResourceType, owner: Obj) -> None:
        """attemptToOrphan: the dependents lose their reference, then the finalizer goes."""
        meta = owner["metadata"]
        if not meta.get("deletionTimestamp") or ORPHAN not in (meta.get("finalizers") or ()):
            return
        for drt, dep in list(self._dependents(meta.get("uid"))):
            self._drop_references(drt, dep, {meta.get("uid")})
        self._update_deleting(rt, owner, _without_finalizer(owner, ORPHAN))

    def _owner(self, dependent: Obj, ref: Obj) -> Obj | None:
        """The owner a reference names, if it exists (isDangling: found by kind and name
        in the dependent's namespace, with the reference's uid)."""
        found = self._uids.get(ref.get("uid") or "")
        if found is None:
            return None
        ort = RESOURCES[found[0]]
        owner = self._space(ort).get(found[1])
        if owner is None or (ort.kind, ort.group, owner["metadata"]["name"]) != (
                ref.get("kind"), (ref.get("apiVersion") or "").rpartition("/")[0],
                ref.get("name")):
            return None
        if ort.namespaced and owner["metadata"].get("namespace") != dependent["metadata"].get(
                "namespace"):
            return None
        return owner

    def _dependents(self, uid: str | None) -> Iterator[tuple[ResourceType, Obj]]:
        for skey, key in list(self._owned.get(uid or "", ())):
            drt = RESOURCES[skey]
            if (dep := self._space(drt).get(key)) is not None:
                yield drt, dep

    def _drop_references(self, rt: ResourceType, obj: Obj, uids: set[Any]) -> None:
        kept = copy.deepcopy(obj)
        refs = [r for r in kept["metadata"].get("ownerReferences") or []
                if r.get("uid") not in uids]
        if refs:
            kept["metadata"]["ownerReferences"] = refs
        else:
            kept["metadata"].pop("ownerReferences", None)
        self._commit(rt, "MODIFIED", kept, obj)

    def _unblock(self, rt: ResourceType, obj: Obj) -> Obj:
        unblocked = copy.deepcopy(obj)
        for ref in unblocked["metadata"].get("ownerReferences") or ():
            if ref.get("blockOwnerDeletion"):
                ref["blockOwnerDeletion"] = False
        self._commit(rt, "MODIFIED", unblocked, obj)
        return unblocked

    # ---- the namespace controller ------------------------------------------------------

    def _sync_namespace(self, rt: ResourceType, namespace: Obj) -> None:
        """Delete a chunk of what the terminating namespace holds; once all of it has
        been asked to go, report what remains, and finalize the namespace when nothing
        does."""
        meta = namespace["metadata"]
        finalizers = (namespace.get("spec") or {}).get("finalizers") or []
        if not meta.get("deletionTimestamp") or NAMESPACE_FINALIZER not in finalizers:
            return
        name = meta["name"]
        todo = list(islice(((crt, obj) for crt, obj in self._contents(name)
                            if _deletes_anything(obj)), CHUNK + 1))
        for crt, obj in todo[:CHUNK]:
            if (current := self._space(crt).get(object_key(obj))) is not None:
                self._begin_delete(crt, current, "Background")
        if len(todo) > CHUNK:
            self._queue("namespace", rt.storage_key, name)
            return
        remaining = list(self._contents(name))
        namespace = self._space(rt).get(name) or namespace
        status = namespace.get("status") or {}
        conditions = _conditions(status.get("conditions") or [], remaining, now_rfc3339())
        if conditions != status.get("conditions"):
            reported = copy.deepcopy(namespace)
            reported.setdefault("status", {})["conditions"] = conditions
            self._commit(rt, "MODIFIED", reported, namespace)
            namespace = reported
        if not remaining:
            finalized = copy.deepcopy(namespace)
            finalized["spec"]["finalizers"] = [f for f in finalizers if f != NAMESPACE_FINALIZER]
            self._update_deleting(rt, namespace, finalized)

    def _contents(self, namespace: str) -> Iterator[tuple[ResourceType, Obj]]:
        for crt in _namespaced_types():
            for _, obj in self._space(crt).scan(*scope_of(namespace)):
                yield crt, obj


def _resolvable(dependent: Obj, ref: Obj) -> bool:
    """Whether the collector can look a reference's owner up (isDangling): its kind is
    served at that version, and is not a namespaced kind named by a cluster-scoped
    object."""
    kind = next((t for t in RESOURCES.values() if (t.api_version, t.kind) == (
        ref.get("apiVersion"), ref.get("kind"))), None)
    return kind is not None and not (kind.namespaced and not dependent["metadata"].get(
        "namespace"))


def _owner_uids(obj: Obj | None) -> set[str]:
    if obj is None:
        return set()
    return {r["uid"] for r in obj["metadata"].get("ownerReferences") or () if r.get("uid")}


def _waiting(obj: Obj) -> bool:
    """Whether an object is being deleted in the foreground, waiting for its dependents."""
    meta = obj["metadata"]
    return bool(meta.get("deletionTimestamp")) and FOREGROUND in (meta.get("finalizers") or ())


def _without_finalizer(obj: Obj, finalizer: str) -> Obj:
    kept = copy.deepcopy(obj)
    finalizers = [f for f in kept["metadata"].get("finalizers") or [] if f != finalizer]
    if finalizers:
        kept["metadata"]["finalizers"] = finalizers
    else:
        kept["metadata"].pop("finalizers", None)
    return kept


def _deletes_anything(obj: Obj) -> bool:
    """Whether a Background delete would change the object (it strips the collector's
    finalizers from one already being deleted)."""
    meta = obj["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    return not meta.get("deletionTimestamp") or gc_finalizers(finalizers, "Background") != (
        finalizers)


def _namespaced_types() -> list[ResourceType]:
    return [RESOURCES[key] for key in sorted({t.storage_key for t in RESOURCES.values()
                                              if t.namespaced})]


def _conditions(old: list[Obj], remaining: list[tuple[ResourceType, Obj]], now: str) -> list[Obj]:
    """A terminating namespace's conditions (namespaceConditionUpdater): what remains in
    it, by resource, and which finalizers hold that; a condition's lastTransitionTime
    moves only when its status does."""
    resources = Counter(f"{crt.plural}.{crt.group}" for crt, _ in remaining)
    held = Counter(f for _, obj in remaining for f in obj["metadata"].get("finalizers") or ())
    wanted = {kind: ("False", *ok) for kind, ok in _CONDITIONS_OK.items()}
    if resources:
        wanted["NamespaceContentRemaining"] = ("True", "SomeResourcesRemain",
                                               "Some resources are remaining: " + ", ".join(
                                                   sorted(f"{r} has {n} resource instances"
                                                          for r, n in resources.items())))
    if held:
        wanted["NamespaceFinalizersRemaining"] = ("True", "SomeFinalizerRemain",
                                                  "Some finalizers are remaining: " + ", ".join(
                                                      sorted(f"{f} in {n} resource instances"
                                                             for f, n in held.items())))
    conditions = [dict(c) for c in old]
    for kind, (status, reason, message) in wanted.items():
        found = next((c for c in conditions if c.get("type") == kind), None)
        if found is None:
            conditions.append({"type": kind, "status": status, "lastTransitionTime": now,
                               "reason": reason, "message": message})
            continue
        if found.get("status") != status:
            found["lastTransitionTime"] = now
        found.update(status=status, reason=reason, message=message)
    return conditions
