"""The catalogue of resources the sandbox serves, and the errors it answers with.

Owns `ResourceType` (where a resource lives in the API, its kind, short names,
whether it is namespaced or a custom resource), `RESOURCES` keyed like
`apps/v1/deployments` or `v1/pods`, and `ApiError` with constructors that word
errors exactly as the real API server does. Storage, HTTP and discovery documents
live elsewhere.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")


@dataclass(frozen=True)
class ResourceType:
    """One served resource: where it lives in the API and how the server treats it."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    custom: bool = False  # CustomResourceDefinition semantics (istio kinds)
    has_status: bool = True  # serves a /status subresource; main writes keep status
    has_generation: bool = False
    has_scale: bool = False  # serves a /scale subresource (autoscaling/v1 Scale)
    categories: tuple[str, ...] = ()
    field_selectors: tuple[str, ...] = ()  # beyond metadata.name / metadata.namespace
    storage_version: str = ""  # for a type served at several versions: the stored one
    # DELETE answers with the object (the registry's ReturnDeletedObject), else a Status.
    returns_deleted: bool = False

    @property
    def key(self) -> str:
        return f"{self.group}/{self.version}/{self.plural}" if self.group else f"v1/{self.plural}"

    @property
    def storage_key(self) -> str:
        if not self.storage_version:
            return self.key
        return f"{self.group}/{self.storage_version}/{self.plural}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def group_resource(self) -> str:
        """`deployments.apps`, or `pods` for the core group: how errors name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self) -> str:
        """`Deployment.apps`, or `Pod`: how validation errors name a kind."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def selectable_fields(self) -> tuple[str, ...]:
        base = ("metadata.name",) + (("metadata.namespace",) if self.namespaced else ())
        return base + self.field_selectors


def _catalogue() -> dict[str, ResourceType]:
    types = [
        ResourceType("", "v1", "namespaces", "Namespace", namespaced=False,
                     short_names=("ns",), field_selectors=("status.phase",),
                     returns_deleted=True),
        ResourceType("", "v1", "pods", "Pod", short_names=("po",), categories=("all",),
                     returns_deleted=True,
                     field_selectors=("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                                      "spec.serviceAccountName", "status.phase", "status.podIP",
                                      "status.nominatedNodeName")),
        ResourceType("", "v1", "services", "Service", short_names=("svc",), categories=("all",),
                     returns_deleted=True),
        ResourceType("", "v1", "configmaps", "ConfigMap", short_names=("cm",), has_status=False),
        ResourceType("", "v1", "secrets", "Secret", has_status=False, field_selectors=("type",)),
        ResourceType("", "v1", "events", "Event", short_names=("ev",), has_status=False,
                     field_selectors=("involvedObject.kind", "involvedObject.namespace",
                                      "involvedObject.name", "involvedObject.uid",
                                      "involvedObject.apiVersion", "involvedObject.fieldPath",
                                      "reason", "type", "source")),
        ResourceType("apps", "v1", "deployments", "Deployment", short_names=("deploy",),
                     has_generation=True, has_scale=True, categories=("all",)),
        ResourceType("apps", "v1", "replicasets", "ReplicaSet", short_names=("rs",),
                     has_generation=True, has_scale=True, categories=("all",),
                     field_selectors=("status.replicas",)),
    ]
    istio = [("gateways", "Gateway", ("gw",)), ("virtualservices", "VirtualService", ("vs",)),
             ("destinationrules", "DestinationRule", ("dr",))]
    for version in ISTIO_VERSIONS:
        for plural, kind, short in istio:
            types.append(ResourceType(
                ISTIO_GROUP, version, plural, kind, short_names=short, custom=True,
                has_generation=True, categories=("istio-io", "networking-istio-io"),
                storage_version="" if version == "v1" else "v1"))
    return {t.key: t for t in types}


RESOURCES: dict[str, ResourceType] = _catalogue()


def resource(key: str) -> ResourceType:
    """The ResourceType for a key such as `apps/v1/deployments` or `v1/pods`."""
    try:
        return RESOURCES[key]
    except KeyError:
        raise ApiError(404, "NotFound",
                       "the server could not find the requested resource") from None


