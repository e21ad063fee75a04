"""The sandbox's Kubernetes API server: real HTTP/1.1 in front of the Store.

Owns the server's lifecycle (`ApiServer.start()/stop()` on a background thread),
routing a request to discovery, a resource verb or a test hook, fault injection
before a request is answered, the request log, and turning unexpected failures
into 500 `Status` answers. The verbs live in `sandbox.verbs` and
`sandbox.watchstream`, request plumbing in `sandbox.httpbase`, object semantics
in the store, documents in `sandbox.discovery`; pod exec is handed to the
function given as `exec_handler` (the sandbox's `serve_exec`).

Test hooks (never used by the product): `POST /sandbox/faults`,
`DELETE /sandbox/faults`, `GET /sandbox/requests?since=N` (see `sandbox.faults`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox import discovery
from sandbox.faults import Faults
from sandbox.httpbase import (
    METHOD_NOT_ALLOWED,
    PATH_NOT_FOUND,
    Target,
    parse_target,
    target_not_found,
)
from sandbox.resources import ApiError, ascii_digits, bad_request
from sandbox.store import Store
from sandbox.verbs import ResourceVerbs
from sandbox.watchstream import WatchVerb

log = logging.getLogger(__name__)

ExecHandler = Callable[..., None]


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


class Handler(ResourceVerbs, WatchVerb):
    """One connection; requests on it are answered in turn (keep-alive)."""

    server: _HTTPServer
    loggable: tuple[str, str, str] | None = None  # (method, path, query) of the request
    logged: dict[str, Any] | None = None         # its request-log entry, once answered
    received = 0.0                               # when the request came in

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

    def send_response(self, code: int, message: str | None = None) -> None:
        # The request log's entry is made before any byte of the answer goes out, so a
        # client that has its answer finds its request in /sandbox/requests; the entry's
        # time is set again when the request completes.
        if self.logged is None and self.loggable is not None:
            method, path, query = self.loggable
            self.logged = self.api.faults.record(method=method, path=path, query=query,
                                                 status=code, received=self.received,
                                                 user_agent=self.headers.get("User-Agent"))
        super().send_response(code, message)

    def handle_method(self, method: str) -> None:
        self.received = time.time()
        url = urlsplit(self.path)
        self.query = parse_qs(url.query, keep_blank_values=True)
        self.body = self.read_body()
        self.warnings = []
        self.status_sent = None
        self.logged = None
        self.loggable = None
        if url.path.startswith("/sandbox/"):
            self.guarded(lambda: self.test_hook(method, url.path))
            return
        self.loggable = (method, url.path, url.query)
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
            if self.logged is None:  # no answer (a refused connection)
                self.api.faults.record(method=method, path=url.path, query=url.query,
                                       status=self.status_sent, received=self.received,
                                       user_agent=self.headers.get("User-Agent"))
            else:
                self.api.faults.completed(self.logged)
            self.loggable = None

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
        elif target.subresource == "log" and target.rt.kind == "Pod" and target.name:
            self.pod_log(target, method)
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
        if target.namespace is None and target.rt.namespaced and method != "GET":
            raise METHOD_NOT_ALLOWED  # across namespaces: list and watch only
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
                raise target_not_found(target)
            self.send_object(200, obj)
        elif method == "PUT":
            self.replace(target)
        elif method == "PATCH":
            self.patch(target)
        elif method == "DELETE" and target.subresource is None:
            self.delete(target)
        else:
            raise METHOD_NOT_ALLOWED

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
            if not ascii_digits(since):
                raise bad_request("since must be a request sequence number")
            self.send_json(200, faults.requests(int(since)))
        else:
            raise PATH_NOT_FOUND
