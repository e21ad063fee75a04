"""The web process's front: forge deliveries on asyncio, every other route in Flask.

gunicorn serves `webhook:create_app()` with this module's `Worker` (set in
`webhook/gunicorn_conf.py`): uvicorn's gunicorn worker (uvloop, and the httptools
parser) with the loaded Flask app wrapped in a `Front`, an ASGI app, and uvicorn's
HTTP protocol extended as `FrontProtocol`:

- `POST /webhook` and `POST /webhook/<forge>` run the very steps of `webhook.intake`
  (detect, cap, verify, parse, match, answer, log) on the event loop and send the
  engine's submission (`worker.submission.SUBMIT`) over the worker's one Redis link
  (`webhook.redislink`), deliveries waiting at the same time sharing one call
  (`GroupCommit`): no thread, no WSGI environ, one Redis round trip for an accepted
  or duplicate delivery. `FrontProtocol` answers a delivery straight from the
  parser's callbacks; the rare one it leaves to uvicorn (a chunked body, `Expect:
  100-continue`, a pipelined request) reaches `Front.deliver` through ASGI, which
  runs the same steps;
- every other request (operator API, chat-ops, status, board, metrics) goes to the
  Flask app through `a2wsgi`'s WSGI bridge, in a small thread pool, its body read on
  the loop first within the same deadline as a delivery's (so a slow client holds no
  thread), with one access line in the format of `gunicorn_conf.access_log_format`
  (its path escaped: `loggable`).

A delivery's access record is its structured delivery line (`intake.log_delivery`).
The Flask view of `webhook.intake` stays the reference, and what the test client and
any WSGI server (`gunicorn -k gthread`) run; `tests/test_asgi.py` holds both fronts to
the same answers. `BoundedHttpTools` adds the request-head limits gunicorn's own
parser had and httptools lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httptools
from a2wsgi import WSGIMiddleware
from flask import Flask
from redis.exceptions import RedisError, ResponseError
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from webhook import errors
from webhook.app import REDIS_CONNECT_TIMEOUT, REDIS_SOCKET_TIMEOUT
from webhook.context import EXTENSION, Web
from webhook.forges import Forge
from webhook.intake import (
    Answer,
    Outcome,
    Pending,
    answer,
    log_delivery,
    open_delivery,
    read_pushes,
    refuse,
)
from webhook.redislink import Link, Replied, open_link
from worker import metrics, submission
from worker.api import redis_unavailable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("bluegreen.web")
access = logging.getLogger("bluegreen.access")  # `Worker` gives it gunicorn's access handlers
BRIDGE_THREADS = 8             # Flask requests at once per worker (gthread had 4 threads)
REQUEST_LINE_MAX = 8190        # gunicorn's limit_request_line
HEADER_FIELDS_MAX = 100        # gunicorn's limit_request_fields
HEAD_BYTES_MAX = 64 * 1024     # the whole request head: no header grows without bound
WEBHOOK = "/webhook"
BODY_TIMEOUT_SECONDS = 30.0     # a delivery's body must arrive within this (gthread's timeout)
DISCARD_MAX = 16 * 1024 * 1024  # unread body a refusal drains before answering
LOG_ESCAPES = {'"': "\\x22", "\\": "\\\\"}  # the access line quotes the path
CLOSE = (b"connection", b"close")
LINGER_SECONDS = 2.0            # after a refusal that closes: how long what follows is drained
COUNT_FLUSH_SECONDS = 0.05       # refused/ignored deliveries reach the metrics this late
COUNT_RETRY_SECONDS = 1.0
BATCH_MAX = 64                 # deliveries per Redis call (group commit)


def webhook_route(path: str) -> tuple[bool, str | None]:
    """Whether `path` is a delivery route, and the forge it names (None: detect it)."""
    if path == WEBHOOK:
        return True, None
    name = path[len(WEBHOOK) + 1:] if path.startswith(WEBHOOK + "/") else ""
    if name and "/" not in name:
        return True, name
    return False, None


def loggable(path: str) -> str:
    """`path` fit for one quoted field of an access line: the path is percent-decoded,
    so `%0a` in a URL is a newline that would start a forged line. Control and other
    non-printable characters, quotes and backslashes become escapes (`\\n`, `\\x22`,
    `\\u2028`), as nginx and Apache escape theirs; printable text stays as it reads."""
    return "".join(map(_log_char, path))


def _log_char(ch: str) -> str:
    if ch in LOG_ESCAPES:
        return LOG_ESCAPES[ch]
    return ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")


class Headers:
    """An ASGI request's headers with the case-insensitive `get` the intake steps use
    (first value wins, bytes read as Latin-1, as WSGI servers do)."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._values: dict[str, str] = {}
        for name, value in raw:
            self._values.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def get(self, key: str) -> str | None:
        return self._values.get(key.lower())


