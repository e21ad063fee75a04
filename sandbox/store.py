"""The sandbox cluster's state: every object, one global resourceVersion, watches.

Owns what etcd plus the generic registry own in a real cluster: create/update
with optimistic concurrency, server-set metadata (uid, creationTimestamp,
resourceVersion, generation), lists in etcd's key order (whole, or a page from a
key on, as of the first page's resourceVersion), a bounded per-resource event
history for watches and those pages, and change subscriptions for in-process
controllers (the kubelet). Each resource's objects, key order and history are a
`sandbox.keyspace.Keyspace`. Mixed in: deletion as the registry does it
(finalizers, propagation policies) from `sandbox.deletion`, and what the garbage
collector and the namespace controller do next, from `sandbox.collector`, which
the store keeps a uid index and an owner index for. The resource catalogue and `ApiError`
live in `sandbox.resources` (re-exported here), what an update may change in
`sandbox.updates`, defaulting in `sandbox.defaults`, validation in
`sandbox.validation`; HTTP, patch formats and discovery in other modules.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox import updates
from sandbox.collector import Collector, Work
from sandbox.defaults import apply_defaults, drop_nulls, prepare_for_create
from sandbox.deletion import Deletion
from sandbox.keyspace import Changes, Keyspace, key_of, object_key, scope_of
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

__all__ = ["RESOURCES", "ApiError", "Listing", "ResourceType", "Store", "Watcher", "resource"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


Subscriber = Callable[[str, str, Obj], None]


@dataclass(frozen=True)
class Listing:
    """A list or one page of it, as etcd's range read answers."""

    items: list[Obj]
    resource_version: int
    more: bool  # keys remain after the last item (a page)
    remaining: int  # how many objects remain after the last item, selectors ignored


