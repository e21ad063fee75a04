"""The web front's own connection to Redis: the submission script and the counts.

A web worker sends Redis two things on its event loop: the submission script
(`worker.submission.SUBMIT`, one call per group of deliveries) and the counts of
refused deliveries. `Link.execute(*commands)` sends commands in one write and returns
their replies, raising the first error reply as redis-py's `ResponseError`.
`Link.call(command, callback)` sends one command and hands `callback` its reply (an
error reply or the failure as the exception instance): on an open connection the
command is written at once and the callback runs from the socket's own callback, with
no task, no future and no extra turn of the event loop in between (docs/benchmarks.md,
change 21).

`open_link(url)` gives a `RedisLink` for `redis://` and `unix://` URLs: one asyncio
connection speaking RESP with hiredis's C packer and reader (both from the `hiredis`
package redis-py itself uses), with replies matched to calls in order. redis-py's
asyncio client costs ~100 µs of CPU per call (its connection pool, retry wrapper and
stream reader, in Python); this costs ~45 µs, most of it the system calls, and at
one delivery per call (a quiet server) that was a quarter of a delivery's CPU. Any
other URL (`rediss://`, TLS with its certificate options) gets a `ClientLink` over
redis-py's asyncio client, which knows them all.

While a reply is due, `RedisLink` can keep the event loop polling instead of sleeping
(`poll`, seconds after the last write; the web process sets it, `WEB_REDIS_POLL_US`).
A reply on loopback comes in ~100-200 µs, and a worker that sleeps meanwhile pays to be
woken: on a virtual machine whose idle vCPUs halt at once, each wake-up of a process
waits for the hypervisor (a round trip between two processes: 63 µs there, 13 µs where
idle vCPUs poll; docs/benchmarks.md, change 23). Polling is the loop turning with
nothing to run, one `sched_yield` a turn, so any other process that has work on the
same CPU runs first; it stops when no reply is due or the time is up, whichever is
first. A busy loop hardly notices: a turn of polling is one callback among its work.

Both keep redis-py's contract for the front: connect within `connect_timeout`, a reply
within `reply_timeout` (else the connection is dropped: a late reply cannot be matched
any more), and one retry after a lost connection or a timeout, as redis-py's `Retry`
did. A retried submission is safe: if the lost call ran, the retry finds the delivery
seen and answers its release as a duplicate.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import hiredis
import redis.asyncio
from redis.asyncio.connection import parse_url
from redis.exceptions import AuthenticationError, InvalidResponse, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Command = tuple[Any, ...]
# What `Link.call` hands its callback: the reply, or the exception instance (an error
# reply as `ResponseError`, a lost connection or a timeout as redis-py's errors).
Replied = Callable[[Any], None]
RETRY_BACKOFF_SECONDS = 0.01  # before the one retry, with up to as much again of jitter
log = logging.getLogger("bluegreen.web")


class Link(Protocol):
    async def execute(self, *commands: Command) -> list[Any]: ...

    def call(self, command: Command, callback: Replied) -> None:
        """`callback` gets the reply, or the exception that failed the command (even
        one that could not be sent at all): `call` itself does not raise."""

    async def close(self) -> None: ...


def open_link(url: str, *, connect_timeout: float, reply_timeout: float,
              poll: float = 0.0) -> Link:
    """The front's link to the Redis at `url` (connected at first use), polling for a
    due reply for up to `poll` seconds after each write (`redis://` and `unix://`)."""
    if url.startswith(("redis://", "unix://")):
        return RedisLink(url, connect_timeout=connect_timeout, reply_timeout=reply_timeout,
                         poll=poll)
    return ClientLink(redis.asyncio.Redis.from_url(
        url, socket_connect_timeout=connect_timeout, socket_timeout=reply_timeout,
        health_check_interval=30, retry_on_timeout=True))


class RedisLink:
    """One pipelined RESP connection (see the module's docstring)."""

    def __init__(self, url: str, *, connect_timeout: float, reply_timeout: float,
                 poll: float = 0.0) -> None:
        self._options = parse_url(url)
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.poll = poll
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()  # binds to the loop at first use
        self._tasks: set[asyncio.Task[None]] = set()  # calls going through `execute`

    async def execute(self, *commands: Command) -> list[Any]:
        try:
            return await self._execute(commands)
        except (RedisConnectionError, RedisTimeoutError):
            return await self._retry(commands)

    def call(self, command: Command, callback: Replied) -> None:
        """`command` written now if the connection is open, its reply (or the exception)
        to `callback` from the socket's callback; else, and for the one retry after a
        lost connection or a timeout, through a task as `execute` does. A command that
        cannot be packed fails on the loop's next turn, never inside `call`."""
        connection = self._connection
        if connection is None or connection.lost:
            _in_task(self.execute(command), callback, self._tasks)
            return
        timer = asyncio.get_running_loop().call_later(self.reply_timeout, self._expire,
                                                      connection)

        def replied(reply: Any) -> None:
            timer.cancel()
            if isinstance(reply, (RedisConnectionError, RedisTimeoutError)):
                _in_task(self._retry((command,)), callback, self._tasks)
            else:
                callback(reply)

        try:
            connection.call(command, replied)
        except Exception as error:  # it could not be packed: nothing was sent
            timer.cancel()
            asyncio.get_running_loop().call_soon(_settle, callback, error)

    async def _retry(self, commands: tuple[Command, ...]) -> list[Any]:
        await asyncio.sleep(RETRY_BACKOFF_SECONDS * (1 + random.random()))  # noqa: S311 (jitter)
        return await self._execute(commands)

    def _expire(self, connection: _Connection) -> None:
        """A call's reply is late: the connection is dropped, as `_execute` drops it
        (every call waiting on it fails; a late reply could no longer be matched)."""
        connection.drop(RedisTimeoutError(
            f"Redis did not answer within {self.reply_timeout:g} s"))

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.drop()
            self._connection = None

    async def _execute(self, commands: tuple[Command, ...]) -> list[Any]:
        connection = self._connection
        if connection is None or connection.lost:
            connection = await self._connect()
        replies = connection.send(commands)
        try:
            async with asyncio.timeout(self.reply_timeout):
                results = [await reply for reply in replies]
        except TimeoutError as e:  # asyncio's; the pending replies can no longer be matched
            connection.drop()
            raise RedisTimeoutError(f"Redis did not answer within {self.reply_timeout:g} s") from e
        for result in results:
            if isinstance(result, ResponseError):
                raise result
        return results

    async def _connect(self) -> _Connection:
        async with self._connecting:  # one connect at a time; the others use its result
            if self._connection is not None and not self._connection.lost:
                return self._connection
            try:
                async with asyncio.timeout(self.connect_timeout):
                    self._connection = await self._open()
            except TimeoutError as e:
                raise RedisTimeoutError(f"could not connect to Redis within "
                                   f"{self.connect_timeout:g} s") from e
            except OSError as e:
                raise RedisConnectionError(f"could not connect to Redis: {e}") from e
            return self._connection

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        options = self._options
        made = functools.partial(_Connection, poll=self.poll)
        if "path" in options:
            _, connection = await loop.create_unix_connection(made, options["path"])
        else:
            _, connection = await loop.create_connection(
                made, options.get("host", "localhost"), options.get("port", 6379))
        setup: list[Command] = []
        if options.get("password"):
            setup.append(("AUTH", *filter(None, (options.get("username"),)),
                          options["password"]))
        if options.get("db"):
            setup.append(("SELECT", options["db"]))
        for reply in [await r for r in connection.send(tuple(setup))]:
            if isinstance(reply, ResponseError):
                connection.drop()
                raise AuthenticationError(str(reply))
        return connection


class _Connection(asyncio.Protocol):
    """The socket: commands out in one write, replies matched to them in order, each
    to its future (`send`) or its callback (`call`); the loop polled for `poll` seconds
    after each write while a reply is due (the module's docstring)."""

    def __init__(self, poll: float = 0.0) -> None:
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self._waiting: deque[asyncio.Future[Any] | Replied] = deque()
        self._transport: asyncio.Transport | None = None
        self.lost = False
        self._poll = poll
        self._poll_until = 0.0
        self._polling = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, commands: tuple[Command, ...]) -> list[asyncio.Future[Any]]:
        """One future per command, resolved with its reply (an error reply as the
        `ResponseError` instance, for the caller to raise)."""
        if self.lost or self._transport is None:
            raise RedisConnectionError("the connection to Redis is closed")
        # Packed before anything waits: a command that cannot be packed raises with
        # nothing sent, and no reply to come is matched to a caller it is not for.
        data = b"".join(hiredis.pack_command(c) for c in commands)
        loop = asyncio.get_running_loop()
        replies = [loop.create_future() for _ in commands]
        self._waiting.extend(replies)
        self._transport.write(data)
        self._written()
        return replies

    def call(self, command: Command, callback: Replied) -> None:
        """`callback` gets the reply (an error reply as the `ResponseError` instance),
        or the error that ended the connection first."""
        if self.lost or self._transport is None:
            raise RedisConnectionError("the connection to Redis is closed")
        data = hiredis.pack_command(command)  # before the callback waits, as in `send`
        self._waiting.append(callback)
        self._transport.write(data)
        self._written()

    def _written(self) -> None:
        if self._poll <= 0:
            return
        self._poll_until = time.monotonic() + self._poll
        if not self._polling:
            self._polling = True
            asyncio.get_running_loop().call_soon(self._poll_turn)

    def _poll_turn(self) -> None:
        """One turn of polling: while a reply is due (and the time is not up) the next
        turn is queued, so the loop checks its sockets without sleeping; the CPU goes
        first to any other process with work on it."""
        # (A lost connection has failed every waiting call: nothing is due on it.)
        if self._waiting and time.monotonic() < self._poll_until:
            os.sched_yield()
            asyncio.get_running_loop().call_soon(self._poll_turn)
        else:
            self._polling = False

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                _settle(self._waiting.popleft(), reply)
        except (InvalidResponse, IndexError) as e:  # nothing more can be matched
            self.drop(RedisConnectionError(f"Redis sent what cannot be read: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        reason = f": {exc}" if exc else ""
        self._fail(RedisConnectionError(f"Redis closed the connection{reason}"))

    def drop(self, error: Exception | None = None) -> None:
        """Close the connection; every call still waiting fails."""
        self.lost = True
        if self._transport is not None:
            self._transport.abort()
        self._fail(error or RedisConnectionError("the connection to Redis was dropped"))

    def _fail(self, error: Exception) -> None:
        while self._waiting:
            _settle(self._waiting.popleft(), error)


def _settle(waiter: asyncio.Future[Any] | Replied, outcome: Any) -> None:
    """A reply or an error to whoever waits for it. A callback's own failure is logged
    here: raised, it would stop the reading of the replies behind it."""
    if isinstance(waiter, asyncio.Future):
        if not waiter.done():
            if isinstance(outcome, BaseException) and not isinstance(outcome, ResponseError):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        return
    try:
        waiter(outcome)
    except Exception:
        log.exception("a Redis reply's callback failed")


def _in_task(calling: Awaitable[list[Any]], callback: Replied,
             tasks: set[asyncio.Task[None]]) -> None:
    """`callback` gets the one reply of `calling` (or what it raised), from a task kept
    in `tasks` until it is done."""
    async def run() -> None:
        try:
            (reply,) = await calling
        except Exception as error:
            reply = error
        _settle(callback, reply)

    task = asyncio.get_running_loop().create_task(run())
    tasks.add(task)
    task.add_done_callback(tasks.discard)


class ClientLink:
    """redis-py's asyncio client behind the same `execute` (for URLs `RedisLink` does
    not speak, such as TLS)."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._tasks: set[asyncio.Task[None]] = set()

    async def execute(self, *commands: Command) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute())

    def call(self, command: Command, callback: Replied) -> None:
        _in_task(self.execute(command), callback, self._tasks)

    async def close(self) -> None:
        await self._client.aclose()