class Front:
    """The ASGI application the web process serves; see the module's docstring."""

    def __init__(self, app: Flask, *, bridge_threads: int = BRIDGE_THREADS,
                 body_timeout: float = BODY_TIMEOUT_SECONDS) -> None:
        web = app.extensions[EXTENSION]
        assert isinstance(web, Web)
        self.web = web
        self.body_timeout = body_timeout
        self.limit = int(app.config["MAX_CONTENT_LENGTH"])
        self.flask = WSGIMiddleware(app, workers=bridge_threads)  # type: ignore[arg-type]
        self._link: Link | None = None
        self._group: GroupCommit | None = None
        self._counts: Counter[str] = Counter()  # deliveries not yet added to the metrics
        self._count_timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            is_webhook, forge_name = webhook_route(scope["path"])
            if is_webhook and scope["method"] == "POST":
                await self.deliver(forge_name, scope, receive, send)
            else:
                await self.bridge(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        else:  # websockets: nothing here speaks them
            await send({"type": "websocket.close", "code": 1000})

    def _linked(self) -> Link:
        """This worker's link to Redis (made in the worker, on its loop, at first use)."""
        if self._link is None:
            self._link = open_link(self.web.settings.redis_url,
                                   connect_timeout=REDIS_CONNECT_TIMEOUT,
                                   reply_timeout=REDIS_SOCKET_TIMEOUT,
                                   poll=self.web.settings.web_redis_poll_us / 1e6)
        return self._link

    def _committer(self) -> GroupCommit:
        if self._group is None:
            self._group = GroupCommit(self._linked(), submission.SUBMIT)
        return self._group

    async def deliver(self, forge_name: str | None, scope: Scope, receive: Receive,
                      send: Send) -> None:
        """One forge delivery through ASGI: any the protocol did not answer itself
        (`FrontProtocol`), such as a chunked body or one sent after `Expect: 100-continue`."""
        headers = Headers(scope["headers"])
        body = Body(receive)
        outcome = Outcome()
        opened = self.open(forge_name, headers, outcome)
        if isinstance(opened, Answer):
            result = opened
        else:
            forge, length = opened
            try:
                raw = await self._read_in_time(body, length)
            except Exception as error:
                result = refuse(error, outcome)
            else:
                answered: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
                self.run(forge, headers, raw, outcome, answered.set_result)
                result = await answered
        try:
            if isinstance(opened, Answer) and awaits_continue(headers):
                result = unread(result)
            else:
                with contextlib.suppress(errors.BadRequest):
                    await body.discard(DISCARD_MAX)
            await _send_answer(send, result)
        finally:
            self.conclude(outcome, result)

    def open(self, forge_name: str | None, headers: Headers, outcome: Outcome
             ) -> tuple[Forge, int | None] | Answer:
        """The delivery's forge and declared length, or the answer refusing it at once
        (before its body is read: unknown forge, too large, no secret configured)."""
        try:
            length = _content_length(headers)
            return open_delivery(forge_name, headers, length, self.web.settings, self.limit,
                                 outcome), length
        except Exception as error:  # every error is answered so it is logged once
            return refuse(error, outcome)

    def run(self, forge: Forge, headers: Headers, raw: bytes, outcome: Outcome,
            respond: Callable[[Answer], None]) -> None:
        """Verify, parse, match and submit a delivery whose body is in; `respond` gets
        its answer once: at once, or when Redis has answered the submission."""
        try:
            result = read_pushes(forge, headers, headers.get("content-type"), raw,
                                 self.web.settings, outcome)
            if isinstance(result, Pending):
                with redis_unavailable():
                    planned = self.web.engine.plan(result.events, count_as=forge.name)
                if planned is not None:
                    self._committer().submit(planned, functools.partial(
                        self._submitted, result, planned, outcome, respond))
                    return
                result = answer(result, [], outcome)
        except Exception as error:
            result = refuse(error, outcome)
        respond(result)

    @staticmethod
    def _submitted(pending: Pending, planned: submission.Plan, outcome: Outcome,
                   respond: Callable[[Answer], None], reply: Any) -> None:
        try:
            with redis_unavailable():
                if isinstance(reply, Exception):
                    raise reply
                result = answer(pending, submission.answers(planned, reply), outcome)
        except Exception as error:
            result = refuse(error, outcome)
        respond(result)

    def conclude(self, outcome: Outcome, result: Answer) -> None:
        """The delivery's log line, and its count if the submission did not count it.
        Both paths run it once the answer is written (or could not be): the client
        needs only the answer, and with one connection a forge's next delivery is on
        its way while the line is written."""
        log_delivery(outcome, result.status)
        if not outcome.counted:
            self._count(outcome)

    async def _read_in_time(self, body: Body, length: int | None) -> bytes:
        """The body, or 408 if it takes longer than `body_timeout` to arrive (a client
        trickling a body must not hold a connection, and its memory, for ever)."""
        try:
            async with asyncio.timeout(self.body_timeout):
                return await body.read(length, self.limit)
        except TimeoutError as e:
            body.finished = True  # nothing more is read; the connection closes after the answer
            raise self.late_body() from e

    def late_body(self) -> errors.RequestTimeout:
        return errors.RequestTimeout(f"the body did not arrive within {self.body_timeout:g} s",
                                     headers={"Connection": "close"})

    def _count(self, outcome: Outcome) -> None:
        """Count a delivery the submission did not (refused or ignored). Counts are added
        up here and written every `COUNT_FLUSH_SECONDS`, one HINCRBY per distinct field:
        a per-delivery write, even grouped, was the largest cost of a refusal, and its
        waiting tasks piled up in a worker that could not keep pace."""
        self._counts[metrics.webhook_field(outcome.forge, outcome.result)] += 1
        self._schedule_flush(COUNT_FLUSH_SECONDS)

    def _schedule_flush(self, delay: float) -> None:
        if self._count_timer is None:
            self._count_timer = asyncio.get_running_loop().call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        self._count_timer = None
        task = asyncio.get_running_loop().create_task(self.flush_counts())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush_counts(self) -> None:
        """Add the deliveries counted so far to the metrics in Redis. If Redis refuses,
        they are kept and tried again a second later: only a crash loses counts (at most
        the last `COUNT_FLUSH_SECONDS`), never a delivery."""
        counts, self._counts = self._counts, Counter()
        if not counts:
            return
        try:
            await self._linked().execute(*[("HINCRBY", metrics.WEBHOOKS_KEY, field, n)
                                           for field, n in counts.items()])
        except RedisError as e:
            log.warning("could not record %d delivery counts yet: %s", counts.total(), e)
            self._counts.update(counts)
            self._schedule_flush(COUNT_RETRY_SECONDS)

    async def bridge(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Any other request, to Flask; one access line after it."""
        started = time.perf_counter()
        status, size, closing = 0, 0, False

        async def observed(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if closing:
                    message = {**message, "headers": [*message.get("headers", ()), CLOSE]}
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            buffered = await self._buffered(scope, receive)
            if isinstance(buffered, Answer):
                await _send_answer(observed, buffered)
            else:
                closing = buffered is _held_back
                await self.flask(scope, buffered, observed)  # type: ignore[arg-type]
        finally:
            client = scope.get("client") or ("-", 0)
            access.info('%s "%s %s HTTP/%s" %s %s %dms', client[0], scope["method"],
                        loggable(scope["path"]), scope.get("http_version", "1.1"),
                        status or "-", size, (time.perf_counter() - started) * 1000)

    async def _buffered(self, scope: Scope, receive: Receive) -> Receive | Answer:
        """The request's body read here, on the loop, within `body_timeout` and up to the
        limit, then replayed to Flask: the bridge's threads read the body they are given,
        so a client trickling one holds no thread (408 when it is late, and the
        connection closes). A body declared over the limit is left to Flask's 413; if
        its client waits for `100 Continue`, Flask gets none of it (`_held_back`)."""
        headers = Headers(scope["headers"])
        try:
            length = _content_length(headers)
            if length is not None and length > self.limit:
                return _held_back if awaits_continue(headers) else receive
            raw = await self._read_in_time(Body(receive), length)
        except Exception as error:
            return refuse(error, Outcome())
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body: what the client does next (a disconnect)
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        return replay

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._count_timer is not None:
                    self._count_timer.cancel()
                    self._count_timer = None
                await self.flush_counts()
                if self._link is not None:
                    await self._link.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


class GroupCommit:
    """Deliveries waiting on Redis at the same time share one `SUBMIT` call.

    One call is in flight per worker; the deliveries that arrive meanwhile wait for it
    and go together in the next (up to `BATCH_MAX`). A lone delivery goes at once, so
    at low load this is one call per delivery; under a burst it is one call, one
    round trip and one packing of arguments for many. The script runs the batch
    atomically, in order; if Redis refuses the call, every delivery in it gets the
    error, and nothing of any of them was written. The script goes by its SHA1
    (`EVALSHA`), and whole (`EVAL`, which also caches it) when Redis does not know it.

    It runs on callbacks (`Link.call`): a call's answers go out from the reply's own
    callback, with no task or future between them. A delivery that finds no call in
    flight is written at once when the last call carried one delivery (a quiet worker
    has nothing to wait for: at one connection the stretches before the write and from
    the reply to the answer went from 58-66 to 44 us, docs/benchmarks.md change 21);
    after a call that carried several (a busy worker) it waits for the end of the
    loop's turn, so that the deliveries read in the same turn share the call."""

    def __init__(self, link: Link, script: str) -> None:
        self._link = link
        self._script = script
        self._sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        self._waiting: list[tuple[submission.Plan, Replied]] = []
        self._in_flight = False
        self._quiet = True  # the last call carried one delivery

    def submit(self, planned: submission.Plan, done: Replied) -> None:
        """`done` gets this delivery's part of the script's reply, or the exception
        that failed its call."""
        self._waiting.append((planned, done))
        if self._in_flight:
            return
        if self._quiet:
            self._send_next()
        else:
            self._in_flight = True  # the deliveries of this turn wait for it too
            asyncio.get_running_loop().call_soon(self._send_next)

    def _send_next(self) -> None:
        batch = self._waiting[:BATCH_MAX]
        del self._waiting[:BATCH_MAX]
        self._in_flight, self._quiet = True, len(batch) == 1
        args = submission.script_args([planned for planned, _ in batch])
        self._link.call(("EVALSHA", self._sha, 0, *args),
                        functools.partial(self._replied, batch, args))

    def _replied(self, batch: list[tuple[submission.Plan, Replied]], args: list[Any],
                 reply: Any) -> None:
        if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
            self._link.call(("EVAL", self._script, 0, *args),
                            functools.partial(self._replied, batch, args))
            return
        if not isinstance(reply, Exception) and len(reply) != len(batch):
            reply = RuntimeError(f"the submission script answered {len(reply)} "
                                 f"of {len(batch)} deliveries")
        self._in_flight = False
        for i, (_, done) in enumerate(batch):  # each waiting delivery answers an error
            try:
                done(reply if isinstance(reply, Exception) else reply[i])
            except Exception:
                log.exception("a delivery's answer failed")
        if self._waiting and not self._in_flight:
            self._send_next()


def _content_length(headers: Headers) -> int | None:
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


async def _held_back() -> Message:
    """The body Flask gets of a request over the limit whose client waits for `100
    Continue`: none (Flask answers 413 from the declared length without reading, or
    refuses the request before)."""
    return {"type": "http.request", "body": b"", "more_body": False}


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


async def _send_answer(send: Send, result: Answer) -> None:
    body = result.encoded()
    await send({"type": "http.response.start", "status": result.status,
                "headers": _answer_headers(result, len(body))})
    await send({"type": "http.response.body", "body": body})


def _answer_headers(result: Answer, length: int) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % length)]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in result.headers.items()]
    return headers


