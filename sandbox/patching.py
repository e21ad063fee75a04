"""The four PATCH formats of the Kubernetes API, as pure functions over JSON objects.

Owns JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch
(lists of containers, ports, env, volumes... merged by their patch merge key,
`$patch` directives). The API server decides which format applies to which
resource and stores the result; nothing here does I/O.

Server-side apply and field ownership live in `sandbox.fieldmanager`; this module
also owns the merge-key table both use.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from sandbox.resources import ApiError, ascii_digits

Obj = dict[str, Any]

# Patch merge keys of the built-in types, by the trailing field names of a list's path.
MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("containers",): "name", ("initContainers",): "name", ("ephemeralContainers",): "name",
    ("containers", "ports"): "containerPort", ("initContainers", "ports"): "containerPort",
    ("env",): "name", ("volumeMounts",): "mountPath", ("volumeDevices",): "devicePath",
    ("volumes",): "name", ("imagePullSecrets",): "name", ("hostAliases",): "ip",
    ("conditions",): "type", ("ownerReferences",): "uid", ("resourceClaims",): "name",
    ("topologySpreadConstraints",): "topologyKey",
}
SET_LISTS = {("metadata", "finalizers")}  # primitive lists merged as sets
_DIRECTIVE_PREFIXES = ("$setElementOrder/", "$retainKeys", "$deleteFromPrimitiveList/")


def merge_key(kind: str, path: tuple[str, ...], *, custom: bool = False) -> str | None:
    """The merge key of the list at `path` (field names only), or None for an atomic list."""
    if custom:
        return None
    if kind == "Service" and path == ("spec", "ports"):
        return "port"
    for size in (2, 1):
        if len(path) >= size and path[-size:] in MERGE_KEYS:
            return MERGE_KEYS[path[-size:]]
    return None


# ---- JSON merge patch (RFC 7386) -------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch: objects merge, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---- JSON patch (RFC 6902) -------------------------------------------------------------

class JsonPatchError(ValueError):
    """A patch operation that does not apply to the document (422 from the server)."""


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise JsonPatchError(f'invalid JSON pointer "{path}"')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, op: str, path: str, *, append: bool = False) -> int:
    if append and token == "-":
        return len(container)
    if not ascii_digits(token) or (token != "0" and token.startswith("0")):
        raise JsonPatchError(f"{op} operation does not apply: invalid index {token!r} in {path}")
    index = int(token)
    if index > len(container) or (index == len(container) and not append):
        raise JsonPatchError(f"{op} operation does not apply: index {index} out of range in {path}")
    return index


def _parent(doc: Any, path: str, op: str) -> tuple[Any, str]:
    tokens = _pointer(path)
    if not tokens:
        raise JsonPatchError(f"{op} operation does not apply: the root cannot be the target")
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, op, path)]
        else:
            raise JsonPatchError(f'{op} operation does not apply: doc is missing path: "{path}"')
    return node, tokens[-1]


def _get(doc: Any, path: str, op: str) -> Any:
    node = doc
    for token in _pointer(path):
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, op, path)]
        else:
            raise JsonPatchError(f'{op} operation does not apply: doc is missing path: "{path}"')
    return node


def _add(doc: Any, path: str, value: Any, op: str = "add") -> Any:
    if path == "":
        return copy.deepcopy(value)
    parent, last = _parent(doc, path, op)
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, op, path, append=True), copy.deepcopy(value))
    else:
        raise JsonPatchError(f'{op} operation does not apply: doc is missing path: "{path}"')
    return doc


def _remove(doc: Any, path: str, op: str = "remove") -> Any:
    parent, last = _parent(doc, path, op)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, op, path))
    raise JsonPatchError(f'{op} operation does not apply: doc is missing path: "{path}"')


def json_patch(target: Any, operations: Any) -> Any:
    """Apply an RFC 6902 patch (add, remove, replace, move, copy, test) to a copy of target."""
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest",
                       "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise ApiError(400, "BadRequest", f"invalid JSON patch operation: {operation!r}")
        doc = _apply_operation(doc, operation)
    return doc


def _apply_operation(doc: Any, operation: Mapping[str, Any]) -> Any:
    op, path = operation["op"], operation["path"]
    if op in ("add", "replace", "test") and "value" not in operation:
        raise ApiError(400, "BadRequest", f'{op} operation missing "value" for {path}')
    if op == "add":
        return _add(doc, path, operation["value"])
    if op == "remove":
        _remove(doc, path)
        return doc
    if op == "replace":
        if path == "":
            return copy.deepcopy(operation["value"])
        _get(doc, path, op)
        _remove(doc, path, op)
        return _add(doc, path, operation["value"], op)
    if op in ("move", "copy"):
        source = operation.get("from")
        if source is None:
            raise ApiError(400, "BadRequest", f'{op} operation missing "from"')
        value = _remove(doc, source, op) if op == "move" else copy.deepcopy(_get(doc, source, op))
        return _add(doc, path, value, op)
    if op == "test":
        if _get(doc, path, op) != operation["value"]:
            raise JsonPatchError(f"testing value {path} failed: test failed")
        return doc
    raise ApiError(400, "BadRequest", f"Unexpected kind: {op}")


# ---- strategic merge patch --------------------------------------------------------------

class _Delete:
    """Marks a map deleted by `$patch: delete`."""


def strategic_merge(original: Obj, patch: Obj, kind: str) -> Obj:
    """Apply a strategic merge patch to a built-in object of `kind`."""
    if not isinstance(patch, dict):
        raise ApiError(400, "BadRequest", "strategic merge patch must be a JSON object")
    result = _smp_map(original, patch, kind, ())
    return {} if isinstance(result, _Delete) else result


def _smp_map(original: Any, patch: Obj, kind: str, path: tuple[str, ...]) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _Delete()
    if directive == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in (value or [])]
        elif key == "$patch" or key.startswith(_DIRECTIVE_PREFIXES):
            continue
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(result.get(key), value, kind, (*path, key))
            if isinstance(merged, _Delete):
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _smp_list(result.get(key), value, kind, (*path, key))
        else:
            result[key] = value
    return result


def _smp_list(original: Any, patch: list[Any], kind: str, path: tuple[str, ...]) -> list[Any]:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [_strip_directives(i) for i in patch
                if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    current = copy.deepcopy(original) if isinstance(original, list) else []
    if path[-2:] in SET_LISTS:
        return current + [v for v in patch if v not in current]
    key = merge_key(kind, path)
    if key is None:
        return [_strip_directives(i) for i in patch]
    for item in patch:
        if not isinstance(item, dict):
            raise ApiError(400, "BadRequest", f"list items of {'.'.join(path)} must be objects")
        matches = [i for i, c in enumerate(current) if isinstance(c, dict)
                   and c.get(key) == item.get(key)]
        if item.get("$patch") == "delete":
            current = [c for i, c in enumerate(current) if i not in matches]
        elif matches:
            current[matches[0]] = _smp_map(current[matches[0]], item, kind, path)
        else:
            current.append(_strip_directives(item))
    return current


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items()
                if k != "$patch" and not k.startswith(_DIRECTIVE_PREFIXES)}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value
