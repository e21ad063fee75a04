"""Watch streams: `?watch=true` answered as chunked, newline-delimited JSON events.

Owns the watch verb on the wire: resourceVersion and timeoutSeconds handling,
the ERROR event carrying a 410 Expired Status when the history no longer reaches
back far enough, a BOOKMARK as the stream times out (when the client allows
bookmarks), Table events for `kubectl get -w`, and ending the stream on timeout,
server stop or a client that went away. Which events a watch sees is the store's business.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sandbox.httpbase import HandlerBase, Obj, Target
from sandbox.resources import ApiError, ascii_digits, bad_request
from sandbox.tables import to_table, wants_table

WATCH_DEFAULT_TIMEOUT = 1800.0  # the real server picks 30-60 minutes


class WatchVerb(HandlerBase):
    """`GET <collection>?watch=true` (and the old `/watch/` path prefix)."""

    def watch(self, target: Target) -> None:
        rv_param = self.param("resourceVersion") or ""
        if rv_param and not ascii_digits(rv_param):
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
            if self.flag("allowWatchBookmarks") and not self.api.stopping.is_set():
                self.send_bookmark(watcher, target)
            self.end_chunked()
        finally:
            watcher.close()

    def stream_events(self, watcher: Any, deadline: float) -> None:
        as_table, first = wants_table(self.headers.get("Accept")), True
        while not self.api.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            event = watcher.next(timeout=min(remaining, 0.5))
            if event is not None:
                obj = self.table_event(event[1], first) if as_table else event[1]
                self.write_chunk({"type": event[0], "object": obj})
                first = False
            elif watcher.closed:
                break

    def send_bookmark(self, watcher: Any, target: Target) -> None:
        """The BOOKMARK sent as a stream times out: where to resume watching from.

        Every event up to that resourceVersion is already queued for this watcher
        (the store offers events as it commits them), so send those first.
        """
        rv = str(self.api.store.resource_version)
        while (event := watcher.next(timeout=0)) is not None:
            self.write_chunk({"type": event[0], "object": event[1]})
        self.write_chunk({"type": "BOOKMARK", "object": {
            "kind": target.rt.kind, "apiVersion": target.rt.api_version,
            "metadata": {"resourceVersion": rv}}})

    def table_event(self, obj: Obj, first: bool) -> Obj:
        """A one-row Table for `kubectl get -w`: columns only in the first event, as the
        real server sends them."""
        table = to_table(obj, include_object=self.param("includeObject") or "Metadata")
        if not first:
            table["columnDefinitions"] = []
        return table

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
