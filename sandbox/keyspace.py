"""One resource's stored objects in etcd's key order, with their recent history.

Owns what etcd's keyspace gives the registry for one resource: the objects by key,
the keys kept sorted as etcd sorts them (`<namespace>/<name>`, or `<name>` for a
cluster-scoped kind), and the bounded history of the resource's events. From these a
range of keys is read as it is now or as it was at an earlier resourceVersion (the
snapshot a paged list continues from) at a cost in proportion to the part read and
to the changes made since, never to the whole resource. Call it with the store's
lock held.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator
from heapq import merge
from typing import Any

from sandbox.resources import ApiError
from sandbox.watchers import Event

Obj = dict[str, Any]
Changes = dict[str, Obj | None]  # key -> the object as it was then (None: not there)


def key_of(namespace: str, name: str) -> str:
    """An object's key as etcd orders it below the resource's prefix."""
    return f"{namespace}/{name}" if namespace else name


def object_key(obj: Obj) -> str:
    meta = obj["metadata"]
    return key_of(meta.get("namespace") or "", meta["name"])


def scope_of(namespace: str | None) -> tuple[str, str | None]:
    """The key range of a list: `[low, high)`, high None for the end of the resource."""
    if not namespace:
        return "", None
    return f"{namespace}/", f"{namespace}0"  # "0" sorts right after "/"


class Keyspace:
    """The objects of one storage resource."""

    def __init__(self) -> None:
        self.objects: dict[str, Obj] = {}
        self._keys: list[str] = []  # sorted
        self.events: deque[Event] = deque()
        self.dropped_upto = 0  # highest resourceVersion no longer in `events`

    def get(self, key: str) -> Obj | None:
        return self.objects.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.objects

    def put(self, key: str, obj: Obj) -> None:
        if key not in self.objects:
            insort(self._keys, key)
        self.objects[key] = obj

    def pop(self, key: str) -> None:
        if self.objects.pop(key, None) is not None:
            del self._keys[bisect_left(self._keys, key)]

    def record(self, event: Event, limit: int) -> None:
        """Keep `event` in the history, forgetting the oldest beyond `limit`."""
        self.events.append(event)
        while len(self.events) > limit:
            self.dropped_upto = self.events.popleft().rv

    def changes_since(self, rv: int, now: int) -> Changes:
        """What to undo to see the resource as of `rv`: each key changed since, with the
        object it had then. ApiError 410 Expired when the history no longer reaches back."""
        if rv < self.dropped_upto or rv > now:
            raise ApiError(410, "Expired", f"too old resource version: {rv}")
        changes: Changes = {}
        for event in reversed(self.events):  # newest first: the oldest change wins
            if event.rv <= rv:
                break
            changes[object_key(event.obj)] = None if event.type == "ADDED" else event.old
        return changes

    def scan(self, low: str, high: str | None, changes: Changes | None = None
             ) -> Iterator[tuple[str, Obj]]:
        """The (key, object) pairs with `low <= key < high`, in key order, as the
        resource is now or, with `changes`, as it was then."""
        first = bisect_left(self._keys, low)
        last = len(self._keys) if high is None else bisect_left(self._keys, high)
        keys: Iterator[str] = (self._keys[i] for i in range(first, last))
        if changes:  # keys gone since, merged in, and the others as they were
            gone = sorted(k for k in changes if k not in self.objects and low <= k
                          and (high is None or k < high))
            keys = merge(keys, gone)
        for key in keys:
            obj = changes[key] if changes and key in changes else self.objects[key]
            if obj is not None:
                yield key, obj

    def count(self, low: str, high: str | None, changes: Changes | None = None) -> int:
        """How many keys `scan` would give, without reading them."""
        first = bisect_left(self._keys, low)
        total = (len(self._keys) if high is None else bisect_left(self._keys, high)) - first
        for key, then in (changes or {}).items():
            if low <= key and (high is None or key < high):
                total += (then is not None) - (key in self.objects)
        return total
