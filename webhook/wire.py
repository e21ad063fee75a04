"""The HTTP pieces both of the web front's paths share: a request as the front reads it,
an answer as it goes out.

Owns the delivery routes (`webhook_route`), an ASGI request's headers (`Headers`) and
body (`Body`), its declared length and `Expect: 100-continue` (`content_length`,
`awaits_continue`, `unread`), and an intake `Answer` written either as ASGI messages
(`send_answer`) or as the bytes of one write (`raw_response`, for answers written
without uvicorn's request cycle). What a delivery's answer is belongs to
`webhook.intake`; who reads and answers it, to `webhook.front` (ASGI) and
`webhook.protocol` (the parser's callbacks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from webhook import errors
from webhook.intake import Answer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WEBHOOK = "/webhook"
DISCARD_MAX = 16 * 1024 * 1024  # unread body a refusal drains before answering
CLOSE = (b"connection", b"close")


def webhook_route(path: str) -> tuple[bool, str | None]:
    """Whether `path` is a delivery route, and the forge it names (None: detect it)."""
    if path == WEBHOOK:
        return True, None
    name = path[len(WEBHOOK) + 1:] if path.startswith(WEBHOOK + "/") else ""
    if name and "/" not in name:
        return True, name
    return False, None


class Headers:
    """An ASGI request's headers with the case-insensitive `get` the intake steps use
    (first value wins, bytes read as Latin-1, as WSGI servers do)."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._values: dict[str, str] = {}
        for name, value in raw:
            self._values.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def get(self, key: str) -> str | None:
        return self._values.get(key.lower())


def content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise errors.BadRequest("the Content-Length header is not a number")
    return int(value)


def awaits_continue(headers: Headers) -> bool:
    """Whether the client holds its body back until it gets `100 Continue`, which
    uvicorn sends at the first `receive()`: a request refused without its body must not
    call it (RFC 9110 §10.1.1), or the client sends a body only to have it dropped."""
    return (headers.get("expect") or "").strip().lower() == "100-continue"


def unread(result: Answer) -> Answer:
    """`result` for a client still holding its body back: the final status instead of
    `100 Continue`, and the connection closes after it, since the body may still come
    (the client may stop waiting) and nothing here will read it."""
    return dataclasses.replace(result, headers={**result.headers, "Connection": "close"})


class Body:
    """A request's body, read once from ASGI `receive`."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.finished = False

    async def read(self, length: int | None, limit: int) -> bytes:
        """The raw body. One without Content-Length (chunked) is refused once it reaches
        the limit rather than checked truncated; a declared length was capped already."""
        parts: list[bytes] = []
        size = 0
        while not self.finished:
            chunk = await self._chunk()
            parts.append(chunk)
            size += len(chunk)
            if length is None and size >= limit:
                raise errors.PayloadTooLarge.over(limit)
        return b"".join(parts)

    async def discard(self, budget: int) -> None:
        """Read and drop what is left of the body, up to `budget` bytes, so a refused
        client reads our answer instead of a reset (closing a socket with unread data
        resets it), as servers' lingering close does. A client sending more than that
        may see a reset."""
        while not self.finished and budget > 0:
            budget -= len(await self._chunk())

    async def _chunk(self) -> bytes:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.finished = True
            raise errors.BadRequest("the client went away before sending the whole body")
        self.finished = not message.get("more_body", False)
        return bytes(message.get("body", b""))


async def send_answer(send: Send, result: Answer) -> None:
    body = result.encoded()
    await send({"type": "http.response.start", "status": result.status,
                "headers": answer_headers(result, len(body))})
    await send({"type": "http.response.body", "body": body})


def answer_headers(result: Answer, length: int) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % length)]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in result.headers.items()]
    return headers


def raw_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A whole response as it goes out in one write, for answers written without
    uvicorn's request cycle."""
    head = [STATUS_LINE[status], *(b"%s: %s\r\n" % pair for pair in headers), b"\r\n"]
    return b"".join([*head, body])
