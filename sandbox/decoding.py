"""Reading a request body as the real server decodes it: JSON types, unknown fields and
the `fieldValidation` directive.

Owns what happens between the bytes of a write and the object the store sees: each
field's JSON type is checked against `sandbox.apitypes`, unknown fields are found,
and, as `fieldValidation` says (`Strict`, `Warn`, the default, or `Ignore`),
rejected, dropped with a `Warning` header, or dropped silently. The errors are
worded as the real server's, which words them by where they arise
(staging/src/k8s.io/apiserver/pkg/endpoints/handlers):

- create and update decode the body into the Go struct: a wrong type is 400
  `Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal
  string into Go struct field DeploymentSpec.spec.replicas of type int32` (the first
  one only, as encoding/json stops there); unknown fields under Strict are 400
  `... strict decoding error: unknown field "spec.replica"`;
- patches decode the patched object: either problem is 422 on the field `patch`;
- server-side apply converts the applied configuration to a typed value first:
  either problem is a 500 `failed to create typed patch object (...)` whatever the
  directive (structured-merge-diff knows no unknown fields);
- custom resources (Istio's kinds) are pruned of unknown fields and validated by
  their CRD's OpenAPI schema: a wrong type is 422 Invalid, `spec.hosts: Invalid
  value: "string": spec.hosts in body must be of type array: "string"`.

A JSON null is an unset field everywhere (see `sandbox.defaults.drop_nulls`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.apitypes import DELETE_OPTIONS, KINDS, Anything, ListOf, MapOf, Scalar, Schema, Struct
from sandbox.patching import merge_key
from sandbox.resources import ApiError, ResourceType, bad_request, invalid

Obj = dict[str, Any]
_INT32 = (-(2 ** 31), 2 ** 31 - 1)


@dataclass(frozen=True)
class Mistyped:
    """A value of the wrong JSON type, with its place named each way an error names it."""

    path: str  # spec.http[0].route: CRD validation
    go_field: str  # spec.http.route: encoding/json's error context (no indices)
    struct: str  # the Go struct holding the field ("" at the top)
    smd_path: str  # .spec.template.spec.containers[name="web"].ports: structured-merge-diff
    value: Any
    want: Schema

    @property
    def json_kind(self) -> str:
        """How encoding/json names the value: `string`, `number 1.5`, `bool`, ..."""
        kind = _kind(self.value)
        if kind in ("integer", "number") and isinstance(self.want, Scalar) and (
                "integer" in self.want.accepts):  # a fraction, or out of the int's range
            return f"number {json.dumps(self.value)}"
        return {"integer": "number", "boolean": "bool", "array": "array",
                "object": "object"}.get(kind, kind)

    def go_message(self) -> str:
        where = (f"Go struct field {self.struct}.{self.go_field}" if self.struct
                 else "Go value")
        return f"json: cannot unmarshal {self.json_kind} into {where} of type {self.want.go}"

    def schema_cause(self) -> tuple[str, str, str]:
        got, want = _kind(self.value), _openapi(self.want)
        return (self.path, f'Invalid value: "{got}": {self.path} in body must be of type '
                           f'{want}: "{got}"', "FieldValueTypeInvalid")

    def smd_message(self) -> str:
        want = self.want
        if isinstance(want, Struct | MapOf):
            return f"{self.smd_path}: expected map, got {_go_value(self.value)}"
        if isinstance(want, ListOf):
            return f"{self.smd_path}: expected list, got {_go_value(self.value)}"
        if isinstance(want, Scalar) and want.openapi == "boolean":
            return f"{self.smd_path}: expected boolean, got {_go_value(self.value)}"
        if isinstance(want, Scalar) and want.openapi == "string":
            return (f"{self.smd_path}: expected string, got "
                    f"&value.valueUnstructured{{Value:{_go_value(self.value)}}}")
        return f"{self.smd_path}: expected numeric (int or float), got {_go_type(self.value)}"


@dataclass
class Decoded:
    """The object without its unknown fields, and what was wrong with it."""

    obj: Any
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (path, smd path)
    mistyped: list[Mistyped] = field(default_factory=list)


def decode(rt: ResourceType, obj: Any) -> Decoded:
    """Check `obj` against its kind's fields; kinds without a schema pass as they are."""
    schema = KINDS.get(rt.kind)
    if schema is None or not isinstance(obj, dict):
        return Decoded(obj)
    walker = _Walker(rt)
    return Decoded(walker.value(obj, schema, _At()), walker.unknown, walker.mistyped)


