"""Field ownership: `metadata.managedFields` and server-side apply.

Owns who-owns-which-field bookkeeping for every write (an `Update` entry per
manager, as the real field manager records for POST/PUT/PATCH) and the apply
operation itself (`application/apply-patch+yaml`): conflicts with other
managers, `force`, and removal of fields an applier stopped sending. Pure
functions over JSON objects; the API server stores the results.

Simplified model of the real structured-merge-diff: ownership is tracked per
leaf path (a scalar, an empty map, an atomic list, a keyed list item's marker);
list items are keyed by the built-in types' patch merge key (one field) and custom
resources' lists are atomic. The applied configuration's fields and types are
checked against the kind's schema by `sandbox.decoding` before it gets here.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from sandbox.patching import SET_LISTS, merge_key
from sandbox.resources import ApiError, now_rfc3339

Obj = dict[str, Any]
Path = tuple[str, ...]  # fieldsV1 elements: 'f:spec', 'k:{"name":"web"}', 'v:"x"', '.'
_MISSING = object()
_TRACKED_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")


def manager_name(field_manager: str | None, user_agent: str | None) -> str:
    """The `fieldManager` parameter, else the user agent's product name (as the server does)."""
    if field_manager:
        return field_manager
    prefix = (user_agent or "").split("/")[0]
    return "".join(ch for ch in prefix if ch.isprintable())[:128]


# ---- field paths --------------------------------------------------------------------------

class _Walker:
    def __init__(self, kind: str, custom: bool) -> None:
        self.kind, self.custom = kind, custom
        self.leaves: dict[Path, Any] = {}

    def walk(self, value: Any, path: Path, names: tuple[str, ...]) -> None:
        if value is None:
            return
        if isinstance(value, dict):
            if not value:
                self.leaves[path] = {}
            for key, child in value.items():
                self.walk(child, (*path, f"f:{key}"), (*names, key))
        elif isinstance(value, list):
            self.walk_list(value, path, names)
        else:
            self.leaves[path] = value

    def walk_list(self, value: list[Any], path: Path, names: tuple[str, ...]) -> None:
        key = merge_key(self.kind, names, custom=self.custom)
        if names[-2:] in SET_LISTS and all(not isinstance(v, (dict, list)) for v in value):
            for item in value:
                self.leaves[(*path, "v:" + json.dumps(item))] = item
        elif key and value and all(isinstance(i, dict) and key in i for i in value):
            for item in value:
                item_path = (*path, "k:" + json.dumps({key: item[key]}, separators=(",", ":")))
                self.leaves[(*item_path, ".")] = None
                for field, child in item.items():
                    self.walk(child, (*item_path, f"f:{field}"), (*names, field))
        else:
            self.leaves[path] = copy.deepcopy(value)


def field_leaves(obj: Obj | None, kind: str, *, custom: bool = False) -> dict[Path, Any]:
    """Every owned-able leaf path of an object with its value (status and identity excluded)."""
    walker = _Walker(kind, custom)
    for top, value in (obj or {}).items():
        if top in ("apiVersion", "kind", "status"):
            continue
        if top == "metadata":
            for key in _TRACKED_METADATA:
                if key in (value or {}):
                    walker.walk(value[key], ("f:metadata", f"f:{key}"), ("metadata", key))
            continue
        walker.walk(value, (f"f:{top}",), (top,))
    return walker.leaves


def to_fields_v1(paths: set[Path]) -> Obj:
    tree: Obj = {}
    for path in sorted(paths):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    return tree


def from_fields_v1(tree: Obj, prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for element, child in (tree or {}).items():
        path = (*prefix, element)
        if child:
            paths |= from_fields_v1(child, path)
        else:
            paths.add(path)
    return paths


def path_string(path: Path) -> str:
    """`.spec.template.spec.containers[name="web"].image`, as conflict messages print paths."""
    out = ""
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            out += "." + rest
        elif kind == "k":
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(rest).items()) + "]"
        elif kind == "v":
            out += f"[={rest}]"
    return out


