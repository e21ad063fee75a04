"""Release records and their audit trail in Redis: the module that owns them.

Owns the Redis keys below and `ReleaseStore`; what a record and an audit entry hold
(`Release`, `AuditEntry`, release ids) is `worker.records`, re-exported here. Every
write that must land together (record, indexes, audit entry) goes through one
MULTI/EXEC, or, for a new release from a tag push, through the intake's one script
call (`worker.submission`), which writes what `add_commands` builds here, from this
module's key formats and field names (`tests/test_submission.py` holds the two
equal); state changes go through `machine.advance()` under WATCH, so two writers
cannot both move one release. Keys:

    bluegreen:release:<id>                  hash: the record
    bluegreen:release:<id>:audit            list: JSON audit entries, oldest first
    bluegreen:releases                      zset: every release, by created_at
    bluegreen:releases:app:<app>            zset: one app's releases
    bluegreen:releases:app:<app>:<color>    zset: one app's releases into one colour
    bluegreen:releases:state:<state>        zset: releases now in that state
    bluegreen:events                        stream: {release, app, state, step, at} per write
                                            (add, transition, set_step, note), MAXLEN ~ 10000;
                                            readers (chat notifier, live status) re-read the
                                            record, so an entry only says "look again";
                                            `worker.notify.ask_resend` adds {release, resend,
                                            at}: send its chat message again, even unchanged
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from redis import Redis, WatchError
from redis.client import Pipeline

from worker import metrics
from worker.colors import Color
from worker.machine import (
    HAS_DEPLOYED,
    MAY_HAVE_DEPLOYED,
    IllegalTransition,
    ReleaseState,
    advance,
)
from worker.records import (
    NEW_RECORD_FIELDS,
    AuditEntry,
    Release,
    ReleaseId,
    ReleaseNotFound,
    Route,
    is_release_id,
    new_release_id,
)
from worker.redistext import as_text

__all__ = ["NEW_RECORD_FIELDS", "AuditEntry", "IllegalTransition", "Move", "Note",
           "Release", "ReleaseId", "ReleaseNotFound", "ReleaseState", "ReleaseStore", "Route",
           "is_release_id", "new_release_id", "watched"]

T = TypeVar("T")

PREFIX = "bluegreen:"
RELEASE_KEY = PREFIX + "release:{id}"
AUDIT_KEY = PREFIX + "release:{id}:audit"
ALL_KEY = PREFIX + "releases"
APP_KEY = PREFIX + "releases:app:{app}"
COLOR_KEY = PREFIX + "releases:app:{app}:{color}"
STATE_KEY = PREFIX + "releases:state:{state}"
EVENTS_KEY = PREFIX + "events"
# The sorted sets that list a release (formats of its app, colour and state).
INDEX_KEYS = (ALL_KEY, APP_KEY, COLOR_KEY, STATE_KEY)
EVENTS_MAXLEN = 10000
OCCUPANT_PAGE = 20  # releases read at a time, after the newest, looking for a colour's occupant
_HOLDS = HAS_DEPLOYED - {ReleaseState.DEPLOYING}
"""States only reached after the release applied its Deployment (testing and on)."""
_MAY_HOLD = MAY_HAVE_DEPLOYED | {ReleaseState.DEPLOYING}
"""States reached before and after that: the audit trail tells (`took_colour`)."""
TAKES_COLOUR_STEP = "deployment"
"""The audit step of the entry a release gets just before its Deployment is applied: from
then on its colour holds it (`occupant_for`), whatever becomes of the release."""


@dataclass(frozen=True)
class Note:
    """An audit entry to add without a state change (`ReleaseStore.note`,
    `ReleaseStore.write_while_recorded`): who, which step, what; stamped when written."""

    actor: str
    step: str
    message: str
    route_before: Route | None = None
    route_after: Route | None = None


@dataclass(frozen=True)
class Move:
    """One release's part of `ReleaseStore.transitions`: to which state, and why."""

    release_id: str
    to: ReleaseState
    message: str
    error: str | None = None


