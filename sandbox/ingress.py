"""The sandbox's Istio ingress gateway: an HTTP/1.1 reverse proxy to pod processes.

`Ingress(store, port)` listens on 127.0.0.1 (`start()` returns the bound port; 0
picks a free one). For every request it reads the Gateways, VirtualServices,
DestinationRules, Services and Pods from the Store, asks `sandbox.routing.decide()`
where Istio would send it, and forwards method, path, headers and body to one of
the ready pods (round-robin per service and subset) at `127.0.0.1:<pod port>`,
returning the pod's status, headers and body plus `x-sandbox-pod` (the pod's name)
and `x-envoy-upstream-service-time`. Like Envoy it adds `x-forwarded-for`,
`x-forwarded-proto` and `x-request-id`, and retries a refused connection on the
next endpoint (two retries, as Istio's default policy does).

Answers of its own, as Envoy's: 404 (empty body) when no VirtualService or route
matches, 503 `no healthy upstream` for an undefined subset or no ready pod, 503
`upstream connect error ...` when every attempt to reach a pod failed, 504 when
the pod did not answer within 30 s. Each carries `x-sandbox-reason` saying why.
Threaded, keep-alive, quiet (requests are logged at DEBUG).
"""

from __future__ import annotations

import http.client
import itertools
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sandbox.resources import ascii_digits
from sandbox.routing import Backend, Decision, Request, Snapshot, decide
from sandbox.store import Store

log = logging.getLogger(__name__)

UPSTREAM_TIMEOUT = 30.0
RETRIES = 2
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "proxy-connection",
              "content-length", "host"}
SOURCES = {"gateways": "networking.istio.io/v1/gateways",
           "virtualservices": "networking.istio.io/v1/virtualservices",
           "destinationrules": "networking.istio.io/v1/destinationrules",
           "services": "v1/services", "pods": "v1/pods"}


@dataclass(frozen=True)
class Reply:
    """A pod's whole answer to a forwarded request."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    length: int  # Content-Length to announce (a HEAD answer has no body but a length)
    elapsed: float


class Ingress:
    """The ingress gateway for one Store: `start() -> port`, `stop()`."""

    def __init__(self, store: Store, port: int = 0) -> None:
        self.store = store
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counters: dict[tuple[str | None, ...], Iterator[int]] = {}
        self._lock = threading.Lock()

    def start(self) -> int:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), ProxyHandler)
        server.daemon_threads = True
        server.ingress = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="ingress", daemon=True)
        self._thread.start()
        self.port = int(server.server_address[1])
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def snapshot(self) -> Snapshot:
        """The routing objects as they are now."""
        return Snapshot(**{field: self.store.list(key)[0] for field, key in SOURCES.items()})

    def decide(self, req: Request) -> Decision:
        return decide(req, self.snapshot(), random.random())

    def attempts(self, decision: Decision) -> list[Backend]:
        """Endpoints to try in order: round-robin start, then the next ones for retries."""
        key = (decision.virtualservice, decision.service, decision.subset)
        with self._lock:
            start = next(self._counters.setdefault(key, itertools.count()))
        count = len(decision.backends)
        return [decision.backends[(start + i) % count] for i in range(min(count, RETRIES + 1))]


class ProxyHandler(BaseHTTPRequestHandler):
    """Routes one request at a time on a keep-alive connection."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as Envoy does: no ~40 ms wait for a delayed ACK
    server_version = "istio-envoy"
    sys_version = ""

    @property
    def ingress(self) -> Ingress:
        ingress: Ingress = self.server.ingress  # type: ignore[attr-defined]
        return ingress

    def log_message(self, format: str, *args: object) -> None:
        log.debug("ingress %s " + format, self.address_string(), *args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _routing_request(self) -> Request:
        headers: dict[str, str] = {}
        for name in {k.lower() for k in self.headers}:
            values = self.headers.get_all(name) or []
            headers[name] = ("; " if name == "cookie" else ", ").join(values)
        return Request(host=self.headers.get("Host", ""), method=self.command,
                       path=self.path, headers=headers)

    def _handle(self) -> None:
        body = self._read_body()
        decision = self.ingress.decide(self._routing_request())
        if not decision.is_forward:
            text = b"" if decision.status == 404 else b"no healthy upstream"
            self._answer(decision.status, text, decision.reason)
            return
        failures = []
        for backend in self.ingress.attempts(decision):
            try:
                reply = self._fetch(backend, body)
            except TimeoutError:
                self._answer(504, b"upstream request timeout", f"pod {backend.pod} timed out")
                return
            except (OSError, http.client.HTTPException) as e:
                failures.append(f"{backend.pod}: {e}")
                continue
            self._relay(backend, reply)
            return
        self._answer(503, b"upstream connect error or disconnect/reset before headers. "
                     b"reset reason: connection failure", "; ".join(failures))

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

    def _upstream_headers(self) -> dict[str, str]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        cookies = self.headers.get_all("Cookie") or []
        if len(cookies) > 1:
            headers = {k: v for k, v in headers.items() if k.lower() != "cookie"}
            headers["Cookie"] = "; ".join(cookies)
        forwarded = self.headers.get("X-Forwarded-For")
        client = self.client_address[0]
        headers["Host"] = self.headers.get("Host", "")
        headers["X-Forwarded-For"] = f"{forwarded}, {client}" if forwarded else client
        headers["X-Forwarded-Proto"] = "http"
        headers.setdefault("X-Request-Id", str(uuid.uuid4()))
        return headers

    def _fetch(self, backend: Backend, body: bytes) -> Reply:
        """Send the request to the pod and read its whole answer."""
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self._upstream_headers().items():
                conn.putheader(name, value)
            if body or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = b"" if self.command == "HEAD" else resp.read()
            headers = [(k, v) for k, v in resp.getheaders()
                       if k.lower() not in HOP_BY_HOP | {"server", "date"}]
            length = len(data)
            if self.command == "HEAD" and ascii_digits(str(resp.getheader("Content-Length", ""))):
                length = int(resp.getheader("Content-Length", "0"))
            return Reply(resp.status, resp.reason, headers, data, length,
                         time.monotonic() - started)
        finally:
            conn.close()

    def _relay(self, backend: Backend, reply: Reply) -> None:
        self.send_response(reply.status, reply.reason)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("x-envoy-upstream-service-time", str(int(reply.elapsed * 1000)))
        self.send_header("x-sandbox-pod", backend.pod)
        self.send_header("Content-Length", str(reply.length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def _answer(self, status: int, text: bytes, reason: str) -> None:
        log.debug("ingress answers %s: %s", status, reason)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.send_header("x-sandbox-reason", reason.encode("latin-1", "replace").decode("latin-1"))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)