@dataclass(frozen=True)
class _At:
    path: str = ""
    go_field: str = ""
    struct: str = ""
    smd: str = ""
    names: tuple[str, ...] = ()

    def child(self, key: str, struct: str) -> _At:
        return _At(f"{self.path}.{key}" if self.path else key,
                   f"{self.go_field}.{key}" if self.go_field else key,
                   struct, f"{self.smd}.{key}", (*self.names, key))

    def item(self, index: int, smd: str) -> _At:
        return _At(f"{self.path}[{index}]", self.go_field, self.struct, self.smd + smd,
                   self.names)

    def entry(self, key: str) -> _At:
        return _At(f"{self.path}.{key}", self.go_field, self.struct, f"{self.smd}.{key}",
                   self.names)


class _Walker:
    def __init__(self, rt: ResourceType | None) -> None:
        self.rt = rt
        self.unknown: list[tuple[str, str]] = []
        self.mistyped: list[Mistyped] = []

    def wrong(self, value: Any, schema: Schema, at: _At) -> Any:
        self.mistyped.append(Mistyped(at.path, at.go_field, at.struct, at.smd, value, schema))
        return value

    def value(self, value: Any, schema: Schema, at: _At) -> Any:
        if value is None or isinstance(schema, Anything):
            return value
        if isinstance(schema, Scalar):
            if _kind(value) == "integer" and "number" in schema.accepts:
                return value
            if _kind(value) not in schema.accepts:
                return self.wrong(value, schema, at)
            if schema.go == "int32" and isinstance(value, int) and not (
                    _INT32[0] <= value <= _INT32[1]):
                return self.wrong(value, schema, at)
            return value
        if isinstance(schema, ListOf):
            if not isinstance(value, list):
                return self.wrong(value, schema, at)
            key = merge_key(self.rt.kind, at.names, custom=self.rt.custom) if self.rt else None
            return [self.value(item, schema.item, at.item(i, _smd_item(item, key, i)))
                    for i, item in enumerate(value)]
        if not isinstance(value, dict):
            return self.wrong(value, schema, at)
        if isinstance(schema, MapOf):
            return {k: self.value(v, schema.value, at.entry(k)) for k, v in value.items()}
        if schema.opaque:
            return value
        out = {}
        name = schema.go.rsplit(".", 1)[-1]
        for key, child in value.items():
            if key in schema.fields:
                out[key] = self.value(child, schema.fields[key], at.child(key, name))
            else:
                here = at.child(key, name)
                self.unknown.append((here.path, here.smd))
        return out


def _smd_item(item: Any, key: str | None, index: int) -> str:
    if key and isinstance(item, dict) and key in item:
        return f"[{key}={json.dumps(item[key])}]"
    return f"[{index}]"


def _kind(value: Any) -> str:
    """The value's JSON Schema type."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _openapi(schema: Schema) -> str:
    if isinstance(schema, Scalar):
        return schema.openapi
    return "array" if isinstance(schema, ListOf) else "object"


def _go_type(value: Any) -> str:
    """The Go type of a decoded JSON value, as `%T` prints it."""
    return {"boolean": "bool", "integer": "int64", "number": "float64", "string": "string",
            "array": "[]interface {}", "object": "map[string]interface {}"}[_kind(value)]


def _go_value(value: Any) -> str:
    """A decoded JSON value as Go's `%v` prints it (maps with sorted keys)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_value(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    return str(value)