def _find_item(items: Any, element: str) -> tuple[int, Any]:
    if not isinstance(items, list):
        return -1, _MISSING
    kind, _, rest = element.partition(":")
    wanted = json.loads(rest)
    for index, item in enumerate(items):
        if kind == "v" and item == wanted:
            return index, item
        if kind == "k" and isinstance(item, dict) and all(
                item.get(k) == v for k, v in wanted.items()):
            return index, item
    return -1, _MISSING


def _step(node: Any, element: str) -> Any:
    if element.startswith("f:"):
        return node.get(element[2:], _MISSING) if isinstance(node, dict) else _MISSING
    return _find_item(node, element)[1]


def remove_path(obj: Obj, path: Path) -> None:
    """Remove the field (or keyed list item, for a path ending in '.') at `path`, if present."""
    if path and path[-1] == ".":
        path = path[:-1]
    parent: Any = obj
    for element in path[:-1]:
        parent = _step(parent, element)
        if parent is _MISSING:
            return
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif isinstance(parent, list):
        index, _ = _find_item(parent, last)
        if index >= 0:
            parent.pop(index)


# ---- managedFields entries ------------------------------------------------------------------

class _Entries:
    """The managedFields list as (identity -> owned paths), keeping entry order."""

    def __init__(self, managed: list[Obj] | None) -> None:
        self.entries = [copy.deepcopy(e) for e in managed or [] if isinstance(e, dict)]
        self.owned = [from_fields_v1(e.get("fieldsV1") or {}) for e in self.entries]

    def find(self, manager: str, operation: str) -> int:
        for index, entry in enumerate(self.entries):
            if (entry.get("manager"), entry.get("operation"), entry.get("subresource")) == (
                    manager, operation, None):
                return index
        return -1

    def set(self, manager: str, operation: str, paths: set[Path], api_version: str) -> None:
        index = self.find(manager, operation)
        entry = {"manager": manager, "operation": operation, "apiVersion": api_version,
                 "time": now_rfc3339(), "fieldsType": "FieldsV1"}
        if index < 0:
            self.entries.append(entry)
            self.owned.append(paths)
        else:
            self.entries[index], self.owned[index] = entry, paths

    def render(self) -> list[Obj]:
        out = []
        for entry, paths in zip(self.entries, self.owned, strict=True):
            if paths:
                out.append({**entry, "fieldsV1": to_fields_v1(paths)})
        return out


def record_update(old: Obj | None, new: Obj, manager: str, *, kind: str, custom: bool) -> None:
    """Set `new`'s managedFields after a non-apply write: changed fields go to `manager`."""
    meta = new.setdefault("metadata", {})
    reset = meta.get("managedFields") == []
    entries = _Entries([] if reset or old is None else old["metadata"].get("managedFields"))
    before = field_leaves(old, kind, custom=custom)
    after = field_leaves(new, kind, custom=custom)
    changed = {p for p, v in after.items() if before.get(p, _MISSING) != v}
    removed = set(before) - set(after)
    if not changed and not removed and not reset:
        meta["managedFields"] = entries.render()
        if not meta["managedFields"]:
            meta.pop("managedFields")
        return
    index = entries.find(manager, "Update")
    mine = entries.owned[index] if index >= 0 else set()
    for i, paths in enumerate(entries.owned):
        if i != index:
            entries.owned[i] = paths - changed - removed
    entries.set(manager, "Update", (mine - removed) | changed, new.get("apiVersion", ""))
    meta["managedFields"] = entries.render()


