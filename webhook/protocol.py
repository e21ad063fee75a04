"""The fast path of a forge delivery: `FrontProtocol`, the web worker's HTTP protocol,
answers it from the parser's callbacks (the class's docstring says which deliveries
take it), holding what it needs between them (`_Delivery`, `_Cycle`).

The steps a delivery runs belong to `webhook.front.Front` (`open`, `run`, `conclude`),
which also serves every request left to uvicorn; the request-head limits and the
lingering close, to `webhook.boundedhttp`; the answer's bytes, to `webhook.wire`.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import httptools

from webhook import errors
from webhook.boundedhttp import BoundedHttpTools
from webhook.forges import Forge
from webhook.front import Front
from webhook.intake import Answer, Outcome, refuse
from webhook.wire import CLOSE, Headers, answer_headers, raw_response, webhook_route


class FrontProtocol(BoundedHttpTools):
    """The web worker's HTTP protocol: a forge delivery is answered from the parser's
    callbacks, without the ASGI request cycle, its task and its messages; any other
    request goes to `Front` through uvicorn as before.

    A delivery takes this path when its whole body is announced by Content-Length
    within the limit, without `Expect: 100-continue`, and no earlier response on the
    connection is still owed (a pipelined request waits in uvicorn's queue). It runs
    the same steps as `Front.deliver` (`Front.open`, `Front.run`, `Front.conclude`): the
    forge is opened once the head is in, the body is collected as it arrives (within
    `body_timeout`, else 408 and the connection closes), and the answer is written
    in one piece when the submission returns. Everything else (chunked bodies, the 413
    for a declared length over the limit and its drain) stays on the ASGI path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._delivery: _Delivery | None = None

    def on_message_begin(self) -> None:
        # A delivery answered inside the parser's callbacks armed the keep-alive timer;
        # a request that follows in the same read must not be cut off by it.
        self._unset_keepalive_if_required()
        super().on_message_begin()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        delivery = self._delivery
        if delivery is not None and delivery.reading and delivery.deadline is None:
            delivery.deadline = self.loop.call_later(delivery.front.body_timeout, self._late,
                                                     delivery)

    def on_headers_complete(self) -> None:
        delivery = self._take_delivery()
        if delivery is None:
            super().on_headers_complete()
            return
        self._in_head = False
        self._delivery = delivery
        self.cycle = delivery.cycle  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        delivery = self._delivery
        if delivery is None or self.cycle is not delivery.cycle:  # type: ignore[comparison-overlap]
            super().on_body(body)
        elif delivery.reading:
            delivery.parts.append(body)

    def on_message_complete(self) -> None:
        delivery = self._delivery
        if delivery is None or self.cycle is not delivery.cycle:  # type: ignore[comparison-overlap]
            super().on_message_complete()
        elif delivery.reading:
            delivery.stop_reading()
            delivery.cycle.more_body = False
            self._run(delivery)

    def connection_lost(self, exc: Exception | None) -> None:
        delivery = self._delivery
        if delivery is not None:
            delivery.cycle.disconnected = True
            if delivery.reading:  # logged and counted as the ASGI path would
                delivery.stop_reading()
                self._answer(delivery, refuse(errors.BadRequest(
                    "the client went away before sending the whole body"), delivery.outcome))
        super().connection_lost(exc)

    def _take_delivery(self) -> _Delivery | None:
        """A delivery for the fast path, or None to leave the request to uvicorn."""
        front = self.app
        if (not isinstance(front, Front) or self._delivery is not None
                or (self.cycle is not None and not self.cycle.response_complete)
                or self.expect_100_continue or self.parser.get_method() != b"POST"
                or self.parser.should_upgrade()):
            return None
        path = httptools.parse_url(self.url).path
        if not path.isascii() or b"%" in path:
            return None
        is_webhook, forge_name = webhook_route(path.decode("ascii"))
        headers = Headers(self.headers)
        length = headers.get("content-length")
        if (not is_webhook or length is None or not length.isdigit()
                or int(length) > front.limit or headers.get("transfer-encoding") is not None):
            return None
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        outcome = Outcome()
        return _Delivery(front, headers, outcome, front.open(forge_name, headers, outcome),
                         keep_alive)

    def _run(self, delivery: _Delivery) -> None:
        respond = functools.partial(self._answer, delivery)
        opened = delivery.opened
        if isinstance(opened, Answer):
            respond(opened)
        else:
            delivery.front.run(opened[0], delivery.headers, b"".join(delivery.parts),
                               delivery.outcome, respond)

    def _late(self, delivery: _Delivery) -> None:
        if delivery.reading:
            delivery.stop_reading()
            self._answer(delivery, refuse(delivery.front.late_body(), delivery.outcome))

    def _answer(self, delivery: _Delivery, result: Answer) -> None:
        """Write the answer, then conclude the delivery (`Front.conclude`)."""
        try:
            self._write_answer(delivery, result)
        finally:
            delivery.front.conclude(delivery.outcome, result)

    def _write_answer(self, delivery: _Delivery, result: Answer) -> None:
        cycle = delivery.cycle
        cycle.response_complete = True
        if self._delivery is delivery:
            self._delivery = None
        if cycle.disconnected or self.transport.is_closing():
            return
        body = result.encoded()
        headers = answer_headers(result, len(body))
        closing = CLOSE in headers  # the answer says so itself (a 408)
        keep_alive = cycle.keep_alive and not closing
        if not keep_alive and not closing:
            headers.append(CLOSE)
        self.transport.write(raw_response(result.status,
                                          self.server_state.default_headers + headers, body))
        if not keep_alive:
            self._close_after(cycle)  # type: ignore[arg-type]
        self.on_response_complete()


class _Delivery:
    """A delivery on the fast path: what `FrontProtocol` holds between its callbacks."""

    def __init__(self, front: Front, headers: Headers, outcome: Outcome,
                 opened: tuple[Forge, int | None] | Answer, keep_alive: bool) -> None:
        self.front = front
        self.headers = headers
        self.outcome = outcome
        self.opened = opened  # `Front.open`'s result, from the head
        self.parts: list[bytes] = []
        self.reading = True
        self.deadline: asyncio.TimerHandle | None = None
        self.cycle = _Cycle(keep_alive)

    def stop_reading(self) -> None:
        self.reading = False
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None


class _Cycle:
    """What uvicorn's protocol reads of a request cycle, for a delivery it does not run:
    whether its response is complete (else a pipelined request waits), whether the
    connection may stay open (a graceful shutdown clears it), and a disconnect; and, as
    `BoundedHttpTools._close_after` reads it, whether the body may still be coming."""

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.more_body = True
        self.message_event = self  # uvicorn sets it on a disconnect; nothing waits on it

    def set(self) -> None:
        pass
