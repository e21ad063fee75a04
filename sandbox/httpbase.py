"""The request side of the API server: URL targets and the handler's plumbing.

Owns how a resource URL is taken apart (`Target`), and the pieces every verb
uses on a request: body (JSON only: 415 for other media types, such as kubectl's
protobuf) and query parameters, JSON answers and `Status` errors
(with Table output when kubectl asks for it), the field manager a write is made
by. The verbs live in `sandbox.verbs` and `sandbox.watchstream`, their options
(dry runs among them) in `sandbox.options`, the server and routing in
`sandbox.apiserver`.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from sandbox import discovery, fieldmanager
from sandbox.resources import ApiError, ResourceType, bad_request, not_found
from sandbox.tables import to_table, wants_table

if TYPE_CHECKING:
    from sandbox.apiserver import ApiServer

log = logging.getLogger("sandbox.apiserver")

Obj = dict[str, Any]

METHOD_NOT_ALLOWED = ApiError(405, "MethodNotAllowed",
                              "the server does not allow this method on the requested resource")
PATH_NOT_FOUND = ApiError(404, "NotFound", "the server could not find the requested resource")
_INT = re.compile(r"[+-]?[0-9]+")
# What an object or DeleteOptions body may be sent as. The real server also decodes YAML
# and protobuf (kubectl's typed requests send protobuf); the sandbox decodes only JSON.
BODY_MEDIA_TYPES = ("application/json",)


@dataclass(frozen=True)
class Target:
    """A resource URL taken apart."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch: bool = False  # the deprecated /watch/ path prefix


def parse_target(parts: list[str]) -> Target | None:
    """Split `/api/v1/...` or `/apis/G/V/...` (as path segments) into a Target.

    A namespaced resource is served at `namespaces/<ns>/<plural>[/<name>[/<sub>]]`
    and, for listing and watching across namespaces, at `<plural>` alone.
    """
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
    if rt.namespaced and len(rest) > 1:
        raise PATH_NOT_FOUND  # a namespaced object has no cluster-wide path, only its list
    return Target(rt, None, _at(rest, 1), _at(rest, 2), watch)


def warning_header(text: str) -> str:
    """A `Warning` header value as the API server sends one (RFC 7234, code 299)."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{quoted}"'


def _at(items: list[str], index: int) -> str | None:
    return items[index] if len(items) > index else None


def unsupported_media_type(accepted: list[str] | tuple[str, ...]) -> ApiError:
    """415, as negotiation's errUnsupportedMediaType words it."""
    return ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown "
                    f"format - accepted media types include: {', '.join(accepted)}")


def target_not_found(target: Target) -> ApiError:
    return not_found(target.rt, target.name or "")


def query_bool(value: str) -> bool:
    """A boolean query parameter as the parameter codec reads it
    (runtime.Convert_Slice_string_To_bool): only "0" and "false", in any case, are false."""
    return not (value == "0" or value.lower() == "false")


def query_int64(value: str) -> int:
    """An integer query parameter (runtime.Convert_Slice_string_To_int64, strconv.ParseInt):
    400 for anything but ASCII digits with an optional sign, or out of int64's range."""
    parsing = f"strconv.ParseInt: parsing {json.dumps(value, ensure_ascii=False)}"
    if not _INT.fullmatch(value):
        raise bad_request(f"{parsing}: invalid syntax")
    if not -(2 ** 63) <= int(value) < 2 ** 63:
        raise bad_request(f"{parsing}: value out of range")
    return int(value)


class HandlerBase(BaseHTTPRequestHandler):
    """What every verb needs from the request it answers."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, the body waits
    # for the client's delayed ACK (~40 ms on Linux) on every keep-alive request. Go's
    # API server sets TCP_NODELAY on every connection, and so does this one.
    disable_nagle_algorithm = True
    status_sent: int | None = None
    query: dict[str, list[str]]
    body: bytes
    warnings: list[str]  # sent as `Warning: 299 - "..."` headers with the answer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def send_response(self, code: int, message: str | None = None) -> None:
        self.status_sent = code
        super().send_response(code, message)

    @property
    def api(self) -> ApiServer:
        return self.server.api  # type: ignore[attr-defined,no-any-return]

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
        value = self.param(name)
        return value is not None and query_bool(value)

    def int_param(self, name: str) -> int | None:
        value = self.param(name)
        return None if value is None else query_int64(value)

    def send_json(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        for text in getattr(self, "warnings", ()):
            self.send_header("Warning", warning_header(text))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_status(self, error: ApiError) -> None:
        self.send_json(error.code, error.status(), error.headers)

    def send_object(self, code: int, obj: Obj) -> None:
        if wants_table(self.headers.get("Accept")):
            obj = to_table(obj, include_object=self.param("includeObject") or "Metadata")
        self.send_json(code, obj)

    def media_type(self) -> str:
        """The body's media type, without parameters, as mime.ParseMediaType reads it."""
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def check_body_type(self) -> None:
        """NegotiateInputSerializer, before anything else of a create, an update or a
        DELETE with a body: 415 for a media type the server does not decode (none given
        means the first it does, JSON)."""
        if self.media_type() not in ("", *BODY_MEDIA_TYPES):
            raise unsupported_media_type(BODY_MEDIA_TYPES)

    def json_body(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as e:
            raise bad_request(f"json parse error: {e}") from None

    def manager(self) -> str:
        return fieldmanager.manager_name(self.param("fieldManager"),
                                         self.headers.get("User-Agent"))
