"""The resource verbs of the API server: list, create, replace, patch, apply, delete,
scale and exec.

Owns what each verb does on the wire: which bodies and content types it takes,
the status code it answers with, and how it turns a request into store calls
(PATCH and PUT run as one atomic read-modify-write so field ownership is
computed against the object they replace). Patch formats are in
`sandbox.patching`, ownership and server-side apply in `sandbox.fieldmanager`,
reading bodies against the kinds' fields (`fieldValidation`) in `sandbox.decoding`,
checking each verb's options (`dryRun` among them) in `sandbox.options`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sandbox import decoding, fieldmanager, options, paging, patching
from sandbox.deletion import is_gone
from sandbox.httpbase import (
    METHOD_NOT_ALLOWED,
    HandlerBase,
    Obj,
    Target,
    query_bool,
    target_not_found,
    unsupported_media_type,
)
from sandbox.resources import (
    ApiError,
    ResourceType,
    ascii_digits,
    bad_request,
    deleted_status,
    forbidden,
    missing_resource_version,
)
from sandbox.store import Store

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
# The kubelet's convention: a pod's working directory, holding its `container.log`.
LOG_DIR_ANNOTATION = "sandbox.bluegreen.dev/dir"
# The NamespaceLifecycle admission plugin refuses to delete these.
IMMORTAL_NAMESPACES = ("default", "kube-system", "kube-public")


class ResourceVerbs(HandlerBase):
    """The verbs on collections and objects (watch is in `sandbox.watchstream`)."""

    def list_body(self, target: Target) -> Obj:
        """The list, one page of it when `limit` asks (see `sandbox.paging`)."""
        rt = target.rt
        limit = self.int_param("limit")
        token = self.param("continue")
        cont = paging.decode(token) if token else None
        if cont is not None and self.param("resourceVersion") not in (None, "", "0"):
            raise bad_request("specifying resource version is not allowed when using continue")
        selectors = {"label_selector": self.param("labelSelector"),
                     "field_selector": self.param("fieldSelector")}
        try:
            listing = self.api.store.list_page(
                rt.key, target.namespace, start=cont.start if cont else "",
                limit=limit if limit is not None and limit > 0 else None,
                at=cont.rv if cont is not None and cont.rv != paging.LATEST else None,
                **selectors)
        except ApiError as e:
            if e.code != 410 or cont is None:
                raise
            raise paging.expired(cont.start) from None
        meta = paging.list_meta(listing.items, listing.resource_version,
                                namespaced_scope=bool(target.namespace), more=listing.more,
                                remaining=None if any(selectors.values()) else listing.remaining)
        return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta,
                "items": listing.items}

    def create(self, target: Target) -> None:
        rt = target.rt
        if target.name is not None:
            raise METHOD_NOT_ALLOWED
        self.check_body_type()
        opts = options.write_options("CreateOptions", self.query)
        obj = decoding.check_body(rt, self.object_body(rt), opts.field_validation, self.warnings)
        obj.setdefault("apiVersion", rt.api_version)
        obj.setdefault("kind", rt.kind)
        fieldmanager.record_update(None, obj, self.manager(), kind=rt.kind, custom=rt.custom)
        created = self.api.store.create(rt.key, target.namespace, obj, dry_run=opts.dry_run)
        self.send_object(201, created)

    def replace(self, target: Target) -> None:
        rt, name = target.rt, target.name or ""
        self.check_body_type()
        opts = options.write_options("UpdateOptions", self.query)
        obj = decoding.check_body(rt, self.object_body(rt), opts.field_validation, self.warnings)
        meta = obj.setdefault("metadata", {})
        if meta.get("name") != name:
            raise bad_request(f"the name of the object ({meta.get('name', '')}) does not match "
                              f"the name on the URL ({name})")
        if rt.custom and target.subresource is None and not meta.get("resourceVersion"):
            raise missing_resource_version(rt, name)

        def change(current: Obj) -> Obj:
            if target.subresource is None:
                fieldmanager.record_update(current, obj, self.manager(), kind=rt.kind,
                                           custom=rt.custom)
            return obj

        self.send_object(200, self.api.store.mutate(rt.key, target.namespace, name, change,
                                                    subresource=target.subresource,
                                                    dry_run=opts.dry_run))

    def object_body(self, rt: ResourceType) -> Obj:
        obj = self.json_body()
        if not isinstance(obj, dict):
            raise bad_request(f"the object provided is unrecognized (must be of type {rt.kind})")
        if obj.get("apiVersion") not in (None, rt.api_version):
            raise bad_request(f"the API version in the data ({obj['apiVersion']}) does not match "
                              f"the expected API version ({rt.api_version})")
        if obj.get("kind") not in (None, rt.kind):
            raise bad_request(f"the kind in the data ({obj['kind']}) does not match the expected "
                              f"kind ({rt.kind})")
        return obj

    def delete(self, target: Target) -> None:
        opts = options.delete_options(self.read_delete_options())
        if target.rt.kind == "Namespace" and target.name in IMMORTAL_NAMESPACES:
            raise forbidden(target.rt, target.name, "this namespace may not be deleted")
        answer = self.api.store.delete(target.rt.key, target.namespace, target.name or "",
                                       dry_run=opts.dry_run, preconditions=opts.preconditions,
                                       propagation=opts.propagation)
        if answer is None:
            raise target_not_found(target)
        if not is_gone(answer):  # finalizers hold it: the object as it now is
            self.send_object(202 if opts.orphan is False else 200, answer)
        elif target.rt.returns_deleted:
            self.send_object(200, answer)
        else:
            self.send_json(200, deleted_status(target.rt, answer))

    def read_delete_options(self) -> Obj:
        """DeleteOptions from the body, or from the query when there is no body: the real
        handler (handlers/delete.go) reads one or the other, never both."""
        if self.body:
            self.check_body_type()
            body = self.json_body()
            if body is not None and not isinstance(body, dict):
                raise bad_request("DeleteOptions must be a JSON object")
            return decoding.check_delete_options(body or {})
        found: Obj = {}
        for name in ("propagationPolicy", "orphanDependents", "gracePeriodSeconds"):
            value = self.param(name)
            if value is None:
                continue
            found[name] = (query_bool(value) if name == "orphanDependents"
                           else self.int_param(name) if name == "gracePeriodSeconds"
                           else value)
        if self.query.get("dryRun"):
            found["dryRun"] = self.query["dryRun"]
        return found

    def delete_collection(self, target: Target) -> None:
        """The list as it is now (one page of it when `limit` asks), each item then deleted
        in turn with the request's DeleteOptions; the first failure other than NotFound
        ends it and is the answer, the items before it staying deleted (the registry's
        DeleteCollection with its one default worker). Namespaces serve no such verb."""
        if target.rt.kind == "Namespace":
            raise METHOD_NOT_ALLOWED
        body = self.list_body(target)
        opts = options.delete_options(self.read_delete_options())
        for obj in body["items"]:
            meta = obj["metadata"]
            self.api.store.delete(target.rt.key, meta.get("namespace"), meta["name"],
                                  dry_run=opts.dry_run, preconditions=opts.preconditions,
                                  propagation=opts.propagation)
        self.send_object(200, body)

    def patch(self, target: Target) -> None:
        rt = target.rt
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        accepted = [JSON_PATCH, MERGE_PATCH] + ([] if rt.custom else [STRATEGIC_PATCH])
        accepted.append(APPLY_PATCH)
        if content_type not in accepted:
            raise unsupported_media_type(accepted)
        if content_type == APPLY_PATCH:
            self.server_side_apply(target)
            return
        forced = [("force", "Forbidden: may not be specified for non-apply patch")]
        opts = options.write_options("PatchOptions", self.query,
                                     forced if self.param("force") is not None else [])
        mode = opts.field_validation
        patch = self.json_body()

        def change(current: Obj) -> Obj:
            new = _apply_patch(content_type, current, patch, rt)
            shown = decoding.patch_shown(content_type == STRATEGIC_PATCH, patch, new)
            new = decoding.check_patched(rt, new, mode, self.warnings, shown)
            _check_name(new, target.name or "")
            if target.subresource is None:
                fieldmanager.record_update(current, new, self.manager(), kind=rt.kind,
                                           custom=rt.custom)
            return new

        self.send_object(200, self.api.store.mutate(rt.key, target.namespace, target.name or "",
                                                    change, subresource=target.subresource,
                                                    dry_run=opts.dry_run))

    def server_side_apply(self, target: Target) -> None:
        rt = target.rt
        manager = self.param("fieldManager") or ""
        required = [("fieldManager", "Required value: is required for apply patch")]
        opts = options.write_options("PatchOptions", self.query, [] if manager else required)
        applied = self.applied_configuration(target)
        force = self.flag("force")

        def apply(live: Obj | None) -> Obj:
            return fieldmanager.apply(live, applied, manager, force=force, kind=rt.kind,
                                      custom=rt.custom)

        self.send_object(*_apply_or_create(self.api.store, target, apply, dry_run=opts.dry_run))

    def applied_configuration(self, target: Target) -> Obj:
        """The body of an apply patch: YAML or JSON, naming this object's kind and name."""
        rt = target.rt
        try:
            applied = yaml.safe_load(self.body.decode() or "{}")
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise bad_request(f"error decoding YAML: {e}") from None
        if not isinstance(applied, dict):
            raise bad_request("error decoding YAML: the applied configuration must be an object")
        _check_name(applied, target.name or "")
        if applied.get("apiVersion") != rt.api_version or applied.get("kind") != rt.kind:
            raise bad_request(f"the API version in the data ({applied.get('apiVersion')}) and kind "
                              f"({applied.get('kind')}) must be {rt.api_version} {rt.kind}")
        decoding.check_applied(rt, applied)
        return applied

    def exec(self, target: Target, method: str) -> None:
        if method not in ("GET", "POST"):
            raise METHOD_NOT_ALLOWED
        pod = self.api.store.get(target.rt.key, target.namespace, target.name or "")
        if pod is None:
            raise target_not_found(target)
        if "websocket" not in (self.headers.get("Upgrade") or "").lower():
            raise bad_request("Upgrade request required")
        if self.api.exec_handler is None:
            raise ApiError(503, "ServiceUnavailable", "exec is not available: no kubelet runs")
        command = self.query.get("command") or []
        if not command:
            raise bad_request("you must specify at least 1 command")
        self.close_connection = True  # the connection belongs to the exec stream now
        self.api.exec_handler(self, pod, command, stdout=self.flag("stdout"),
                              stderr=self.flag("stderr"), stdin=self.flag("stdin"),
                              tty=self.flag("tty"))

    def pod_log(self, target: Target, method: str) -> None:
        """The pod's output as the kubelet wrote it (`follow` answers what there is so far)."""
        if method != "GET":
            raise METHOD_NOT_ALLOWED
        pod = self.api.store.get(target.rt.key, target.namespace, target.name or "")
        if pod is None:
            raise target_not_found(target)
        directory = ((pod.get("metadata") or {}).get("annotations") or {}).get(LOG_DIR_ANNOTATION)
        path = Path(directory) / "container.log" if directory else None
        data = path.read_bytes() if path and path.is_file() else b""
        tail = self.param("tailLines")
        if tail and ascii_digits(tail):
            data = b"".join(data.splitlines(keepends=True)[-int(tail):]) if int(tail) else b""
        limit = self.param("limitBytes")
        if limit and ascii_digits(limit):
            data = data[:int(limit)]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def scale(self, target: Target, method: str) -> None:
        rt, name = target.rt, target.name or ""
        if method == "GET":
            obj = self.api.store.get(rt.key, target.namespace, name)
            if obj is None:
                raise target_not_found(target)
            self.send_json(200, to_scale(obj))
            return
        if method not in ("PUT", "PATCH"):
            raise METHOD_NOT_ALLOWED
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        accepted = [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH]
        if method == "PATCH" and content_type not in accepted:
            raise unsupported_media_type(accepted)
        if method == "PUT":
            self.check_body_type()
        opts = options.write_options("UpdateOptions" if method == "PUT" else "PatchOptions",
                                     self.query)
        body = self.json_body()

        def change(current: Obj) -> Obj:
            scale = body if method == "PUT" else _apply_patch(content_type, to_scale(current),
                                                               body, rt)
            replicas = ((scale or {}).get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: '
                               "spec.replicas: Invalid value: must be greater than or equal to 0")
            new = {**current, "spec": {**(current.get("spec") or {}), "replicas": replicas}}
            new["metadata"] = {**current["metadata"], "resourceVersion":
                               (scale.get("metadata") or {}).get("resourceVersion")}
            fieldmanager.record_update(current, new, self.manager(), kind=rt.kind,
                                       custom=rt.custom)
            return new

        updated = self.api.store.mutate(rt.key, target.namespace, name, change,
                                        dry_run=opts.dry_run)
        self.send_json(200, to_scale(updated))