def _response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A whole response as it goes out in one write, for answers written without
    uvicorn's request cycle."""
    head = [STATUS_LINE[status], *(b"%s: %s\r\n" % pair for pair in headers), b"\r\n"]
    return b"".join([*head, body])


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
        headers = [*self.server_state.default_headers, *_answer_headers(result, len(body)),
                   CLOSE]
        self.transport.write(_response(result.status, headers, body))
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
        headers = _answer_headers(result, len(body))
        closing = CLOSE in headers  # the answer says so itself (a 408)
        keep_alive = cycle.keep_alive and not closing
        if not keep_alive and not closing:
            headers.append(CLOSE)
        self.transport.write(_response(result.status,
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


class HeadWithBody:
    """The transport as one response sees it: the response head waits for the first
    piece of the body and goes out with it, in one write. Each write is one trip through
    the kernel's TCP stack (on loopback the sender's write also runs the receiver's
    side), and uvicorn writes the head and the body separately. `close` is how the
    connection closes after the answer (the protocol's, to linger)."""

    CONTINUE = b"HTTP/1.1 100 "

    def __init__(self, transport: asyncio.Transport, *,
                 close: Callable[[], None] | None = None) -> None:
        self._transport = transport
        self._close = close or transport.close
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


class Worker(UvicornWorker):  # type: ignore[misc]
    """gunicorn worker: uvicorn on uvloop with `FrontProtocol`, serving `Front(app)`."""

    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop", "http": FrontProtocol, "interface": "asgi3", "lifespan": "on",
        "access_log": False, "proxy_headers": False, "server_header": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        access.handlers = self.log.access_log.handlers
        access.setLevel(self.log.access_log.level)
        access.propagate = False

    def init_process(self) -> None:
        # Each log record would otherwise ask threading and multiprocessing who wrote it
        # (~2 µs of a delivery's ~10 µs line); no format here prints either (gunicorn's
        # prints the pid, which records still carry).
        logging.logThreads = False
        logging.logMultiprocessing = False
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.wsgi
        if not isinstance(app, Flask):
            raise TypeError(f"{type(self).__name__} serves the Flask app of "
                            f"webhook:create_app(), not {type(app).__name__}")
        self.wsgi: Any = Front(app)
