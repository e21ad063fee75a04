"""A threaded local HTTP server that answers every request with JSON: the base of the chat fakes.

A subclass implements `respond(method, path, headers, raw_body)` and returns
(status, extra headers, JSON body); `start()` serves it on a free loopback port,
`url` says where, `stop()` shuts it down.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class JsonServer:
    server: ThreadingHTTPServer | None = None

    def respond(self, method: str, path: str, headers: dict[str, str],
                raw: bytes) -> tuple[int, dict[str, str], Any]:
        raise AssertionError(f"{type(self).__name__} must answer {method} {path}")

    def start(self) -> Self:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def _serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, body = owner.respond(self.command, self.path,
                                                      dict(self.headers), raw)
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in {"Content-Type": "application/json",
                                        **headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a late answer): as a server would

            do_GET = do_POST = do_PUT = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"