class Store(Collector, Deletion):
    """Thread-safe object storage with one global resourceVersion counter."""

    def __init__(self, *, history: int = 500) -> None:
        self._lock = threading.RLock()
        self._rv = 0
        self._history_size = history
        self._spaces: dict[str, Keyspace] = {}
        self._uids: dict[str, tuple[str, str]] = {}  # uid -> (storage key, key)
        self._owned: dict[str, set[tuple[str, str]]] = {}  # owner uid -> its dependents
        self._work: dict[Work, None] = {}  # the collectors' queue (an ordered set)
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
            obj = self._lookup(rt, namespace, name)
            return None if obj is None else self.present(rt, obj)

    def list(self, key: str, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[Obj], int]:
        """Matching objects in key order (namespace, then name), and the list's
        resourceVersion."""
        listing = self.list_page(key, namespace, label_selector=label_selector,
                                 field_selector=field_selector)
        return listing.items, listing.resource_version

    def list_page(self, key: str, namespace: str | None = None, *, start: str = "",
                  limit: int | None = None, at: int | None = None,
                  label_selector: str | None = None,
                  field_selector: str | None = None) -> Listing:
        """Up to `limit` matching objects from key `start` on (relative to the listed
        namespace), as they are now or, with `at`, as they were at that resourceVersion
        (a paged list's snapshot, from the history: ApiError 410 Expired when it no
        longer reaches back that far). Reads only as many objects as the page needs."""
        rt = resource(key)
        labels, fields = _parse_selectors(rt, label_selector, field_selector)
        with self._lock:
            space = self._space(rt)
            changes: Changes | None = None if at is None else space.changes_since(at, self._rv)
            low, high = scope_of(namespace if rt.namespaced else None)
            items: list[Obj] = []
            more = False
            for _, obj in space.scan(low + start, high, changes):
                if limit is not None and len(items) >= limit:
                    more = True
                    break
                if labels_match(labels, obj["metadata"].get("labels")) and fields_match(
                        fields, obj):
                    items.append(self.present(rt, obj))
            remaining = space.count(low + start, high, changes) - len(items) if more else 0
            return Listing(items, self._rv if at is None else at, more, remaining)

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
            home = self._space(namespaces).get(ns) if rt.namespaced else None
            if rt.namespaced and home is None:
                raise not_found(namespaces, ns)
            if home is not None and (home.get("status") or {}).get("phase") == "Terminating":
                raise forbidden(rt, meta.get("name") or "", f"unable to create new content in "
                                f"namespace {ns} because it is being terminated", [{
                                    "reason": "NamespaceTerminating",
                                    "message": f"namespace {ns} is being terminated",
                                    "field": "metadata.namespace"}])
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
            prepare_for_create(rt, obj)
            apply_defaults(rt, obj)
            validate(rt, obj)  # before the name is checked, as BeforeCreate runs first
            if key_of(ns, name) in self._space(rt):
                raise already_exists(rt, name)
            created = self._commit(rt, "ADDED", obj, None, dry_run=dry_run)
        self._settle()
        return created

    def update(self, key: str, namespace: str | None, obj: Obj, *,
               subresource: str | None = None, dry_run: bool = False) -> Obj:
        """Replace an object (or only its status); 409 when metadata.resourceVersion is stale."""
        rt = resource(key)
        name = (obj.get("metadata") or {}).get("name") or ""
        with self._lock:
            current = self._lookup(rt, namespace, name)
            if current is None:
                raise not_found(rt, name)
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if not rv and rt.custom and subresource is None:
                raise missing_resource_version(rt, name)
            if rv and str(rv) != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            updated = self._replace(rt, current, copy.deepcopy(obj), subresource, dry_run)
        self._settle()
        return updated

    def mutate(self, key: str, namespace: str | None, name: str, change: Callable[[Obj], Obj], *,
               subresource: str | None = None, dry_run: bool = False) -> Obj:
        """Atomically read, transform and write one object (the basis of PATCH).

        `change` gets a deep copy and returns the new object; it runs under the store
        lock, so it must be quick and must not call the store. A resourceVersion it
        leaves in the result must still be current (409 otherwise).
        """
        rt = resource(key)
        with self._lock:
            current = self._lookup(rt, namespace, name)
            if current is None:
                raise not_found(rt, name)
            new = change(self.present(rt, current))
            meta = new.setdefault("metadata", {})
            rv = meta.get("resourceVersion")
            if rv and str(rv) != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            updated = self._replace(rt, current, new, subresource, dry_run)
        self._settle()
        return updated

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
            space = self._space(rt)
            if not since_rv:
                for _, obj in space.scan(*scope_of(namespace if rt.namespaced else None)):
                    watcher.offer(Event(self._rv, "ADDED", rt.storage_key, obj))
            else:
                if since_rv < space.dropped_upto:
                    oldest = space.events[0].rv if space.events else self._rv + 1
                    raise ApiError(410, "Expired", f"too old resource version: {since_rv} "
                                   f"({oldest - 1})")
                for event in space.events:
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

    def _space(self, rt: ResourceType) -> Keyspace:
        space = self._spaces.get(rt.storage_key)
        if space is None:
            space = self._spaces[rt.storage_key] = Keyspace()
        return space

    def _lookup(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        return self._space(rt).get(key_of(self._ns(rt, namespace), name))

    def _generate_name(self, rt: ResourceType, ns: str, prefix: str | None) -> str:
        if not prefix:
            raise invalid(rt, "", [("metadata.name",
                                    "Required value: name or generateName is required")])
        for _ in range(100):
            name = prefix + "".join(random.choice(_NAME_CHARS) for _ in range(5))
            if key_of(ns, name) not in self._space(rt):
                return name
        raise already_exists(rt, prefix)

    def _replace(self, rt: ResourceType, current: Obj, new: Obj, subresource: str | None,
                 dry_run: bool = False) -> Obj:
        result = updates.updated(rt, current, drop_nulls(new), subresource)
        storage = RESOURCES[rt.storage_key]
        result["apiVersion"], result["kind"] = storage.api_version, storage.kind
        if updates.same_content(current, result):
            return self.present(rt, current)
        if subresource is None:
            updates.next_generation(rt, current, result)
        if subresource is None and self._released(rt, current, result):
            # deleteWithoutFinalizers: storage deletes the stored object (the DELETED
            # event carries it), the update answers with the object it made
            self._remove(rt, current, dry_run)
            return self.present(rt, result)
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
        obj["metadata"]["resourceVersion"] = str(self._rv)
        space, key = self._space(rt), object_key(obj)
        if kind == "DELETED":
            space.pop(key)
        else:
            space.put(key, obj)
        self._index(rt, key, None if kind == "DELETED" else obj, old)
        event = Event(self._rv, kind, rt.storage_key, obj, old)
        space.record(event, self._history_size)
        for watcher in list(self._watchers):
            watcher.offer(event)
        if self._subscribers:
            self._dispatch.put((kind, rt.storage_key, copy.deepcopy(obj)))
        self._observe(rt, kind, obj, old)
        return self.present(rt, obj)


def _parse_selectors(rt: ResourceType, label_selector: str | None, field_selector: str | None
                     ) -> tuple[list[Requirement], list[FieldRequirement]]:
    try:
        return (parse_label_selector(label_selector),
                parse_field_selector(field_selector, rt.selectable_fields))
    except SelectorError as e:
        raise bad_request(str(e)) from None
