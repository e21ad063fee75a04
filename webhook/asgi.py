"""The web process's front: forge deliveries on asyncio, every other route in Flask.

gunicorn serves `webhook:create_app()` with this module's `Worker` (set in
`webhook/gunicorn_conf.py`): uvicorn's gunicorn worker (uvloop, and the httptools
parser) with the loaded Flask app wrapped in a `Front`, an ASGI app that

- answers `POST /webhook` and `POST /webhook/<forge>` itself, running the very steps
  of `webhook.intake` (detect, cap, verify, parse, match, answer, log) and sending the
  engine's submission (`worker.submission.SUBMIT`) on an asyncio Redis client: no
  thread, no WSGI environ, and one Redis round trip for an accepted or duplicate
  delivery, so many deliveries share one process while each waits on Redis;
- hands every other request (operator API, chat-ops, status, board, metrics) to the
  Flask app through `a2wsgi`'s WSGI bridge, in a small thread pool, and writes one
  access line for it in the format of `gunicorn_conf.access_log_format`.

A delivery's access record is its structured delivery line (`intake.log_delivery`).
The Flask view of `webhook.intake` stays the reference, and what the test client and
any WSGI server (`gunicorn -k gthread`) run; `tests/test_asgi.py` holds both fronts to
the same answers. `BoundedHttpTools` adds the request-head limits gunicorn's own
parser had and httptools lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import hiredis
import httptools
import redis.asyncio
from a2wsgi import WSGIMiddleware
from flask import Flask
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from webhook import errors
from webhook.app import REDIS_CONNECT_TIMEOUT, REDIS_SOCKET_TIMEOUT
from webhook.context import EXTENSION, Web
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
from worker import metrics, submission
from worker.api import Submitted, redis_unavailable

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
        self._redis: redis.asyncio.Redis | None = None
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

    def _client(self) -> redis.asyncio.Redis:
        """This worker's asyncio client (made in the worker, on its loop, at first use)."""
        if self._redis is None:
            settings = self.web.settings
            options: dict[str, Any] = {}
            if settings.redis_url.startswith("redis://"):
                options["connection_class"] = HiredisPackedConnection
            # Retries reconnect after a Redis restart left a pooled connection dead. A
            # retried submission is safe: if the lost call ran, the retry finds the
            # delivery seen and answers its release as a duplicate.
            self._redis = redis.asyncio.Redis.from_url(
                settings.redis_url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
                socket_timeout=REDIS_SOCKET_TIMEOUT, health_check_interval=30,
                retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), retries=1),
                **options)
        return self._redis

    def _committer(self) -> GroupCommit:
        if self._group is None:
            self._group = GroupCommit(self._client().register_script(submission.SUBMIT))
        return self._group

    async def deliver(self, forge_name: str | None, scope: Scope, receive: Receive,
                      send: Send) -> None:
        """One forge delivery, as `webhook.intake.receive` answers it."""
        headers = Headers(scope["headers"])
        body = Body(receive)
        outcome = Outcome()
        try:
            length = _content_length(headers)
            forge = open_delivery(forge_name, headers, length, self.web.settings, self.limit,
                                  outcome)
            raw = await self._read_in_time(body, length)
            result = read_pushes(forge, headers, headers.get("content-type"), raw,
                                 self.web.settings, outcome)
            if isinstance(result, Pending):
                result = answer(result, await self._submit_pending(result, forge.name),
                                outcome)
        except Exception as error:  # every error is answered here so it is logged once
            result = refuse(error, outcome)
        log_delivery(outcome, result.status)
        with contextlib.suppress(errors.BadRequest):
            await body.discard(DISCARD_MAX)
        await _send_answer(send, result)
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
            raise errors.RequestTimeout(f"the body did not arrive within {self.body_timeout:g} s",
                                        headers={"Connection": "close"}) from e

    async def _submit_pending(self, pending: Pending, forge: str) -> list[Submitted]:
        with redis_unavailable():
            planned = self.web.engine.plan(pending.events, count_as=forge)
            if planned is None:
                return []
            reply = await self._committer().submit(planned)
            return submission.answers(planned, reply)

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
            async with self._client().pipeline(transaction=False) as pipe:
                for field, n in counts.items():
                    pipe.hincrby(metrics.WEBHOOKS_KEY, field, n)
                await pipe.execute()
        except RedisError as e:
            log.warning("could not record %d delivery counts yet: %s", counts.total(), e)
            self._counts.update(counts)
            self._schedule_flush(COUNT_RETRY_SECONDS)

    async def bridge(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Any other request, to Flask; one access line after it."""
        started = time.perf_counter()
        status, size = 0, 0

        async def observed(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.flask(scope, receive, observed)  # type: ignore[arg-type]
        finally:
            client = scope.get("client") or ("-", 0)
            access.info('%s "%s %s HTTP/%s" %s %s %dms', client[0], scope["method"],
                        scope["path"], scope.get("http_version", "1.1"), status or "-", size,
                        (time.perf_counter() - started) * 1000)

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
                if self._redis is not None:
                    await self._redis.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


class GroupCommit:
    """Deliveries waiting on Redis at the same time share one `SUBMIT` call.

    One call is in flight per worker; the deliveries that arrive meanwhile wait for it
    and go together in the next (up to `BATCH_MAX`). A lone delivery goes at once, so
    at low load this is one call per delivery; under a burst it is one call, one
    round trip and one packing of arguments for many. The script runs the batch
    atomically, in order; if Redis refuses the call, every delivery in it gets the
    error, and nothing of any of them was written."""

    def __init__(self, script: Any) -> None:
        self._script = script
        self._waiting: list[tuple[submission.Plan, asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def submit(self, planned: submission.Plan) -> Any:
        """The script's reply for this one delivery."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((planned, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all())
        return await future

    async def _send_all(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:BATCH_MAX]
                del self._waiting[:BATCH_MAX]
                try:
                    replies = await self._script(
                        args=submission.script_args([planned for planned, _ in batch]))
                    if len(replies) != len(batch):
                        raise RuntimeError(f"the submission script answered {len(replies)} "
                                           f"of {len(batch)} deliveries")
                except Exception as error:  # each waiting delivery answers it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), reply in zip(batch, replies, strict=True):
                    if not future.done():
                        future.set_result(reply)
        finally:
            self._sender = None


class HiredisPackedConnection(redis.asyncio.Connection):
    """redis-py's asyncio connection, packing commands with hiredis's C packer as its
    sync connection does. Its own packer joins a growing buffer once per argument, which
    is quadratic in the argument count: 0.1 ms for a submission's ~150 arguments, 14 µs
    with hiredis (same bytes)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " not in args[0]:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:  # a memoryview or the like: the general packer knows it
                pass
        return super().pack_command(*args)


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise errors.BadRequest("the Content-Length header is not a number")
    return int(value)


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
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in result.headers.items()]
    await send({"type": "http.response.start", "status": result.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request-head limits gunicorn's parser had:
    a request line up to 8190 bytes, up to 100 header fields, and a whole head up to
    64 KiB (httptools itself buffers a header of any size). A request over them gets
    400 and the connection is closed, before any application code runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # bytes received in earlier chunks of an unfinished head
        self._in_head = True
        self._fields = 0

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            if self._head_bytes > HEAD_BYTES_MAX:
                self.send_400_response("Request header fields too large.")
                return
            self._head_bytes += len(data)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._fields = True, 0, 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > REQUEST_LINE_MAX:
            raise httptools.HttpParserError("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > HEADER_FIELDS_MAX:
            raise httptools.HttpParserError("too many header fields")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = HeadWithBody(self.transport)  # type: ignore[assignment]


class HeadWithBody:
    """The transport as one response sees it: the response head waits for the first
    piece of the body and goes out with it, in one write. Each write is one trip through
    the kernel's TCP stack (on loopback the sender's write also runs the receiver's
    side), and uvicorn writes the head and the body separately."""

    CONTINUE = b"HTTP/1.1 100 "

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
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
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class Worker(UvicornWorker):  # type: ignore[misc]
    """gunicorn worker: uvicorn on uvloop with `BoundedHttpTools`, serving `Front(app)`."""

    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop", "http": BoundedHttpTools, "interface": "asgi3", "lifespan": "on",
        "access_log": False, "proxy_headers": False, "server_header": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        access.handlers = self.log.access_log.handlers
        access.setLevel(self.log.access_log.level)
        access.propagate = False

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.wsgi
        if not isinstance(app, Flask):
            raise TypeError(f"{type(self).__name__} serves the Flask app of "
                            f"webhook:create_app(), not {type(app).__name__}")
        self.wsgi: Any = Front(app)