def _check_name(obj: Any, name: str) -> None:
    given = ((obj or {}).get("metadata") or {}).get("name")
    if given != name:
        raise bad_request(f"the name of the object ({given or ''}) does not match the name on "
                          f"the URL ({name})")


def _apply_patch(content_type: str, current: Obj, patch: Any, rt: ResourceType) -> Obj:
    """Apply a JSON, merge or strategic merge patch; errors worded as the real server's."""
    try:
        if content_type == JSON_PATCH:
            result = patching.json_patch(current, patch)
        elif content_type == MERGE_PATCH:
            if not isinstance(patch, dict):
                raise bad_request("Invalid JSON Patch")
            result = patching.merge_patch(current, patch)
        else:
            result = patching.strategic_merge(current, patch, rt.kind)
    except patching.JsonPatchError as e:
        raise ApiError(422, "Invalid",
                       "the server rejected our request due to an error in our request",
                       {"causes": [{"message": str(e)}]}) from None
    if not isinstance(result, dict):
        raise ApiError(422, "Invalid", "the server rejected our request due to an error in "
                       "our request", {"causes": [{"message": "the patched object is not a map"}]})
    return result


def to_scale(obj: Obj) -> Obj:
    """The autoscaling/v1 Scale view of a Deployment or ReplicaSet."""
    meta = obj["metadata"]
    selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in selector.items())}}


def _apply_or_create(store: Store, target: Target, apply: Callable[[Obj | None], Obj], *,
                     dry_run: bool) -> tuple[int, Obj]:
    """Apply to the live object, or create it (201) when there is none yet."""
    rt, name = target.rt, target.name or ""
    for _ in range(3):  # the object may appear or vanish between our look and our write
        if store.get(rt.key, target.namespace, name) is None:
            try:
                return 201, store.create(rt.key, target.namespace, apply(None), dry_run=dry_run)
            except ApiError as e:
                if e.reason != "AlreadyExists":
                    raise
                continue
        try:
            return 200, store.mutate(rt.key, target.namespace, name, apply,
                                     subresource=target.subresource, dry_run=dry_run)
        except ApiError as e:
            if e.code != 404:
                raise
    raise ApiError(409, "Conflict", f'{rt.group_resource} "{name}" changed while applying')