def _conflict_error(conflicts: list[tuple[Obj, Path]]) -> ApiError:
    def who(entry: Obj) -> str:
        name = json.dumps(entry.get("manager", ""))
        if entry.get("operation") == "Update":
            return f"{name} using {entry.get('apiVersion', '')}"
        return name

    causes = [{"type": "FieldManagerConflict", "message": f"conflict with {who(e)}",
               "field": path_string(p)} for e, p in conflicts]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {who(entry)}: {path_string(path)}"
    else:
        lines: list[str] = []
        for name in sorted({who(e) for e, _ in conflicts}):
            lines.append(f"conflicts with {name}:")
            lines += [f"- {path_string(p)}" for e, p in conflicts if who(e) == name]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def apply(live: Obj | None, applied: Obj, manager: str, *, force: bool, kind: str,
          custom: bool) -> Obj:
    """Server-side apply of `applied` by `manager` onto `live` (None when creating)."""
    applied = _strip_nulls({k: v for k, v in applied.items() if k != "status"})
    wanted = field_leaves(applied, kind, custom=custom)
    current = field_leaves(live, kind, custom=custom)
    entries = _Entries((live or {}).get("metadata", {}).get("managedFields"))
    mine = entries.find(manager, "Apply")
    conflicts = [(entries.entries[i], p) for i, owned in enumerate(entries.owned) if i != mine
                 for p in sorted(owned & set(wanted))
                 if p[-1] != "." and current.get(p, _MISSING) != wanted[p]]
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for entry, path in conflicts:
        entries.owned[entries.entries.index(entry)].discard(path)
    result = copy.deepcopy(live) if live else {"metadata": {}}
    previously = entries.owned[mine] if mine >= 0 else set()
    others = set().union(*(o for i, o in enumerate(entries.owned) if i != mine))
    prune(result, previously - set(wanted) - others, others | set(wanted))
    merged: Obj = merge_applied(result, applied, kind, custom=custom)
    entries.set(manager, "Apply", set(wanted), applied.get("apiVersion", ""))
    merged["metadata"]["managedFields"] = entries.render()
    return merged


def prune(obj: Obj, dropped: set[Path], kept: set[Path]) -> None:
    """Remove the fields an applier stopped sending that nobody else owns.

    As structured-merge-diff's prune and addBackOwnedItems do: a list item whose marker
    is dropped stays while anyone still owns a field inside it, and an item's key
    fields (its identity) go only with the item. Fields go before items, deepest first,
    in a fixed order, so no removal can hide an item from another.
    """
    items = {p[:-1] for p in dropped if p[-1] == "."}
    gone_items = {item for item in items
                  if not any(len(k) > len(item) and k[:len(item)] == item for k in kept)}
    fields = [p for p in dropped if p[-1] != "." and not _is_key_field(p)
              and not any(p[:len(item)] == item for item in gone_items)]
    for path in sorted(fields, key=lambda p: (-len(p), p)):
        remove_path(obj, path)
    for item in sorted(gone_items, key=lambda p: (-len(p), p)):
        remove_path(obj, item)


def _is_key_field(path: Path) -> bool:
    """`...k:{"name":"side"}.f:name`: a field that is part of its list item's key."""
    if len(path) < 2 or not path[-2].startswith("k:") or not path[-1].startswith("f:"):
        return False
    return path[-1][2:] in json.loads(path[-2][2:])


def merge_applied(live: Any, applied: Any, kind: str, *, custom: bool,
                  names: tuple[str, ...] = ()) -> Any:
    """Merge an applied configuration into the live object: maps merge, keyed lists merge
    item by item, every other list and scalar is replaced."""
    if isinstance(applied, dict):
        result = copy.deepcopy(live) if isinstance(live, dict) else {}
        for key, value in applied.items():
            result[key] = merge_applied(result.get(key), value, kind, custom=custom,
                                        names=(*names, key))
        return result
    if isinstance(applied, list):
        key = merge_key(kind, names, custom=custom)
        if names[-2:] in SET_LISTS:
            current = list(live) if isinstance(live, list) else []
            return current + [v for v in applied if v not in current]
        if not key or not isinstance(live, list):
            return copy.deepcopy(applied)
        merged = copy.deepcopy(live)
        for item in applied:
            index = next((i for i, c in enumerate(merged) if isinstance(c, dict)
                          and isinstance(item, dict) and c.get(key) == item.get(key)), -1)
            if index < 0:
                merged.append(copy.deepcopy(item))
            else:
                merged[index] = merge_applied(merged[index], item, kind, custom=custom,
                                              names=names)
        return merged
    return copy.deepcopy(applied)
