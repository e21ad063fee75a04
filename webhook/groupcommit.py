"""The web worker's submissions to Redis, grouped: deliveries waiting at the same time
share one call of the engine's script (`GroupCommit`).

What a delivery's submission is (`worker.submission`: its plan, the script, its
answers) and how a command reaches Redis (`webhook.redislink`) belong to those
modules; this owns only who goes in which call, and who gets which part of its reply.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from typing import Any

from redis.exceptions import ResponseError

from webhook.redislink import Link, Replied
from worker import submission

log = logging.getLogger("bluegreen.web")
BATCH_MAX = 64                 # deliveries per Redis call (group commit)


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
