"""What an update of a stored object may change, as the kinds' update strategies say.

Owns the object an update stores, given the stored one and the one sent: a write to
the main resource keeps the server's metadata (uid, creationTimestamp, generation,
deletion marks, ...), the status of kinds with a status subresource, a Service's
allocated addresses and ports and a Namespace's `spec.finalizers`, and is then
defaulted and validated; a status write takes the status and, for a few kinds, some
metadata. Also whether an update changes anything at all, and when it moves
`metadata.generation`. Storing the result is `sandbox.store`'s.
"""

from __future__ import annotations

import copy
from typing import Any

from sandbox.defaults import apply_defaults
from sandbox.resources import ApiError, ResourceType
from sandbox.validation import validate

Obj = dict[str, Any]

# The only metadata a status write takes from its body (dropping it when the body has
# none): a Deployment's annotations, a ReplicaSet's and a Pod's labels and annotations.
# Every other key of metadata, and all metadata of other kinds, stays the stored
# object's. (The real status strategies' PrepareForUpdate let more of metadata through.)
_STATUS_TAKES_META = {"Deployment": ("annotations",), "ReplicaSet": ("labels", "annotations"),
                      "Pod": ("labels", "annotations")}

_SERVER_META = ("name", "namespace", "uid", "creationTimestamp", "generation",
                "deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion")


def updated(rt: ResourceType, current: Obj, new: Obj, subresource: str | None) -> Obj:
    """The object to store when `new` is written over `current` (a deep copy for a
    status write; `new` itself, completed, for a main one)."""
    if subresource == "status":
        result = copy.deepcopy(current)
        result["status"] = new.get("status") or {}
        for key in _STATUS_TAKES_META.get(rt.kind, ()):
            if (new.get("metadata") or {}).get(key):
                result["metadata"][key] = new["metadata"][key]
            else:
                result["metadata"].pop(key, None)
        return result
    if subresource is not None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    _keep_server_fields(rt, current, new)
    apply_defaults(rt, new)
    validate(rt, new, current)
    return new


def same_content(a: Obj, b: Obj) -> bool:
    """Whether an update changes nothing but what every write changes."""
    return _without_volatile(a) == _without_volatile(b)


def next_generation(rt: ResourceType, current: Obj, result: Obj) -> None:
    """Move `result`'s generation on when its desired state differs from `current`'s."""
    if rt.has_generation and _generation_body(rt, current) != _generation_body(rt, result):
        result["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1


def _keep_server_fields(rt: ResourceType, current: Obj, result: Obj) -> None:
    """Carry over what a client cannot change with a main-resource write."""
    meta = result.setdefault("metadata", {})
    for key in _SERVER_META:
        if key in current["metadata"]:
            meta[key] = current["metadata"][key]
        else:
            meta.pop(key, None)
    if "managedFields" not in meta and "managedFields" in current["metadata"]:
        meta["managedFields"] = current["metadata"]["managedFields"]
    if rt.has_status:
        if "status" in current:
            result["status"] = copy.deepcopy(current["status"])
        else:
            result.pop("status", None)
    if rt.kind == "Service":
        _keep_allocations(current.get("spec") or {}, result.setdefault("spec", {}))
    if rt.kind == "Namespace":  # only the namespace controller's finalize changes them
        finalizers = (current.get("spec") or {}).get("finalizers")
        spec = result.setdefault("spec", {})
        if finalizers is None:
            spec.pop("finalizers", None)
        else:
            spec["finalizers"] = list(finalizers)


def _keep_allocations(old: Obj, new: Obj) -> None:
    for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
        if key in old and not new.get(key):
            new[key] = copy.deepcopy(old[key])
    old_ports = {p.get("port"): p for p in old.get("ports") or ()}
    for port in new.get("ports") or ():
        previous = old_ports.get(port.get("port"))
        if previous and previous.get("nodePort") and not port.get("nodePort"):
            port["nodePort"] = previous["nodePort"]


def _without_volatile(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    meta = out.get("metadata") or {}
    meta.pop("resourceVersion", None)
    for entry in meta.get("managedFields") or ():
        entry.pop("time", None)
    return out


def _generation_body(rt: ResourceType, obj: Obj) -> Any:
    """What counts as the desired state: `spec` for built-ins, and a Deployment's
    annotations too (they are copied to its ReplicaSets: deployment strategy's
    PrepareForUpdate); all but metadata and status for custom resources."""
    if rt.custom:
        skip = ("metadata", "status", "apiVersion", "kind")
        return {k: v for k, v in obj.items() if k not in skip}
    if rt.kind == "Deployment":
        return obj.get("spec"), (obj.get("metadata") or {}).get("annotations")
    return obj.get("spec")
