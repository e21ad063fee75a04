"""One watch on the store: the events it concerns itself with, queued in order.

Owns how a stored change becomes a watch event for one watcher: resource,
namespace and selector filtering, and the ADDED/DELETED a watcher sees when an
object starts or stops matching its selector. The store offers every change to
every watcher under its lock; a watcher only queues, so it never blocks a writer.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox.resources import ResourceType, present
from sandbox.selectors import FieldRequirement, Requirement, fields_match, labels_match

Obj = dict[str, Any]


@dataclass
class Event:
    """One committed change, as kept in the store's history."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: str  # storage key
    obj: Obj
    old: Obj | None = None


class Watcher:
    """One watch: events matching its resource, namespace and selectors, in order."""

    def __init__(self, rt: ResourceType, namespace: str | None, labels: list[Requirement],
                 fields: list[FieldRequirement], *, on_close: Callable[[Watcher], None]) -> None:
        self._on_close = on_close
        self.rt = rt
        self.namespace = namespace
        self._labels = labels
        self._fields = fields
        self._queue: queue.SimpleQueue[tuple[str, Obj] | None] = queue.SimpleQueue()
        self.closed = False

    def _matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        return labels_match(self._labels, meta.get("labels")) and fields_match(self._fields, obj)

    def offer(self, event: Event) -> None:
        """Queue an event if it concerns this watch (called under the store lock)."""
        if self.closed or event.key != self.rt.storage_key:
            return
        now, before = self._matches(event.obj), self._matches(event.old)
        kind = event.type
        if kind == "MODIFIED" and now and not before:
            kind = "ADDED"  # the object started matching the selector
        elif kind == "MODIFIED" and before and not now:
            kind, now = "DELETED", True  # it stopped matching
        if now:
            self._queue.put((kind, event.obj))

    def next(self, timeout: float | None = None) -> tuple[str, Obj] | None:
        """The next (type, object), or None on timeout or once closed."""
        if self.closed:
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            return None
        kind, obj = item
        return kind, present(self.rt, obj)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._on_close(self)
            self._queue.put(None)
