"""The sandbox cluster's state: every object, one global resourceVersion, watches.

Owns what etcd plus the generic registry own in a real cluster: create/update
with optimistic concurrency, server-set metadata (uid, creationTimestamp,
resourceVersion, generation), a bounded per-resource event history for watches
(and lists as of an earlier resourceVersion), and change subscriptions for
in-process controllers (the kubelet). Deletion (finalizers, propagation, the
garbage collector) is `sandbox.deletion`'s, mixed in. The resource catalogue and
`ApiError` live in `sandbox.resources` (re-exported here), defaulting in
`sandbox.defaults`, validation in `sandbox.validation`; HTTP, patch formats and
discovery in other modules.

All state sits behind one lock. Watchers (`sandbox.watchers`) get events pushed
into their own unbounded queues and subscribers are called from a dispatcher
thread, so neither can block a writer.
"""

from __future__ import annotations

import copy
import logging
import queue
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.defaults import apply_defaults, drop_nulls
from sandbox.deletion import Deletion
from sandbox.resources import (
    RESOURCES,
    ApiError,
    ResourceType,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    missing_resource_version,
    not_found,
    now_rfc3339,
    present,
    resource,
)
from sandbox.selectors import (
    FieldRequirement,
    Requirement,
    SelectorError,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from sandbox.validation import validate
from sandbox.watchers import Event, Watcher

__all__ = ["RESOURCES", "ApiError", "ResourceType", "Store", "Watcher", "resource"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


Subscriber = Callable[[str, str, Obj], None]


@dataclass
class _History:
    events: deque[Event]
    dropped_upto: int = 0  # highest resourceVersion no longer in `events`


@dataclass
class _State:
    objects: dict[str, dict[tuple[str, str], Obj]] = field(default_factory=dict)
    history: dict[str, _History] = field(default_factory=dict)


class Store(Deletion):
    """Thread-safe object storage with one global resourceVersion counter."""

    def __init__(self, *, history: int = 500) -> None:
        self._lock = threading.RLock()
        self._rv = 0
        self._history_size = history
        self._state = _State()
        self._watchers: list[Watcher] = []
        self._subscribers: list[Subscriber] = []
        self._dispatch: queue.SimpleQueue[tuple[str, str, Obj] | None] = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None

    # ---- reads -------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def present(self, rt: ResourceType, obj: Obj) -> Obj:
        """A deep copy of a stored object as served at `rt`'s version."""
        return present(rt, obj)

    def get(self, key: str, namespace: str | None, name: str) -> Obj | None:
        rt = resource(key)
        with self._lock:
            obj = self._table(rt).get((self._ns(rt, namespace), name))
            return None if obj is None else self.present(rt, obj)

    def list(self, key: str, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None, at: int | None = None) -> tuple[list[Obj], int]:
        """Matching objects sorted by namespace and name, and the list's resourceVersion.

        `at` lists them as they were at that resourceVersion (a paged list's snapshot),
        from the watch history; ApiError 410 Expired when the history no longer reaches
        back that far.
        """
        rt = resource(key)
        labels, fields = _parse_selectors(rt, label_selector, field_selector)
        with self._lock:
            table = self._table(rt) if at is None else self._table_at(rt, at)
            items = [obj for (ns, _), obj in sorted(table.items())
                     if (not namespace or ns == namespace)
                     and labels_match(labels, obj["metadata"].get("labels"))
                     and fields_match(fields, obj)]
            return [self.present(rt, o) for o in items], self._rv if at is None else at

    def _table_at(self, rt: ResourceType, rv: int) -> dict[tuple[str, str], Obj]:
        """The objects of `rt` as of resourceVersion `rv`: today's, with later events undone."""
        history = self._history(rt)
        if rv < history.dropped_upto or rv > self._rv:
            raise ApiError(410, "Expired", f"too old resource version: {rv}")
        table = dict(self._table(rt))
        for event in reversed(history.events):
            if event.rv <= rv:
                break
            meta = event.obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            if event.type == "ADDED":
                table.pop(key, None)
            elif event.old is not None:
                table[key] = event.old
        return table

    # ---- writes ------------------------------------------------------------------------

    def create(self, key: str, namespace: str | None, obj: Obj, *, dry_run: bool = False) -> Obj:
        """Store a new object; 409 AlreadyExists, 404 for a missing namespace."""
        rt = resource(key)
        obj = drop_nulls(obj)
        meta = obj.setdefault("metadata", {})
        ns = self._ns(rt, namespace or meta.get("namespace"))
        if rt.namespaced and meta.get("namespace") and namespace and meta["namespace"] != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace "
                              "sent on the request")
        with self._lock:
            namespaces = RESOURCES["v1/namespaces"]
            if rt.namespaced and ("", ns) not in self._table(namespaces):
                raise not_found(namespaces, ns)
            if rt.namespaced and self._table(namespaces)[("", ns)]["metadata"].get(
                    "deletionTimestamp"):
                raise forbidden(rt, meta.get("name") or "", f"unable to create new content in "
                                f"namespace {ns} because it is being terminated")
            name = meta.get("name") or self._generate_name(rt, ns, meta.get("generateName"))
            meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
            for transient in ("resourceVersion", "deletionTimestamp", "selfLink"):
                meta.pop(transient, None)
            if rt.namespaced:
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            if rt.has_generation:
                meta["generation"] = 1
            if rt.has_status:  # status is the controllers' to write, never the creator's
                obj.pop("status", None)
                if not rt.custom:
                    obj["status"] = {}
            apply_defaults(rt, obj)
            validate(rt, obj)  # before the name is checked, as BeforeCreate runs first
            if (ns, name) in self._table(rt):
                raise already_exists(rt, name)
            return self._commit(rt, "ADDED", obj, None, dry_run=dry_run)

    def update(self, key: str, namespace: str | None, obj: Obj, *,
               subresource: str | None = None, dry_run: bool = False) -> Obj:
        """Replace an object (or only its status); 409 when metadata.resourceVersion is stale."""
        rt = resource(key)
        name = (obj.get("metadata") or {}).get("name") or ""
        with self._lock:
            current = self._table(rt).get((self._ns(rt, namespace), name))
            if current is None:
                raise not_found(rt, name)
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if not rv and rt.custom and subresource is None:
                raise missing_resource_version(rt, name)
            if rv and str(rv) != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            return self._replace(rt, current, copy.deepcopy(obj), subresource, dry_run)

    def mutate(self, key: str, namespace: str | None, name: str, change: Callable[[Obj], Obj], *,
               subresource: str | None = None, dry_run: bool = False) -> Obj:
        """Atomically read, transform and write one object (the basis of PATCH).

        `change` gets a deep copy and returns the new object; it runs under the store
        lock, so it must be quick and must not call the store. A resourceVersion it
        leaves in the result must still be current (409 otherwise).
        """
        rt = resource(key)
        with self._lock:
            current = self._table(rt).get((self._ns(rt, namespace), name))
            if current is None:
                raise not_found(rt, name)
            new = change(self.present(rt, current))
            meta = new.setdefault("metadata", {})
            rv = meta.get("resourceVersion")
            if rv and str(rv) != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            return self._replace(rt, current, new, subresource, dry_run)

    # ---- watches and subscriptions -------------------------------------------------------

    def watch(self, key: str, namespace: str | None, *, since_rv: int | None,
              label_selector: str | None = None, field_selector: str | None = None) -> Watcher:
        """Events after `since_rv`; when it is None or 0, ADDED for every current object first.

        Raises ApiError 410 Expired when events after `since_rv` are no longer kept.
        """
        rt = resource(key)
        labels, fields = _parse_selectors(rt, label_selector, field_selector)
        watcher = Watcher(rt, namespace, labels, fields, on_close=self._unregister)
        with self._lock:
            if not since_rv:
                for _, obj in sorted(self._table(rt).items()):
                    watcher.offer(Event(self._rv, "ADDED", rt.storage_key, obj))
            else:
                history = self._history(rt)
                if since_rv < history.dropped_upto:
                    oldest = history.events[0].rv if history.events else self._rv + 1
                    raise ApiError(410, "Expired", f"too old resource version: {since_rv} "
                                   f"({oldest - 1})")
                for event in history.events:
                    if event.rv > since_rv:
                        watcher.offer(event)
            self._watchers.append(watcher)
        return watcher

    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback(event_type, key, obj)` after every change, in commit order.

        Callbacks run on one dispatcher thread (never under the store lock), so they
        may call the store; a slow callback delays later callbacks, not writers.
        """
        with self._lock:
            self._subscribers.append(callback)
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(target=self._dispatch_loop,
                                                    name="store-dispatch", daemon=True)
                self._dispatcher.start()

    def close(self) -> None:
        """End every watch and stop calling subscribers."""
        with self._lock:
            watchers, self._watchers = list(self._watchers), []
            self._subscribers = []
        for watcher in watchers:
            watcher.close()
        self._dispatch.put(None)

    def _unregister(self, watcher: Watcher) -> None:
        with self._lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    def _dispatch_loop(self) -> None:
        while (item := self._dispatch.get()) is not None:
            with self._lock:
                subscribers = list(self._subscribers)
            for callback in subscribers:
                try:
                    callback(*item)
                except Exception:
                    log.exception("store subscriber %r failed", callback)

    # ---- internals (call with the lock held) --------------------------------------------

    @staticmethod
    def _ns(rt: ResourceType, namespace: str | None) -> str:
        return (namespace or "default") if rt.namespaced else ""

    def _table(self, rt: ResourceType) -> dict[tuple[str, str], Obj]:
        return self._state.objects.setdefault(rt.storage_key, {})

    def _history(self, rt: ResourceType) -> _History:
        return self._state.history.setdefault(rt.storage_key, _History(deque()))

    def _generate_name(self, rt: ResourceType, ns: str, prefix: str | None) -> str:
        if not prefix:
            raise invalid(rt, "", [("metadata.name",
                                    "Required value: name or generateName is required")])
        for _ in range(100):
            name = prefix + "".join(random.choice(_NAME_CHARS) for _ in range(5))
            if (ns, name) not in self._table(rt):
                return name
        raise already_exists(rt, prefix)

    def _replace(self, rt: ResourceType, current: Obj, new: Obj, subresource: str | None,
                 dry_run: bool = False) -> Obj:
        new = drop_nulls(new)
        if subresource == "status":
            result = copy.deepcopy(current)
            result["status"] = new.get("status") or {}
            for key in _STATUS_TAKES_META.get(rt.kind, ()):
                if (new.get("metadata") or {}).get(key):
                    result["metadata"][key] = new["metadata"][key]
                else:
                    result["metadata"].pop(key, None)
        elif subresource is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        else:
            result = new
            _keep_server_fields(rt, current, result)
            apply_defaults(rt, result)
            validate(rt, result, current)
        storage = RESOURCES[rt.storage_key]
        result["apiVersion"], result["kind"] = storage.api_version, storage.kind
        if _same_content(current, result):
            return self.present(rt, current)
        if subresource is None and self._released(rt, current, result):
            return self.present(rt, result if dry_run else self._remove(rt, result))
        if (rt.has_generation and subresource is None
                and _generation_body(rt, current) != _generation_body(rt, result)):
            result["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        return self._commit(rt, "MODIFIED", result, current, dry_run=dry_run)

    def _commit(self, rt: ResourceType, kind: str, obj: Obj, old: Obj | None, *,
                dry_run: bool = False) -> Obj:
        storage = RESOURCES[rt.storage_key]
        obj["apiVersion"], obj["kind"] = storage.api_version, storage.kind
        if dry_run:  # what would be stored, without storing it or using up a version
            if old is not None:
                obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return self.present(rt, obj)
        self._rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        key = (meta.get("namespace", ""), meta["name"])
        if kind == "DELETED":
            self._table(rt).pop(key, None)
        else:
            self._table(rt)[key] = obj
        event = Event(self._rv, kind, rt.storage_key, obj, old)
        history = self._history(rt)
        history.events.append(event)
        while len(history.events) > self._history_size:
            history.dropped_upto = history.events.popleft().rv
        for watcher in list(self._watchers):
            watcher.offer(event)
        if self._subscribers:
            self._dispatch.put((kind, rt.storage_key, copy.deepcopy(obj)))
        return self.present(rt, obj)


def _parse_selectors(rt: ResourceType, label_selector: str | None, field_selector: str | None
                     ) -> tuple[list[Requirement], list[FieldRequirement]]:
    try:
        return (parse_label_selector(label_selector),
                parse_field_selector(field_selector, rt.selectable_fields))
    except SelectorError as e:
        raise bad_request(str(e)) from None


# The only metadata a status write takes from its body (dropping it when the body has
# none): a Deployment's annotations, a ReplicaSet's and a Pod's labels and annotations.
# Every other key of metadata, and all metadata of other kinds, stays the stored
# object's. (The real status strategies' PrepareForUpdate let more of metadata through.)
_STATUS_TAKES_META = {"Deployment": ("annotations",), "ReplicaSet": ("labels", "annotations"),
                      "Pod": ("labels", "annotations")}

_SERVER_META = ("name", "namespace", "uid", "creationTimestamp", "generation",
                "deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion")


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


def _same_content(a: Obj, b: Obj) -> bool:
    return _without_volatile(a) == _without_volatile(b)


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
