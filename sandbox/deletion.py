"""Deleting an object as the registry does: finalizers, propagation policies, namespaces.

Owns what a DELETE does to the stored object itself, as the generic registry
(staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go) and the
namespace registry (pkg/registry/core/namespace/storage) do:

- the propagation policy decides the garbage collector's finalizers
  (deletionFinalizersForGarbageCollection): `Orphan` adds `orphan`, `Foreground`
  adds `foregroundDeletion`, `Background` removes both, no policy keeps what the
  object has;
- an object left without finalizers goes at once; one with finalizers only gets
  `deletionTimestamp` (and `deletionGracePeriodSeconds: 0`, and its generation moves
  on) and stays, answered as it now is, until an update removes its last finalizer
  (deleteWithoutFinalizers: the update is answered with the object it made, at the
  stored resourceVersion, and the DELETED event carries the object last stored);
  no finalizer may be added meanwhile; deleting it again may change the collector's
  finalizers, nothing else;
- a Namespace is first marked: `deletionTimestamp`, `status.phase: Terminating`;
  deleting it again while its `spec.finalizers` are not empty is 409 Conflict. It
  goes once both its finalizer lists are empty;
- a dry run answers as the delete would (marked, with the stored resourceVersion, or
  gone at once) and stores nothing (the registry's dry-run GuaranteedUpdate).

What follows for dependents and a namespace's contents (the garbage collector and the
namespace controller) is `sandbox.collector`'s. Mixed into `sandbox.store.Store`,
whose lock is held in the underscored methods.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sandbox.keyspace import key_of
from sandbox.resources import ApiError, ResourceType, invalid, now_rfc3339, resource

if TYPE_CHECKING:
    import threading

    from sandbox.keyspace import Keyspace

Obj = dict[str, Any]
ORPHAN, FOREGROUND = "orphan", "foregroundDeletion"


class Deletion:
    """The delete operations of the Store."""

    if TYPE_CHECKING:
        _lock: threading.RLock

        def present(self, rt: ResourceType, obj: Obj) -> Obj: ...
        def _space(self, rt: ResourceType) -> Keyspace: ...
        def _ns(self, rt: ResourceType, namespace: str | None) -> str: ...
        def _settle(self) -> None: ...
        def _commit(self, rt: ResourceType, kind: str, obj: Obj, old: Obj | None, *,
                    dry_run: bool = False) -> Obj: ...

    def delete(self, key: str, namespace: str | None, name: str, *, dry_run: bool = False,
               preconditions: Mapping[str, Any] | None = None,
               propagation: str | None = None) -> Obj | None:
        """Delete an object: the object as answered, or None when there is none.

        `preconditions` ({uid, resourceVersion}) must match the stored object (409).
        Whether it went at once is `is_gone(answer)`: a pending deletion answers with
        the object carrying `deletionTimestamp`. The collectors' work it gives is done
        before this returns.
        """
        rt = resource(key)
        with self._lock:
            current = self._space(rt).get(key_of(self._ns(rt, namespace), name))
            if current is None:
                return None
            _check_preconditions(rt, current, preconditions or {})
            answer = self._begin_delete(rt, current, propagation, dry_run=dry_run)
        self._settle()
        return answer

    def _begin_delete(self, rt: ResourceType, current: Obj, propagation: str | None, *,
                      dry_run: bool = False) -> Obj:
        """The registry's Delete of a stored object: the object as it now is, or as it
        was when it went at once (a dry run: as it would be, nothing stored)."""
        meta = current["metadata"]
        deleting = bool(meta.get("deletionTimestamp"))
        if rt.kind == "Namespace" and not deleting:
            return self._terminate(rt, current, propagation, dry_run)
        if rt.kind == "Namespace" and (current.get("spec") or {}).get("finalizers"):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on namespaces '
                           f'"{meta["name"]}": The system is ensuring all content is removed '
                           "from this namespace.  Upon completion, this namespace will "
                           "automatically be purged by the system.",
                           {"name": meta["name"], "kind": "namespaces"})
        before = list(meta.get("finalizers") or [])
        finalizers = gc_finalizers(before, propagation)
        if not finalizers:
            return self.present(rt, self._remove(rt, current, dry_run))
        if deleting and finalizers == before:
            return self.present(rt, current)  # already on its way: nothing changes
        marked = copy.deepcopy(current)
        marked["metadata"]["finalizers"] = finalizers
        if not deleting:  # markAsDeleting, which also moves a generation on
            marked["metadata"].update(deletionTimestamp=now_rfc3339(),
                                      deletionGracePeriodSeconds=0)
            if meta.get("generation"):
                marked["metadata"]["generation"] = meta["generation"] + 1
        return self._commit(rt, "MODIFIED", marked, current, dry_run=dry_run)

    def _terminate(self, rt: ResourceType, namespace: Obj, propagation: str | None,
                   dry_run: bool) -> Obj:
        """The first DELETE of a namespace: it only starts terminating."""
        marked = copy.deepcopy(namespace)
        meta = marked["metadata"]
        meta["deletionTimestamp"] = now_rfc3339()
        marked.setdefault("status", {})["phase"] = "Terminating"
        finalizers = gc_finalizers(list(meta.get("finalizers") or []), propagation)
        if finalizers:
            meta["finalizers"] = finalizers
        else:
            meta.pop("finalizers", None)
        return self._commit(rt, "MODIFIED", marked, namespace, dry_run=dry_run)

    def _remove(self, rt: ResourceType, obj: Obj, dry_run: bool = False) -> Obj:
        """Remove it now (its dependents are the garbage collector's)."""
        gone = copy.deepcopy(obj)
        self._commit(rt, "DELETED", gone, obj, dry_run=dry_run)
        return gone

    def _update_deleting(self, rt: ResourceType, current: Obj, new: Obj) -> None:
        """Store a collector's update of an object being deleted; when nothing holds it
        any more it goes instead (ShouldDeleteDuringUpdate), its DELETED event carrying
        it as it was stored, as etcd's does."""
        if _held(rt, new):
            self._commit(rt, "MODIFIED", new, current)
        else:
            self._remove(rt, current)

    def _released(self, rt: ResourceType, current: Obj, result: Obj) -> bool:
        """An update of an object being deleted: may not add finalizers; True when nothing
        holds it after the update (it then goes, as the registry's Update does)."""
        if not current["metadata"].get("deletionTimestamp"):
            return False
        before = set(current["metadata"].get("finalizers") or [])
        added = [f for f in result["metadata"].get("finalizers") or [] if f not in before]
        if added:
            shown = ", ".join(f'"{f}"' for f in added)
            raise invalid(rt, result["metadata"]["name"], [(
                "metadata.finalizers", "Forbidden: no new finalizers can be added if the "
                f"object is being deleted, found new finalizers []string{{{shown}}}")])
        return not _held(rt, result)


def is_gone(answer: Obj) -> bool:
    """Whether a delete's answer says the object went at once (no deletionTimestamp)."""
    return not (answer.get("metadata") or {}).get("deletionTimestamp")


def gc_finalizers(finalizers: list[str], policy: str | None) -> list[str]:
    """The finalizers a delete with `policy` leaves: `finalizers` itself when the set
    does not change (deletionFinalizersForGarbageCollection)."""
    if policy is None:  # the object's own say, then the kinds' default: Background
        decided = next((f for f in finalizers if f in (ORPHAN, FOREGROUND)), None)
        orphan, foreground = decided == ORPHAN, decided == FOREGROUND
    else:
        orphan, foreground = policy == "Orphan", policy == "Foreground"
    wanted = [f for f in finalizers if f not in (ORPHAN, FOREGROUND)]
    wanted += [ORPHAN] * orphan + [FOREGROUND] * foreground
    return finalizers if set(wanted) == set(finalizers) else wanted


def _held(rt: ResourceType, obj: Obj) -> bool:
    """Whether finalizers still hold an object (a Namespace's own ones too)."""
    if obj["metadata"].get("finalizers"):
        return True
    return rt.kind == "Namespace" and bool((obj.get("spec") or {}).get("finalizers"))


def _check_preconditions(rt: ResourceType, current: Obj,
                         preconditions: Mapping[str, Any]) -> None:
    meta = current["metadata"]
    for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        wanted = preconditions.get(key)
        if wanted and str(wanted) != meta.get(key):
            raise ApiError(409, "Conflict", f"Operation cannot be fulfilled on {rt.group_resource} "
                           f'"{meta["name"]}": Precondition failed: {label} in precondition: '
                           f"{wanted}, {label} in object meta: {meta.get(key)}",
                           {"name": meta["name"], **({"group": rt.group} if rt.group else {}),
                            "kind": rt.plural})
