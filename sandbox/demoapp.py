"""The demo app every sandbox pod runs: `python -m sandbox.demoapp`.

A tiny threaded HTTP server (standard library only) on `$PORT` that says which
version, colour and pod answered, so routing can be seen from outside:

- `GET /ready`   200 `{"ready": true}` (503 `{"ready": false}` while not ready)
- `GET /health`  200 `{"healthy": true}`
- `GET /`        200 `{"version", "color", "pod"}` plus headers `X-Sandbox-Color`,
                 `X-Sandbox-Version` and `X-Sandbox-Pod`
- any method on `/echo...` 200 with the method, path, headers and body it received
  (lets tests check that the ingress passes requests through unchanged)

Its identity comes from the environment the kubelet sets: `SANDBOX_VERSION` (the
image tag), `SANDBOX_COLOR`, `SANDBOX_POD`. Faults, chosen by the version (the
image tag) so tests can ask for them with an image name alone:

- tag contains `crash`: exit with status 1 at once (the kubelet restarts it: CrashLoop);
- tag contains `never-ready`: `/ready` answers 503 forever;
- tag contains `slow-ready`: `/ready` answers 503 for the first ~3 s.

It exits on SIGTERM/SIGINT, and on its own when the process that started it dies
(`SANDBOX_PARENT_PID`), so a killed sandbox never leaves pods behind.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from sandbox.resources import ascii_digits

SLOW_READY_SECONDS = 3.0


@dataclass(frozen=True)
class Identity:
    """Who this process is, and when it may call itself ready."""

    version: str
    color: str
    pod: str
    ready_at: float | None  # monotonic time; None = never

    @classmethod
    def from_env(cls, environ: dict[str, str], now: float) -> Identity:
        version = environ.get("SANDBOX_VERSION", "latest")
        ready_at: float | None = now
        if "never-ready" in version:
            ready_at = None
        elif "slow-ready" in version:
            ready_at = now + SLOW_READY_SECONDS
        return cls(version, environ.get("SANDBOX_COLOR", ""), environ.get("SANDBOX_POD", ""),
                   ready_at)

    def is_ready(self) -> bool:
        return self.ready_at is not None and time.monotonic() >= self.ready_at


class Handler(BaseHTTPRequestHandler):
    """Answers the demo app's few routes; the identity lives on the server."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK wait
    server_version = "sandbox-demoapp"

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet: the ingress and tests see every request anyway

    @property
    def identity(self) -> Identity:
        identity: Identity = self.server.identity  # type: ignore[attr-defined]
        return identity

    def _send_json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        ident = self.identity
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Sandbox-Version", ident.version)
        self.send_header("X-Sandbox-Color", ident.color)
        self.send_header("X-Sandbox-Pod", ident.pod)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        ident = self.identity
        if path.startswith("/echo"):
            self._send_json(200, {"method": self.command, "path": self.path,
                                  "headers": dict(self.headers.items()),
                                  "body": body.decode("utf-8", "replace")})
        elif path == "/ready":
            ready = ident.is_ready()
            self._send_json(200 if ready else 503, {"ready": ready})
        elif path in ("/health", "/healthz"):
            self._send_json(200, {"healthy": True})
        elif path == "/":
            self._send_json(200, {"version": ident.version, "color": ident.color,
                                  "pod": ident.pod})
        else:
            self._send_json(404, {"error": "not found", "path": path})

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle


def _watch_parent(parent_pid: int) -> None:
    """Exit when the sandbox that started us is gone (we were re-parented)."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)
        time.sleep(0.5)


def main() -> int:
    identity = Identity.from_env(dict(os.environ), time.monotonic())
    if "crash" in identity.version:
        print(f"demoapp {identity.version}: crashing on purpose", file=sys.stderr, flush=True)
        return 1
    port = int(os.environ.get("PORT", "3000"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.identity = identity  # type: ignore[attr-defined]

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    parent = os.environ.get("SANDBOX_PARENT_PID")
    if parent and ascii_digits(parent):
        threading.Thread(target=_watch_parent, args=(int(parent),), daemon=True).start()
    print(f"demoapp {identity.version} ({identity.color or 'no colour'}) listening on {port}",
          file=sys.stderr, flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