class ReleaseStore:
    """Reads and writes release records; every multi-key write is one transaction."""

    def __init__(self, redis: Redis, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock

    def add(self, release: Release, *, message: str) -> None:
        """Record a new release and its first audit entry, in one transaction."""
        with self.redis.pipeline() as pipe:
            for command in add_commands(release, intake_entry(release, message)):
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            pipe.execute()

    def get(self, release_id: str) -> Release | None:
        """The release, or None; an id of the wrong shape is none (Redis is not asked)."""
        if not is_release_id(release_id):
            return None
        raw = self.redis.hgetall(RELEASE_KEY.format(id=release_id))
        return Release.from_hash(raw) if raw else None

    def get_many(self, release_ids: Iterable[bytes | str]) -> list[Release]:
        """The releases that exist among `release_ids`, in the order given."""
        with self.redis.pipeline(transaction=False) as pipe:
            for release_id in release_ids:
                pipe.hgetall(RELEASE_KEY.format(id=as_text(release_id)))
            return [Release.from_hash(raw) for raw in pipe.execute() if raw]

    def transition(self, release_id: str, to: ReleaseState, *, actor: str, step: str,
                   message: str, route_before: Route | None = None,
                   route_after: Route | None = None, error: str | None = None) -> Release:
        """Move the release to `to` (per `machine.TRANSITIONS`) and append an audit entry."""
        [updated] = self.transitions([Move(release_id, to, message, error)], actor=actor,
                                     step=step, route_before=route_before,
                                     route_after=route_after)
        return updated

    def transitions(self, moves: Sequence[Move], *, actor: str, step: str,
                    route_before: Route | None = None,
                    route_after: Route | None = None) -> list[Release]:
        """Move several releases in ONE transaction, each with its audit entry: all land or
        none does (a rollback's undone release and the one live again, say: apart, a crash
        between them would leave no release live in the records). Checked per
        `machine.TRANSITIONS` before anything is written."""
        def change(current: list[Release]) -> list[tuple[Release, AuditEntry | None]]:
            now = self.clock()
            changed: list[tuple[Release, AuditEntry | None]] = []
            for release, move in zip(current, moves, strict=True):
                updated = advance(release, move.to, now=now)
                if move.error is not None:
                    updated = replace(updated, error=move.error)
                changed.append((updated, AuditEntry(
                    at=now, actor=actor, step=step, state_from=release.state.value,
                    state_to=move.to.value, route_before=route_before,
                    route_after=route_after, message=move.message)))
            return changed
        return self._update([m.release_id for m in moves], change)

    def set_step(self, release_id: str, step: str | None) -> Release:
        """Record which step a job is running now (None: none)."""
        [updated] = self._update([release_id], lambda current: [
            (replace(current[0], step=step, updated_at=self.clock()), None)])
        return updated

    def note(self, release_id: str, *, actor: str, step: str, message: str,
             route_before: Route | None = None, route_after: Route | None = None) -> None:
        """Append an audit entry without changing the state. It lands only if the record
        is still there when it is written (`write_while_recorded`): a release pruned in
        between (`forget`) gets no orphan audit trail or event, and the note raises
        ReleaseNotFound. To add one to a transaction of one's own: `queue_note`."""
        note = Note(actor=actor, step=step, message=message, route_before=route_before,
                    route_after=route_after)
        if not self.write_while_recorded(release_id, note=note):
            raise ReleaseNotFound(release_id)

    def queue_note(self, pipe: Pipeline, release: Release, note: Note) -> None:
        """Queue `note`'s audit entry for `release`, as the caller read it, into the caller's
        transaction, which owns the atomicity: nothing is read here (the record is not
        checked: a caller whose release may be pruned uses `write_while_recorded`)."""
        self._queue_note(pipe, release.id, release.app, release.state.value, release.step,
                         self._entry(note))

    def write_while_recorded(self, release_id: str,
                             write: Callable[[Pipeline], object] = lambda pipe: None, *,
                             note: Note | None = None) -> bool:
        """Run `write` (it queues commands into the pipeline it is given), with `note`'s
        audit entry after them, in one MULTI/EXEC that lands only if the release's record
        is still there: the record is read under WATCH, and the whole is retried if it
        changed in between, as `_update` is. False, writing nothing, when the record is
        gone: a release pruned meanwhile (`forget`) gets nothing written back for it, no
        audit trail or event, nor the keys others keep for it (its chat records)."""
        key = RELEASE_KEY.format(id=release_id)

        def write_if_recorded(pipe: Pipeline) -> bool:
            app, state, current_step = pipe.hmget(key, ["app", "state", "step"])
            if app is None:
                return False
            entry = self._entry(note) if note is not None else None
            pipe.multi()
            write(pipe)
            if entry is not None:
                self._queue_note(pipe, release_id, app, state, current_step, entry)
            return True
        return watched(self.redis, [key], write_if_recorded)

    def _entry(self, note: Note) -> AuditEntry:
        """A note's audit entry (no state change), stamped now."""
        return AuditEntry(at=self.clock(), actor=note.actor, step=note.step, state_from=None,
                          state_to=None, route_before=note.route_before,
                          route_after=note.route_after, message=note.message)

    @staticmethod
    def _queue_note(pipe: Pipeline, release_id: str, app: Any, state: Any, step: Any,
                    entry: AuditEntry) -> None:
        pipe.rpush(AUDIT_KEY.format(id=release_id), entry.encoded())
        _queue_event(pipe, release_id, app, state, step, entry.at)

    def audit_lengths(self, release_ids: Sequence[str]) -> list[int]:
        """How many entries each release's audit trail has (0: none), in one pipelined read."""
        with self.redis.pipeline(transaction=False) as pipe:
            for release_id in release_ids:
                pipe.llen(AUDIT_KEY.format(id=release_id))
            return [int(n) for n in pipe.execute()]

    def audit(self, release_id: str) -> list[AuditEntry]:
        """The audit trail, oldest first; empty for an id of the wrong shape, as for none."""
        if not is_release_id(release_id):
            return []
        raw = self.redis.lrange(AUDIT_KEY.format(id=release_id), 0, -1)
        return [AuditEntry.from_json(json.loads(item)) for item in raw]

    def latest_for(self, app: str, color: Color) -> Release | None:
        """The newest release ever recorded for `app` into `color`."""
        ids = _ids(self.redis.zrevrange(COLOR_KEY.format(app=app, color=color.value), 0, 0))
        found = self.get_many(ids)
        return found[0] if found else None

    def occupant_for(self, app: str, color: Color) -> Release | None:
        """The release that last deployed into `color`, by the records (its Deployment is
        there unless it was decommissioned since): the newest recorded into it that applied
        its Deployment (`took_colour`). Newer ones that did not are passed over: queued or
        being checked, rejected by the sanity check (a tag into the live colour), deploying
        but not that far yet (its Service, its drain), or superseded, aborted or failed
        before it."""
        index = COLOR_KEY.format(app=app, color=color.value)
        start, size = 0, 1  # mostly the newest is the one: read it alone first
        while ids := _ids(self.redis.zrevrange(index, start, start + size - 1)):
            for release in self.get_many(ids):
                if self.holds_colour(release):
                    return release
            start, size = start + size, OCCUPANT_PAGE
        return None

    def holds_colour(self, release: Release) -> bool:
        """Whether the release applied its Deployment to its colour (testing and on, or an
        end reached after `took_colour`); it may have been deleted or replaced since."""
        return release.state in _HOLDS or (
            release.state in _MAY_HOLD and self.took_colour(release.id))

    def took_colour(self, release_id: str) -> bool:
        """Whether the release went as far as applying its Deployment (its audit trail has
        the `TAKES_COLOUR_STEP` entry, or reached `testing`, which comes after)."""
        return any(e.step == TAKES_COLOUR_STEP or e.state_to == ReleaseState.TESTING.value
                   for e in self.audit(release_id))

    def ended_before(self, before: float) -> list[str]:
        """Ids of the releases in an end state (one with no exits) that were recorded
        before `before`, oldest first: those that may have reached it before then."""
        with self.redis.pipeline(transaction=False) as pipe:
            for state in ReleaseState:
                if state.is_terminal:
                    pipe.zrangebyscore(STATE_KEY.format(state=state.value), "-inf", f"({before!r}",
                                       withscores=True)
            found = [(score, as_text(i)) for group in pipe.execute() for i, score in group]
        return [release_id for _, release_id in sorted(found)]

    def forget(self, release: Release, *, also: Sequence[str] = ()) -> bool:
        """Delete an ended release as it was read: its record, audit trail and index
        entries, and `also` (keys others keep for it), in one MULTI/EXEC. False, deleting
        nothing, if its record changed since (or is gone)."""
        if not release.state.is_terminal:
            raise ValueError(f"{release.id} is {release.state}: only an ended release goes")
        key = RELEASE_KEY.format(id=release.id)
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                raw = pipe.hgetall(key)
                if not raw or Release.from_hash(raw) != release:
                    return False
                pipe.multi()
                pipe.delete(key, AUDIT_KEY.format(id=release.id), *also)
                for index in _index_keys(release.app, release.color, release.state):
                    pipe.zrem(index, release.id)
                pipe.execute()
                return True
            except WatchError:
                return False

    def in_states(self, states: Iterable[ReleaseState]) -> list[Release]:
        """Releases now in any of `states`, oldest first."""
        with self.redis.pipeline(transaction=False) as pipe:
            for state in states:
                pipe.zrange(STATE_KEY.format(state=state.value), 0, -1)
            ids = {as_text(i) for group in pipe.execute() for i in group}
        return sorted(self.get_many(ids), key=lambda r: (r.created_at, r.id))

    def recent(self, *, app: str | None = None, state: ReleaseState | None = None,
             limit: int = 100) -> list[Release]:
        """Newest first, filtered by app and state."""
        index = (STATE_KEY.format(state=state.value) if state is not None
                 else APP_KEY.format(app=app) if app is not None else ALL_KEY)
        found: list[Release] = []
        start, page = 0, max(limit, 50)
        while len(found) < limit:
            ids = _ids(self.redis.zrevrange(index, start, start + page - 1))
            if not ids:
                break
            found += [r for r in self.get_many(ids) if app is None or r.app == app]
            start += page
        return found[:limit]

    def _update(self, release_ids: Sequence[str], change: Callable[
            [list[Release]], list[tuple[Release, AuditEntry | None]]]) -> list[Release]:
        """Read-modify-write records under WATCH, in one MULTI/EXEC; retried if someone
        wrote in between."""
        keys = [RELEASE_KEY.format(id=release_id) for release_id in release_ids]

        def read_and_change(pipe: Pipeline) -> list[Release]:
            current = []
            for release_id, key in zip(release_ids, keys, strict=True):
                raw = pipe.hgetall(key)
                if not raw:
                    raise ReleaseNotFound(release_id)
                current.append(Release.from_hash(raw))
            changed = change(current)
            pipe.multi()
            for before, (updated, entry) in zip(current, changed, strict=True):
                self._queue_write(pipe, before, updated, entry)
            return [updated for updated, _ in changed]
        return watched(self.redis, keys, read_and_change)

    def _queue_write(self, pipe: Pipeline, current: Release, updated: Release,
                     entry: AuditEntry | None) -> None:
        key = RELEASE_KEY.format(id=updated.id)
        pipe.hset(key, mapping=updated.to_hash())
        cleared = [k for k, v in updated.to_json().items() if v is None]
        if cleared:
            pipe.hdel(key, *cleared)
        if updated.state is not current.state:
            pipe.zrem(STATE_KEY.format(state=current.state.value), updated.id)
            pipe.zadd(STATE_KEY.format(state=updated.state.value),
                      {updated.id: updated.created_at})
            metrics.count_transition(pipe, app=updated.app, before=current.state,
                                     after=updated.state)
        if entry is not None:
            pipe.rpush(AUDIT_KEY.format(id=updated.id), entry.encoded())
        _queue_event(pipe, updated.id, updated.app, updated.state, updated.step,
                     updated.updated_at)


def watched(redis: Redis, keys: Sequence[str], body: Callable[[Pipeline], T]) -> T:
    """Run `body` with `keys` WATCHed: it reads through the pipeline, then calls `multi()`
    and queues its writes, which land in one MULTI/EXEC, and all of it runs again if a key
    changed in between. A body that returns before `multi()` writes nothing. (Redis's own
    `transaction` loop, but typed, and without an EXEC of nothing in that case.)"""
    with redis.pipeline() as pipe:
        while True:
            try:
                if keys:
                    pipe.watch(*keys)  # type: ignore[no-untyped-call]
                result = body(pipe)
                if pipe.explicit_transaction:
                    pipe.execute()
                return result
            except WatchError:
                continue  # a watched key changed between the read and the write


def intake_entry(release: Release, message: str) -> AuditEntry:
    """A new release's first audit entry."""
    return AuditEntry(at=release.created_at, actor=release.actor, step="intake",
                      state_from=None, state_to=release.state.value, route_before=None,
                      route_after=None, message=message)


def add_commands(release: Release, entry: AuditEntry) -> list[tuple[Any, ...]]:
    """The Redis commands, in order, that record a new release, its indexes, its first
    audit entry and its event (`ReleaseStore.add` runs them; the intake's one-call
    submission, `worker.submission`, writes the same from a release's values)."""
    score, member = release.created_at, release.id
    record = itertools.chain.from_iterable(release.to_hash().items())
    return [
        ("HSET", RELEASE_KEY.format(id=release.id), *record),
        *(("ZADD", key, score, member)
          for key in _index_keys(release.app, release.color, release.state)),
        ("RPUSH", AUDIT_KEY.format(id=release.id), entry.encoded()),
        _event_command(release.id, release.app, release.state, release.step, entry.at),
    ]


@functools.lru_cache(maxsize=1024)
def _index_keys(app: str, color: Color, state: ReleaseState) -> tuple[str, ...]:
    """The sorted sets that list a release of `app` into `color` in `state`, made once
    per combination (the intake would format them again for every delivery)."""
    return tuple(key.format(app=app, color=color.value, state=state.value)
                 for key in INDEX_KEYS)


def _event_command(release_id: str, app: Any, state: Any, step: Any,
                   at: float) -> tuple[Any, ...]:
    """XADD of "this release changed" to the events stream (the notifier reads it)."""
    return ("XADD", EVENTS_KEY, "MAXLEN", "~", EVENTS_MAXLEN, "*", "release", release_id,
            "app", as_text(app or ""), "state", as_text(state or ""), "step",
            as_text(step or ""), "at", repr(at))


def _queue_event(pipe: Pipeline, release_id: str, app: Any, state: Any, step: Any,
                 at: float) -> None:
    """Add "this release changed" to the events stream, in the writer's transaction."""
    pipe.execute_command(*_event_command(release_id, app, state, step, at))  # type: ignore[no-untyped-call]


def _ids(members: Iterable[Any]) -> list[str]:
    """Members of a sorted set (read without scores) as text."""
    return [as_text(member) for member in members]
