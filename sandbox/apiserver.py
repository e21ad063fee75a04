"""The sandbox's Kubernetes API server: real HTTP/1.1 in front of the Store.

Owns the wire: URL routing (`/api/v1/...`, `/apis/G/V/...`, namespaced and
cluster-wide collections, `/status`, `/exec`), verbs and their status codes,
request bodies, content types of PATCH, watch streams (chunked, one JSON event
per line), discovery endpoints, `Status` error bodies, and the `/sandbox/*` test
hooks (fault injection, request log). Object semantics live in the store, patch
formats in `sandbox.patching` and `sandbox.fieldmanager`, documents in
`sandbox.discovery`; pod exec is handed to the function given as `exec_handler`.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from sandbox import discovery, fieldmanager, patching
from sandbox.faults import Faults
from sandbox.resources import (
    ApiError,
    ResourceType,
    bad_request,
    missing_resource_version,
    not_found,
)
from sandbox.store import Store
from sandbox.tables import to_table, wants_table

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ExecHandler = Callable[..., None]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
METHOD_NOT_ALLOWED = ApiError(405, "MethodNotAllowed",
                              "the server does not allow this method on the requested resource")
PATH_NOT_FOUND = ApiError(404, "NotFound", "the server could not find the requested resource")
WATCH_DEFAULT_TIMEOUT = 1800.0


@dataclass(frozen=True)
class Target:
    """A resource URL taken apart."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch: bool = False  # the deprecated /watch/ path prefix