# ---- the errors, by verb ----------------------------------------------------------------------

def _strict(unknown: list[tuple[str, str]]) -> str:
    return "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p, _ in unknown)


def unknown_warnings(unknown: list[tuple[str, str]]) -> list[str]:
    return [f'unknown field "{path}"' for path, _ in unknown]


def check_body(rt: ResourceType, obj: Obj, mode: str, warnings: list[str]) -> Obj:
    """A create or update body, decoded: unknown fields dropped (or 400 under Strict)."""
    cannot = f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
    return _checked(rt, obj, mode, warnings, lambda why: bad_request(cannot + why))


def check_patched(rt: ResourceType, patched: Obj, mode: str, warnings: list[str],
                  shown: str) -> Obj:
    """A patched object, decoded; `shown` is how the error prints the patch."""
    return _checked(rt, patched, mode, warnings, lambda why: _patch_invalid(shown, why))


def _checked(rt: ResourceType, obj: Obj, mode: str, warnings: list[str],
             refusal: Callable[[str], ApiError]) -> Obj:
    """`obj` decoded under `mode`; a wrong type of a built-in kind, or an unknown field
    under Strict, is `refusal(why)`; a custom resource's wrong type fails its schema."""
    decoded = decode(rt, obj)
    if decoded.mistyped and not rt.custom:
        raise refusal(decoded.mistyped[0].go_message())
    if decoded.unknown and mode == "Strict":
        raise refusal(_strict(decoded.unknown))
    if decoded.mistyped:
        raise _schema_invalid(rt, obj, decoded)
    if mode == "Warn":
        warnings += unknown_warnings(decoded.unknown)
    result: Obj = decoded.obj
    return result


def check_delete_options(body: Obj) -> Obj:
    """A DELETE's body decoded as meta/v1 DeleteOptions (handlers/delete.go): a value of the
    wrong type is 400 in encoding/json's words; unknown fields are dropped, as the
    decoder there is not strict."""
    walker = _Walker(None)
    options: Obj = walker.value(body, DELETE_OPTIONS, _At())
    if walker.mistyped:
        raise bad_request(walker.mistyped[0].go_message())
    return {k: v for k, v in options.items() if v is not None}


def check_applied(rt: ResourceType, applied: Obj) -> None:
    """An applied configuration must convert to a typed value: 500 when it does not."""
    decoded = decode(rt, applied)
    problems = [f"{smd}: field not declared in schema" for _, smd in decoded.unknown]
    problems += [m.smd_message() for m in decoded.mistyped]
    if not problems:
        return
    meta = applied.get("metadata") or {}
    gvk = f"{rt.group}/{rt.version}, Kind={rt.kind}"
    where = f"{meta.get('namespace') or ''}/{meta.get('name') or ''}; {gvk}"
    detail = problems[0] if len(problems) == 1 else "\n".join(
        ["errors:"] + [f"  {p}" for p in problems])
    raise ApiError(500, "", f"failed to create typed patch object ({where}): {detail}")


def patch_shown(content_type_is_smp: bool, patch: Any, patched: Obj) -> str:
    """The value a patch error prints: the patch map (`%+v`) for a strategic merge patch,
    the patched object's JSON for the others."""
    if content_type_is_smp:
        return _go_value(patch)
    return json.dumps(patched, separators=(",", ":"), ensure_ascii=False)


def _patch_invalid(shown: str, message: str) -> ApiError:
    problem = f"Invalid value: {json.dumps(shown, ensure_ascii=False)}: {message}"
    return ApiError(422, "Invalid", f' "" is invalid: patch: {problem}',
                    {"causes": [{"reason": "FieldValueInvalid", "message": problem,
                                 "field": "patch"}]})


def _schema_invalid(rt: ResourceType, obj: Obj, decoded: Decoded) -> ApiError:
    name = str((obj.get("metadata") or {}).get("name") or "")
    return invalid(rt, name, [m.schema_cause() for m in decoded.mistyped])