class ApiError(Exception):
    """An error the API server reports as a v1 `Status` with this code and reason."""

    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}
        self.list_continue: str | None = None  # a Status's `metadata.continue` (paged lists)

    def status(self) -> dict[str, Any]:
        meta = {"continue": self.list_continue} if self.list_continue else {}
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": meta,
                                "status": "Failure", "message": self.message}
        if self.reason:
            body["reason"] = self.reason
        if self.details:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(rt: ResourceType, name: str, *, kind: str | None = None,
             **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = kind or rt.plural
    details.update(extra)
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.group_resource} "{name}" already exists',
                    _details(rt, name))


def forbidden(rt: ResourceType, name: str, why: str,
              causes: list[dict[str, str]] | None = None) -> ApiError:
    """errors.NewForbidden: `deployments.apps "web" is forbidden: <why>`."""
    details = _details(rt, name)
    if causes:
        details["causes"] = causes
    return ApiError(403, "Forbidden", f'{rt.group_resource} "{name}" is forbidden: {why}',
                    details)


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {rt.group_resource} "{name}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                    _details(rt, name))


_CAUSE_REASONS = (("Invalid value", "FieldValueInvalid"), ("Required value", "FieldValueRequired"),
                  ("Unsupported value", "FieldValueNotSupported"),
                  ("Forbidden", "FieldValueForbidden"), ("Duplicate value", "FieldValueDuplicate"),
                  ("Too long", "FieldValueTooLong"), ("Too many", "FieldValueTooMany"),
                  ("Not found", "FieldValueNotFound"))

Cause = tuple[str, str] | tuple[str, str, str]  # (field, message[, reason])


def invalid(rt: ResourceType, name: str, causes: Sequence[Cause], *,
            by_resource: bool = False) -> ApiError:
    """A 422 Invalid naming each (field, problem) as the real validation errors do.

    Validation names the kind (`Deployment.apps "x" is invalid`); the storage layer's
    own checks name the resource (`virtualservices.networking.istio.io "x" ...`). A
    cause's reason follows from its message (`Required value` is FieldValueRequired)
    unless given as a third element.
    """
    text = ", ".join(f"{c[0]}: {c[1]}" for c in causes)
    if len(causes) > 1:
        text = "[" + text + "]"
    qualified, kind = (rt.group_resource, rt.plural) if by_resource else (rt.group_kind, rt.kind)
    quoted = json.dumps(name, ensure_ascii=False)  # Go's %q: a refused "nl\n" stays one line
    return ApiError(422, "Invalid", f"{qualified} {quoted} is invalid: {text}",
                    _details(rt, name, kind=kind, causes=[
                        {"reason": c[2] if len(c) > 2 else cause_reason(c[1]),
                         "message": c[1], "field": c[0]} for c in causes]))


def cause_reason(message: str) -> str:
    """A field error's reason, from how its message begins (`Required value`...)."""
    return next((reason for prefix, reason in _CAUSE_REASONS if message.startswith(prefix)),
                "FieldValueInvalid")


def missing_resource_version(rt: ResourceType, name: str) -> ApiError:
    """The 422 a custom resource answers to a PUT without metadata.resourceVersion."""
    return invalid(rt, name, [("metadata.resourceVersion",
                               "Invalid value: 0x0: must be specified for an update")],
                   by_resource=True)


def deleted_status(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """What DELETE answers for a kind whose registry does not return the deleted object
    (genericregistry.Store.finalizeDelete): a Success Status naming it, no code."""
    meta = obj.get("metadata") or {}
    details: dict[str, Any] = {"name": meta.get("name", "")}
    if rt.group:
        details["group"] = rt.group
    details.update(kind=rt.plural, uid=meta.get("uid", ""))
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def present(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a stored object as served at `rt`'s version."""
    out = copy.deepcopy(obj)
    out["apiVersion"] = rt.api_version
    out["kind"] = rt.kind
    return out


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ascii_digits(text: object) -> bool:
    """Whether `str(text)` is ASCII digits only, as Go's strconv reads numbers: `str.isdigit`
    is also true for `²` and other scripts' digits, which `int()` refuses or reads."""
    value = str(text)
    return value.isascii() and value.isdigit()


def meta_of(obj: dict[str, Any]) -> dict[str, Any]:
    """An object's `metadata` ({} when it has none, or null)."""
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    """An object's `spec` ({} when it has none, or null)."""
    spec: dict[str, Any] = obj.get("spec") or {}
    return spec


def status_of(obj: dict[str, Any]) -> dict[str, Any]:
    """An object's `status` ({} when it has none, or null)."""
    status: dict[str, Any] = obj.get("status") or {}
    return status