def parse_target(parts: list[str]) -> Target | None:
    """Split `/api/v1/...` or `/apis/G/V/...` (as path segments) into a Target."""
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch = rest[:1] == ["watch"]
    if watch:
        rest = rest[1:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rt = discovery.find_resource(group, version, rest[2])
        if rt is not None and rt.namespaced and len(rest) <= 5:
            return Target(rt, rest[1], _at(rest, 3), _at(rest, 4), watch)
    rt = discovery.find_resource(group, version, rest[0]) if rest else None
    if rt is None or len(rest) > 3:
        raise PATH_NOT_FOUND
    return Target(rt, None, _at(rest, 1), _at(rest, 2), watch)


def _at(items: list[str], index: int) -> str | None:
    return items[index] if len(items) > index else None


class ApiServer:
    """The HTTP server; `start()` binds and serves on a background thread."""

    def __init__(self, store: Store, *, host: str = "127.0.0.1", port: int = 0,
                 exec_handler: ExecHandler | None = None, faults: Faults | None = None) -> None:
        self.store = store
        self.faults = faults or Faults()
        self.exec_handler = exec_handler
        self.stopping = threading.Event()
        self._httpd = _HTTPServer((host, port), Handler)
        self._httpd.api = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> int:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="apiserver",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(5)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: ApiServer


class Handler(BaseHTTPRequestHandler):
    """One connection; requests on it are answered in turn (keep-alive)."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    status_sent: int | None = None

    def do_GET(self) -> None:
        self.handle_method("GET")

    def do_POST(self) -> None:
        self.handle_method("POST")

    def do_PUT(self) -> None:
        self.handle_method("PUT")

    def do_PATCH(self) -> None:
        self.handle_method("PATCH")

    def do_DELETE(self) -> None:
        self.handle_method("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def send_response(self, code: int, message: str | None = None) -> None:
        self.status_sent = code
        super().send_response(code, message)

    @property
    def api(self) -> ApiServer:
        return self.server.api

    # ---- request plumbing ---------------------------------------------------------------

    def handle_method(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query, keep_blank_values=True)
        self.body = self.read_body()
        self.status_sent = None
        if url.path.startswith("/sandbox/"):
            self.guarded(lambda: self.test_hook(method, url.path))
            return
        try:
            fault = self.api.faults.take(method, url.path)
            if fault and fault.latency:
                time.sleep(fault.latency)
            if fault and fault.refuse:
                self.refuse()
                return
            if fault and fault.status:
                raise fault.error()
            self.guarded(lambda: self.route(method, url.path))
        except ApiError as e:
            self.send_status(e)
        finally:
            self.api.faults.record(method=method, path=url.path, query=url.query,
                                   status=self.status_sent,
                                   user_agent=self.headers.get("User-Agent"))

    def guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except ApiError as e:
            self.send_status(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:
            log.exception("internal error answering %s", self.path)
            self.send_status(ApiError(500, "InternalError", f"Internal error occurred: {e}",
                                      {"causes": [{"message": str(e)}]}))

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def refuse(self) -> None:
        """Drop the connection without answering (a fault rule's `refuse`)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def flag(self, name: str) -> bool:
        return (self.param(name) or "").lower() in ("true", "1")

    def send_json(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_status(self, error: ApiError) -> None:
        self.send_json(error.code, error.status(), error.headers)

    def send_object(self, code: int, obj: Obj) -> None:
        if wants_table(self.headers.get("Accept")):
            obj = to_table(obj, include_object=self.param("includeObject") or "Metadata")
        self.send_json(code, obj)

    def json_body(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as e:
            raise bad_request(f"json parse error: {e}") from None

    # ---- routing ------------------------------------------------------------------------

    def route(self, method: str, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        if method == "GET" and self.discovery(parts):
            return
        target = parse_target(parts)
        if target is None:
            raise PATH_NOT_FOUND
        if target.subresource == "exec" and target.rt.kind == "Pod":
            self.exec(target, method)
        elif target.subresource == "scale" and target.rt.has_scale and target.name:
            self.scale(target, method)
        elif target.subresource not in (None, "status"):
            raise PATH_NOT_FOUND
        elif target.name is None:
            self.collection(method, target)
        else:
            self.item(method, target)

    def discovery(self, parts: list[str]) -> bool:
        """Answer the discovery and health endpoints; False when the path is not one."""
        doc: Any = None
        if parts in (["version"], ["version", ""]):
            doc = discovery.version_info()
        elif parts in (["healthz"], ["readyz"], ["livez"]):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            return True
        elif parts == ["api"]:
            doc = discovery.api_versions(f"127.0.0.1:{self.api.port}")
        elif parts == ["apis"]:
            doc = discovery.api_group_list()
        elif len(parts) == 2 and parts[0] == "api":
            doc = discovery.resource_list("", parts[1])
        elif len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = discovery.resource_list(parts[1], parts[2])
        elif parts == ["openapi", "v3"]:
            doc = discovery.openapi_v3_index()
        elif parts[:2] == ["openapi", "v3"]:
            doc = discovery.openapi_v3_document("/".join(parts[2:]))
        elif parts[:1] == ["openapi"]:
            raise PATH_NOT_FOUND  # no OpenAPI v2: clients use v3
        else:
            return False
        if doc is None:
            raise PATH_NOT_FOUND
        self.send_json(200, doc)
        return True

    def collection(self, method: str, target: Target) -> None:
        if method == "GET" and (target.watch or self.flag("watch")):
            self.watch(target)
        elif method == "GET":
            self.send_object(200, self.list_body(target))
        elif method == "POST":
            self.create(target)
        elif method == "DELETE":
            self.delete_collection(target)
        else:
            raise METHOD_NOT_ALLOWED

    def item(self, method: str, target: Target) -> None:
        if target.watch:
            self.watch(target)
        elif method == "GET":
            obj = self.api.store.get(target.rt.key, target.namespace, target.name or "")
            if obj is None:
                raise _not_found(target)
            self.send_object(200, obj)
        elif method == "PUT":
            self.replace(target)
        elif method == "PATCH":
            self.patch(target)
        elif method == "DELETE" and target.subresource is None:
            self.delete(target)
        else:
            raise METHOD_NOT_ALLOWED

    # ---- verbs ----------------------------------------------------------------------------

    def list_body(self, target: Target) -> Obj:
        rt = target.rt
        items, rv = self.api.store.list(rt.key, target.namespace,
                                        label_selector=self.param("labelSelector"),
                                        field_selector=self.param("fieldSelector"))
        return {"kind": rt.list_kind, "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(rv)}, "items": items}

    def manager(self) -> str:
        return fieldmanager.manager_name(self.param("fieldManager"),
                                         self.headers.get("User-Agent"))

    @property
    def dry_run(self) -> bool:
        return self.param("dryRun") == "All"

    def create(self, target: Target) -> None:
        rt = target.rt
        obj = self.object_body(rt)
        if target.name is not None:
            raise METHOD_NOT_ALLOWED
        obj.setdefault("apiVersion", rt.api_version)
        obj.setdefault("kind", rt.kind)
        fieldmanager.record_update(None, obj, self.manager(), kind=rt.kind, custom=rt.custom)
        created = self.api.store.create(rt.key, target.namespace, obj, dry_run=self.dry_run)
        self.send_object(201, created)

    def replace(self, target: Target) -> None:
        rt, name = target.rt, target.name or ""
        obj = self.object_body(rt)
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
                                                    dry_run=self.dry_run))

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
        options = self.json_body() or {}
        if not isinstance(options, dict):
            raise bad_request("DeleteOptions must be a JSON object")
        dry_run = self.dry_run or options.get("dryRun") == ["All"]
        gone = self.api.store.delete(target.rt.key, target.namespace, target.name or "",
                                     dry_run=dry_run, preconditions=options.get("preconditions"))
        if gone is None:
            raise _not_found(target)
        self.send_object(200, gone)

    def delete_collection(self, target: Target) -> None:
        body = self.list_body(target)
        for obj in body["items"]:
            meta = obj["metadata"]
            self.api.store.delete(target.rt.key, meta.get("namespace"), meta["name"],
                                  dry_run=self.dry_run)
        self.send_object(200, body)

    def patch(self, target: Target) -> None:
        rt = target.rt
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        accepted = [JSON_PATCH, MERGE_PATCH] + ([] if rt.custom else [STRATEGIC_PATCH])
        accepted.append(APPLY_PATCH)
        if content_type not in accepted:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an "
                           f"unknown format - accepted media types include: {', '.join(accepted)}")
        if content_type == APPLY_PATCH:
            self.server_side_apply(target)
            return
        if self.param("force") is not None:
            raise _invalid_options("force", "Forbidden: may not be specified for non-apply patch")
        patch = self.json_body()

        def change(current: Obj) -> Obj:
            new = _apply_patch(content_type, current, patch, rt)
            _check_name(new, target.name or "")
            if target.subresource is None:
                fieldmanager.record_update(current, new, self.manager(), kind=rt.kind,
                                           custom=rt.custom)
            return new

        self.send_object(200, self.api.store.mutate(rt.key, target.namespace, target.name or "",
                                                    change, subresource=target.subresource,
                                                    dry_run=self.dry_run))

    def server_side_apply(self, target: Target) -> None:
        rt, name = target.rt, target.name or ""
        manager = self.param("fieldManager")
        if not manager:
            raise _invalid_options("fieldManager", "Required value: is required for apply patch")
        try:
            applied = yaml.safe_load(self.body.decode() or "{}")
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise bad_request(f"error decoding YAML: {e}") from None
        if not isinstance(applied, dict):
            raise bad_request("error decoding YAML: the applied configuration must be an object")
        _check_name(applied, name)
        if applied.get("apiVersion") != rt.api_version or applied.get("kind") != rt.kind:
            raise bad_request(f"the API version in the data ({applied.get('apiVersion')}) and kind "
                              f"({applied.get('kind')}) must be {rt.api_version} {rt.kind}")
        force = self.flag("force")
        kwargs = {"kind": rt.kind, "custom": rt.custom}
        store = self.api.store
        for _ in range(3):
            if store.get(rt.key, target.namespace, name) is None:
                obj = fieldmanager.apply(None, applied, manager, force=force, **kwargs)
                try:
                    self.send_object(201, store.create(rt.key, target.namespace, obj,
                                                       dry_run=self.dry_run))
                    return
                except ApiError as e:
                    if e.reason != "AlreadyExists":
                        raise
                    continue
            try:
                self.send_object(200, store.mutate(
                    rt.key, target.namespace, name,
                    lambda cur: fieldmanager.apply(cur, applied, manager, force=force, **kwargs),
                    subresource=target.subresource, dry_run=self.dry_run))
                return
            except ApiError as e:
                if e.code != 404:
                    raise
        raise ApiError(409, "Conflict", f'{rt.group_resource} "{name}" changed while applying')

    def watch(self, target: Target) -> None:
        rv_param = self.param("resourceVersion") or ""
        if rv_param and not rv_param.isdigit():
            raise bad_request(f"invalid resource version: {rv_param}")
        timeout = float(self.param("timeoutSeconds") or WATCH_DEFAULT_TIMEOUT)
        field_selector = self.param("fieldSelector")
        if target.name:
            field_selector = ",".join(filter(None, [field_selector,
                                                    f"metadata.name={target.name}"]))
        try:
            watcher = self.api.store.watch(target.rt.key, target.namespace,
                                           since_rv=int(rv_param) if rv_param else None,
                                           label_selector=self.param("labelSelector"),
                                           field_selector=field_selector)
        except ApiError as e:
            if e.code != 410:
                raise
            self.start_chunked()  # the real server also answers 200, then an ERROR event
            self.write_chunk({"type": "ERROR", "object": e.status()})
            self.end_chunked()
            return
        self.start_chunked()
        try:
            self.stream_events(watcher, time.monotonic() + timeout)
        finally:
            watcher.close()

    def stream_events(self, watcher: Any, deadline: float) -> None:
        while not self.api.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            event = watcher.next(timeout=min(remaining, 0.5))
            if event is not None:
                self.write_chunk({"type": event[0], "object": event[1]})
            elif watcher.closed:
                break
        self.end_chunked()

    def start_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, event: Obj) -> None:
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def exec(self, target: Target, method: str) -> None:
        if method not in ("GET", "POST"):
            raise METHOD_NOT_ALLOWED
        pod = self.api.store.get(target.rt.key, target.namespace, target.name or "")
        if pod is None:
            raise _not_found(target)
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

    def scale(self, target: Target, method: str) -> None:
        rt, name = target.rt, target.name or ""
        if method == "GET":
            obj = self.api.store.get(rt.key, target.namespace, name)
            if obj is None:
                raise _not_found(target)
            self.send_json(200, to_scale(obj))
            return
        if method not in ("PUT", "PATCH"):
            raise METHOD_NOT_ALLOWED
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        accepted = [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH]
        if method == "PATCH" and content_type not in accepted:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an "
                           f"unknown format - accepted media types include: {', '.join(accepted)}")
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
                                        dry_run=self.dry_run)
        self.send_json(200, to_scale(updated))

    # ---- test hooks -----------------------------------------------------------------------

    def test_hook(self, method: str, path: str) -> None:
        faults = self.api.faults
        if path == "/sandbox/faults" and method == "POST":
            faults.add(self.json_body())
            self.send_json(201, {"result": "ok"})
        elif path == "/sandbox/faults" and method == "DELETE":
            faults.clear()
            self.send_json(200, {"result": "ok"})
        elif path == "/sandbox/requests" and method == "GET":
            since = self.param("since") or "0"
            if not since.isdigit():
                raise bad_request("since must be a request sequence number")
            self.send_json(200, faults.requests(int(since)))
        else:
            raise PATH_NOT_FOUND


def _not_found(target: Target) -> ApiError:
    return not_found(target.rt, target.name or "")


def _check_name(obj: Any, name: str) -> None:
    given = ((obj or {}).get("metadata") or {}).get("name")
    if given != name:
        raise bad_request(f"the name of the object ({given or ''}) does not match the name on "
                          f"the URL ({name})")


def _invalid_options(field: str, problem: str) -> ApiError:
    return ApiError(422, "Invalid", f'PatchOptions.meta.k8s.io "" is invalid: {field}: {problem}',
                    {"group": "meta.k8s.io", "kind": "PatchOptions",
                     "causes": [{"reason": "FieldValueRequired" if "Required" in problem
                                 else "FieldValueForbidden", "message": problem, "field": field}]})


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
