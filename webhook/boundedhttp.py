"""uvicorn's httptools protocol held to the request-head limits gunicorn's parser had,
closing the way servers' lingering close does.

Owns `BoundedHttpTools` (the limits, the 414/431/400 refusal of a head in SPEC's JSON
error shape, `linger`) and `HeadWithBody` (a response's head sent with the first piece
of its body, in one write). Reading and answering deliveries is left to the protocol
built on it (`webhook.protocol`); the refusal's body to `webhook.errors`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from webhook import errors
from webhook.intake import Answer
from webhook.wire import CLOSE, DISCARD_MAX, answer_headers, raw_response

REQUEST_LINE_MAX = 8190        # gunicorn's limit_request_line
HEADER_FIELDS_MAX = 100        # gunicorn's limit_request_fields
HEAD_BYTES_MAX = 64 * 1024     # the whole request head: no header grows without bound
LINGER_SECONDS = 2.0            # after a refusal that closes: how long what follows is drained

class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request-head limits gunicorn's parser had:
    a request line up to 8190 bytes, up to 100 header fields, and a whole head up to
    64 KiB (httptools itself buffers a header of any size). A request over them gets
    414 (request line) or 431 (header fields), any other head the parser refuses 400,
    each as SPEC's JSON error, and the connection is closed, before any application
    code runs.

    Such a refusal closes the connection the way servers' lingering close does: the
    answer and our end of the stream go out, and what the client still sends is read and
    dropped (up to `DISCARD_MAX` bytes, for `LINGER_SECONDS`, or until the client's end
    of the stream, where uvicorn's `eof_received` lets the transport close) before the
    socket closes. Closing a socket with unread data resets it, and a client still
    sending its head would get the reset instead of the refusal. An answer that closes
    the connection before its request's body is all in (a refusal the client was not
    told to continue for, a 408) closes the same way (`linger`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # bytes received so far of a head not yet complete
        self._in_head = True
        self._fields = 0
        self._field_bytes = 0  # the header fields parsed so far, as sent
        self._lingering = -1  # after a refusal: bytes that may still be dropped; -1: none
        self._refusal: errors.HttpError | None = None  # the head limit it went over

    def data_received(self, data: bytes) -> None:
        if self._lingering >= 0:
            self._lingering -= len(data)
            if self._lingering < 0:
                self.transport.close()
            return
        super().data_received(data)
        # A head still incomplete after this read: httptools buffers it, so it is counted
        # here, read by read (the whole read: a pipelined request's start may share it).
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_BYTES_MAX:
                self._refusal = self._head_too_large()
                self.send_400_response(self._refusal.message)

    def send_400_response(self, msg: str) -> None:
        """The head's refusal, in SPEC's JSON error shape, then a lingering close (the
        class's docstring); once per connection, whichever check refuses it first.
        uvicorn calls this for any head its parser refuses (with its own text/plain
        400); a limit of ours names its status first (`_refusal`): 414 for the request
        line, 431 for the header fields, as gunicorn, Apache and Node answer them."""
        if self._lingering >= 0 or self.transport.is_closing():
            return
        refusal = self._refusal or errors.BadRequest("the request's head is not valid HTTP")
        result = Answer(refusal.status, errors.body(refusal))
        body = result.encoded()
        headers = [*self.server_state.default_headers, *answer_headers(result, len(body)),
                   CLOSE]
        self.transport.write(raw_response(result.status, headers, body))
        self.linger()

    def linger(self) -> None:
        """Close the connection as servers' lingering close does (the class's docstring):
        our end of the stream now, the socket once the client's data stops coming."""
        transport = self.transport
        if self._lingering >= 0 or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering = DISCARD_MAX
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def _close_after(self, cycle: RequestResponseCycle) -> None:
        """Close after `cycle`'s answer: lingering while its request's body may still be
        on its way (a refusal the client was not told to continue for, a late body),
        else at once."""
        if cycle.more_body and not cycle.disconnected:
            self.linger()
        else:
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._fields, self._field_bytes = True, 0, 0, 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > REQUEST_LINE_MAX:
            self._refusal = errors.UriTooLong(
                f"the request line is over the {REQUEST_LINE_MAX} byte limit")
            raise httptools.HttpParserError("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # A head that arrives whole in one read is parsed before `data_received` can count
        # it: its fields are counted as they are parsed.
        self._fields += 1
        self._field_bytes += len(name) + len(value) + 4  # "name: value\r\n"
        if self._fields > HEADER_FIELDS_MAX:
            self._refusal = errors.HeaderFieldsTooLarge(
                f"the request has over {HEADER_FIELDS_MAX} header fields")
            raise httptools.HttpParserError("too many header fields")
        if self._field_bytes > HEAD_BYTES_MAX:
            self._refusal = self._head_too_large()
            raise httptools.HttpParserError("request head too large")
        super().on_header(name, value)

    @staticmethod
    def _head_too_large() -> errors.HttpError:
        return errors.HeaderFieldsTooLarge(
            f"the request's head is over the {HEAD_BYTES_MAX} byte limit")

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = HeadWithBody(  # type: ignore[assignment]
                self.transport, close=functools.partial(self._close_after, cycle))


class HeadWithBody:
    """The transport as one response sees it: the response head waits for the first
    piece of the body and goes out with it, in one write. Each write is one trip through
    the kernel's TCP stack (on loopback the sender's write also runs the receiver's
    side), and uvicorn writes the head and the body separately. `close` is how the
    connection closes after the answer (the protocol's, to linger)."""

    CONTINUE = b"HTTP/1.1 100 "

    def __init__(self, transport: asyncio.Transport, *, close: Callable[[], None]) -> None:
        self._transport = transport
        self._close = close
        self._head: bytes | None = None
        self._sent_head = False

    def write(self, data: bytes) -> None:
        if self._sent_head or data.startswith(self.CONTINUE):
            self._transport.write(data)
        elif self._head is None:
            self._head = data
        else:
            self._transport.write(self._head + data)
            self._head, self._sent_head = None, True

    def close(self) -> None:
        if self._head is not None:  # a head with no body after it still goes out
            self._transport.write(self._head)
            self._head, self._sent_head = None, True
        self._close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

