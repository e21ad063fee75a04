"""The chat notifier: one Slack message per release, posted when it is queued, updated in place.

A sidecar of `bluegreen worker` (`worker.sidecars` runs it). It follows the release events
stream (`bluegreen:events`, written by `worker.releases`) with the consumer group
`notify`, and for every release that changed it renders the message
(`worker.chatmessages`) and posts it (`chat.postMessage`) or updates it
(`chat.update`, by the `ts` kept in Redis). It never blocks or fails a release: Slack
is only ever called from the notifier's own thread, and a failed call is retried later.
A post that may have worked — its answer never came (a timeout), or was a 5xx or one
of the errors Slack says may follow partial success (`fatal_error`, `internal_error`,
`service_unavailable`, `request_timeout`) — is not simply posted again: the retry
first looks for the message by its metadata (`worker.slackapi`) and adopts it if
Slack has it; a channel configured by name is looked for by the id Slack answered a
post to it with, or else by the one Slack's list of channels gives. When Slack cannot
be asked (no `channels:history` scope; a channel given by name that no post has been
answered for yet, without `channels:read` / `groups:read` to list it, or that the
list does not have: not read again for that name for a few minutes) it posts again, as
it did before, and says so in the log.

Someone else may rewrite a message too: a click's "⏳ promoting…" reply goes through
Slack's `response_url` from the web process, and can reach Slack after the notifier's
update of the outcome, when the stored digest says the message is current. Once that
reply has been answered (or has failed), the web side asks for the message to be sent
again (`Engine.resend_chat_message` → `ask_resend`): an entry on the events stream that
names the release and carries `resend`. Reading it, the notifier forgets the message's
digest in the same MULTI/EXEC that marks the release dirty, so the next sync updates the
message to what the release is now, whatever order the two writes reached Slack in.

How nothing is lost: an event is acknowledged in the same MULTI/EXEC that marks its
release *dirty* (a sorted set scored by when to sync it next), so after a restart the
dirty set and the group's pending entries hold all unfinished work. Syncing renders
the release as it is *now*, so many events coalesce into one call, and a message whose
rendering did not change is not sent again. A failed call is retried with exponential
backoff (1 s doubling to 5 min); a 429 pauses every Slack call for its `Retry-After`.
The first failure of a streak and the recovery are noted in the release's audit trail
(step `chat`, which the message itself leaves out). Errors that retrying cannot fix
(bad token, unknown channel) wait for the release's next change instead.

A release pruned (`bluegreen prune`, `worker.retention`) while its message is being sent
gets nothing written back: the writes of a message's record, and its audit notes, land
only while the release is recorded (`ReleaseStore.write_while_recorded`, which WATCHes
the record), and the notifier then lets the release go.

Only one notifier is active per Redis (a lock), so two worker processes never post
the same message twice. Keys:

    bluegreen:chat:slack:<release>     hash: channel, ts, digest, attempts, and `unsure`
                                       (when a post that may have worked was sent)
                                       until it is known
    bluegreen:chat:slack:channels      hash: channel name -> id (`worker.slackapi`)
    bluegreen:chat:slack:unlisted      hash: channel name -> until when Slack's list of
                                       channels is taken as not having it (`worker.slackapi`)
    bluegreen:chat:slack:dirty         zset: release id -> time of its next sync
    bluegreen:chat:notify:lock         the active notifier (token: host-pid)

Mattermost (`worker.mattermost`) is delivered beside Slack in the same sync, when it is
configured: Mattermost first, so a slow or failing Slack call never keeps a post from
being sent (only a Slack 429 pauses every sync for its `Retry-After`); each keeps its
own record and digest, and a failed Mattermost call puts the release back in the dirty
set at its own backoff (the earlier of the two retries wins).

Events older than `BACKFILL_SECONDS` for releases that never had a message are skipped,
so a first start on an old stream does not flood the channel. The bot token is never
logged; Slack's answers are logged and noted only as status and error code.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import LockError, RedisError, ResponseError
from redis.lock import Lock
from slack_sdk import WebClient

from worker import chatmessages, chatretry, mattermost, queueing, slackapi
from worker.chatmessages import Message
from worker.chatretry import ChatFailure
from worker.config import Settings
from worker.machine import ReleaseState
from worker.redistext import as_text
from worker.releases import EVENTS_KEY, EVENTS_MAXLEN, Note, Release, ReleaseStore

log = logging.getLogger(__name__)

S = ReleaseState
GROUP = CONSUMER = "notify"
MESSAGE_KEY = "bluegreen:chat:slack:{release}"
DIRTY_KEY = "bluegreen:chat:slack:dirty"
LOCK_KEY = "bluegreen:chat:notify:lock"
LOCK_TIMEOUT = 30
BLOCK_MS = 500
READ_BATCH = 100
SYNC_BATCH = 20
BACKFILL_SECONDS = 3600
FIRST_BACKOFF, MAX_BACKOFF = 1.0, 300.0
ACTOR = "notifier"
RESEND = "resend"  # the field of an events entry that asks for the message to be sent again


def start(settings: Settings, redis: Redis, stop: threading.Event) -> threading.Thread:
    """The sidecar entry point (`worker.sidecars.SIDECARS`): run the notifier in a thread."""
    thread = threading.Thread(target=Notifier(settings, redis).run, args=(stop,),
                              name="bluegreen-notify", daemon=True)
    thread.start()
    return thread


def ask_resend(redis: Redis, release_id: str, *, now: float) -> None:
    """Have the notifier send `release_id`'s Slack message again even if its rendering has
    not changed, because something else (a click's `response_url` reply) rewrote it."""
    redis.xadd(EVENTS_KEY, {"release": release_id, RESEND: "slack", "at": repr(now)},
               maxlen=EVENTS_MAXLEN, approximate=True)


class Notifier:
    """Follows the events stream and keeps each release's Slack message up to date."""

    def __init__(self, settings: Settings, redis: Redis, *, client: WebClient | None = None,
                 clock: Callable[[], float] = time.time,
                 backoff: tuple[float, float] = (FIRST_BACKOFF, MAX_BACKOFF)) -> None:
        self.settings, self.redis, self.clock = settings, redis, clock
        self.backoff = backoff    # first and longest wait between tries of one message
        self.store = ReleaseStore(redis, clock=clock)
        self.client = client or slackapi.slack_client(settings)
        self.mattermost = mattermost.MattermostDelivery.from_settings(
            settings, redis, self.store, clock=clock, backoff=backoff)
        self.lock = Lock(redis, LOCK_KEY, timeout=LOCK_TIMEOUT, thread_local=False)
        self.token = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.paused_until = 0.0
        self.backlog = True       # first read our own pending entries (left by a crash)
        self.group_ready = False

    # -- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set: hold the lock, read events, sync messages; never raise."""
        if self.mattermost is None:
            log.info("Mattermost posting is off (it needs MATTERMOST_URL, MATTERMOST_BOT_TOKEN, "
                     "MATTERMOST_CHANNEL, MATTERMOST_TOKEN and BLUEGREEN_PUBLIC_URL)")
        if not self.settings.slack_bot_token:
            log.info("no SLACK_BOT_TOKEN: release messages are not posted to Slack")
            if self.mattermost is None:
                return
        else:
            log.info("posting release messages to Slack")
        errors = 0
        while not stop.is_set():
            try:
                if self.hold():
                    self.step()
                else:
                    stop.wait(1.0)
                errors = 0
            except Exception as e:  # Redis away, a bug: wait and try again, never die
                errors += 1
                log.warning("chat notifier: %s: %s; retrying", type(e).__name__, e)
                stop.wait(min(30.0, FIRST_BACKOFF * 2 ** min(errors, 5)))
        self.let_go()

    def hold(self) -> bool:
        """Take or extend the notifier lock; False while another notifier is active."""
        try:
            if self.lock.owned():
                self.lock.reacquire()
                return True
        except LockError:
            log.warning("chat notifier lost its lock; standing by")
        if self.lock.acquire(blocking=False, token=self.token):
            self.backlog = True
            return True
        return False

    def let_go(self) -> None:
        try:
            if self.lock.owned():
                self.lock.release()
        except (LockError, RedisError):
            pass  # expired or unreachable: the next notifier waits out the timeout

    def step(self) -> None:
        """One round: read new events (waiting at most until a sync is due), then sync."""
        self.consume(self._block_ms())
        self.sync_due()

    def _block_ms(self) -> int | None:
        """How long the next read may wait: None (do not block) when a sync is due now."""
        nxt = self.redis.zrange(DIRTY_KEY, 0, 0, withscores=True)
        if not nxt:
            return BLOCK_MS
        wait = max(float(nxt[0][1]), self.paused_until) - self.clock()
        return None if wait <= 0 else max(1, min(BLOCK_MS, int(wait * 1000)))

    # -- events -> dirty releases ------------------------------------------------------------------

    def consume(self, block_ms: int | None = None) -> int:
        """Read a batch of events; mark their releases (and related ones) dirty; ack."""
        self._ensure_group()
        start = "0" if self.backlog else ">"
        try:
            reply: Any = self.redis.xreadgroup(GROUP, CONSUMER, {EVENTS_KEY: start},
                                          count=READ_BATCH, block=block_ms)
        except ResponseError as e:
            if "NOGROUP" in str(e):
                self.group_ready = False  # the stream was deleted; start over
            raise
        entries: list[tuple[Any, dict[Any, Any]]] = reply[0][1] if reply else []
        if start == "0" and not entries:
            self.backlog = False
        if entries:
            self.mark(entries)
        return len(entries)

    def _ensure_group(self) -> None:
        if self.group_ready:
            return
        try:
            self.redis.xgroup_create(EVENTS_KEY, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self.group_ready = True

    def mark(self, entries: list[tuple[Any, dict[Any, Any]]]) -> None:
        now = self.clock()
        changed, resend = set(), set()
        for _, fields in entries:
            release = _field(fields, "release")
            if _field(fields, RESEND):
                resend.add(release)
            elif self._is_recent(fields, now):
                changed.add(release)
        resend = {r for r in resend - {""} if self.redis.exists(MESSAGE_KEY.format(release=r))}
        changed -= {""}
        dirty = changed | self._related(changed) | resend
        with self.redis.pipeline() as pipe:
            for release in sorted(resend):  # so that the next sync sends it, changed or not
                pipe.hdel(MESSAGE_KEY.format(release=release), "digest")
            if dirty:
                pipe.zadd(DIRTY_KEY, dict.fromkeys(sorted(dirty), now), nx=True)
            pipe.xack(EVENTS_KEY, GROUP, *[entry_id for entry_id, _ in entries])
            pipe.execute()

    def _is_recent(self, fields: dict[Any, Any], now: float) -> bool:
        """Old news is skipped unless the release already has a message (backfill guard)."""
        try:
            at = float(_field(fields, "at") or "0")
        except ValueError:
            at = 0.0
        return now - at <= BACKFILL_SECONDS or self._has_message(_field(fields, "release"))

    def _has_message(self, release_id: str) -> bool:
        """Whether the release has a Slack message or a Mattermost post."""
        return bool(self.redis.exists(MESSAGE_KEY.format(release=release_id))) or (
            self.mattermost is not None and self.mattermost.has_post(release_id))

    def _related(self, release_ids: Iterable[str]) -> set[str]:
        """Messages that show something about these releases: their app's live release
        (its Rollback/Decommission buttons) and releases queued behind them (positions)."""
        touched = self.store.get_many(sorted(release_ids))
        apps = {r.app for r in touched}
        queues = {self.settings.apps[a].queue for a in apps if a in self.settings.apps}
        found = set()
        for other in self.store.in_states([S.LIVE, S.QUEUED]):
            config = self.settings.apps.get(other.app)
            if (other.state is S.LIVE and other.app in apps) or (
                    other.state is S.QUEUED and config is not None and config.queue in queues):
                found.add(other.id)
        found -= set(release_ids)
        return {r for r in found if self._has_message(r)}

    # -- dirty releases -> Slack ------------------------------------------------------------------

    def sync_due(self) -> int:
        """Sync the releases whose time has come (none while Slack asked us to wait)."""
        if self.clock() < self.paused_until:
            return 0
        due: list[Any] = list(self.redis.zrangebyscore(DIRTY_KEY, "-inf", self.clock(),
                                                       start=0, num=SYNC_BATCH))
        for raw in due:
            self.sync(as_text(raw))
            if self.clock() < self.paused_until or not self.hold():
                break
        return len(due)

    def sync(self, release_id: str) -> None:
        """Bring one release's messages up to date (post them first if there are none)."""
        release = self.store.get(release_id)
        channel = self._channel(release) if self.settings.slack_bot_token else None
        # What a rendering needs besides the release, read once for both chats.
        inputs = (self._inputs(release) if release is not None
                  and (self.mattermost is not None or channel is not None) else {})
        retry_at = None
        if release is not None and self.mattermost is not None:
            retry_at = self.mattermost.sync(release, **inputs)
        if release is None or channel is None:
            self.redis.zrem(DIRTY_KEY, release_id)
        else:
            self._sync_slack(release, channel, chatmessages.render(release, **inputs))
        if retry_at is not None:  # the earlier of Slack's retry (if any) and Mattermost's
            self.redis.zadd(DIRTY_KEY, {release_id: retry_at}, lt=True)

    def _sync_slack(self, release: Release, channel: str, message: Message) -> None:
        record = {as_text(k): as_text(v) for k, v in
                  self.redis.hgetall(MESSAGE_KEY.format(release=release.id)).items()}
        try:
            if record.get("digest") != message.digest() or not record.get("ts"):
                record.update(self._deliver(release, channel, record, message))
        except ChatFailure as failure:
            self._failed(release, record, failure)
            return
        self._succeeded(release, record)

    def _inputs(self, release: Release) -> dict[str, Any]:
        """What a rendering of `release` needs besides the release: audit, other, position."""
        config = self.settings.apps.get(release.app)
        position = None
        if release.state is S.QUEUED and config is not None:
            position = queueing.position(self.redis, config.queue,
                                         queueing.release_job_id(release.id))
        other = self.store.occupant_for(release.app, release.color.other())
        other_audit = self.store.audit(other.id) if other is not None else []
        return {"audit": self.store.audit(release.id), "other": other,
                "other_audit": other_audit, "position": position, "now": self.clock()}

    def _channel(self, release: Release | None) -> str | None:
        if release is None:
            return None
        config = self.settings.apps.get(release.app)
        return (config.slack_channel if config else None) or self.settings.slack_channel

    def _deliver(self, release: Release, channel: str, record: dict[str, str],
                 message: Message) -> dict[str, str]:
        """Update the message in place, or post it; what to remember about it."""
        if record.get("ts") and record.get("channel"):
            try:
                slackapi.call(self.client, "chat_update", channel=record["channel"],
                              ts=record["ts"], text=message.text, blocks=message.blocks)
                return {"digest": message.digest()}
            except ChatFailure as failure:
                if failure.error != "message_not_found":
                    raise
                log.info("chat notifier: the message was deleted in Slack; posting it again")
                # Forgotten, so that if the post may have worked the retry looks for it.
                self.redis.hdel(MESSAGE_KEY.format(release=release.id), "channel", "ts")
        elif record.get("unsure"):
            found = self._posted_unsure(release, channel, float(record["unsure"]))
            if found is not None:  # adopt it (kept, even if the update fails), bring it up to date
                key = MESSAGE_KEY.format(release=release.id)

                def adopt(pipe: Pipeline) -> None:
                    pipe.hset(key, mapping={"channel": found["channel"], "ts": found["ts"]})
                    pipe.hdel(key, "unsure")
                self._write(release, adopt)
                return {**found, **self._deliver(release, channel, found, message)}
        return self._post(release, channel, message)

    def _post(self, release: Release, channel: str, message: Message) -> dict[str, str]:
        asked_at = self.clock()
        try:
            answer = slackapi.call(self.client, "chat_postMessage", channel=channel,
                                   text=message.text, blocks=message.blocks,
                                   unfurl_links=False, unfurl_media=False,
                                   metadata=slackapi.metadata(release.id, release.app))
        except ChatFailure as failure:
            if failure.may_have_worked:  # Slack may have posted it: look before posting again
                self._write(release, lambda pipe: pipe.hsetnx(
                    MESSAGE_KEY.format(release=release.id), "unsure", f"{asked_at:.6f}"))
            raise
        posted_in = str(answer.get("channel") or channel)
        slackapi.remember_channel(self.redis, channel, posted_in)
        return {"channel": posted_in, "ts": str(answer["ts"]), "digest": message.digest()}

    def _posted_unsure(self, release: Release, channel: str,
                       since: float) -> dict[str, str] | None:
        """Where Slack shows the message of a post that may have worked (sent since
        `since`); None to post it (again): Slack has none, or cannot tell us (logged)."""
        channel_id = slackapi.channel_id(self.redis, channel) or self._looked_up(release,
                                                                              channel)
        if channel_id is None:
            return None
        try:
            ts = slackapi.find(self.client, channel_id, release.id, since=since)
        except ChatFailure as failure:
            _cannot_look(release, failure, "", ": the bot token needs the channels:history "
                         "scope (groups:history in a private channel)")
            return None
        if ts is None:
            return None
        log.info("chat notifier: the unanswered or failed post of %s's message did land; "
                 "updating it", release.id)
        return {"channel": channel_id, "ts": ts}

    def _looked_up(self, release: Release, channel: str) -> str | None:
        """The id of `channel` (a name no post to which has been answered yet) from Slack's
        list of channels, kept; None when Slack does not list it or may not (logged). A
        name the list did not have is not looked for again for a while (every page of a
        large workspace's list is a call of a method limited to ~20 a minute)."""
        if slackapi.is_unlisted(self.redis, channel, now=self.clock()):
            log.info("chat notifier: cannot look for the message of %s, whose post may have "
                     "worked: Slack listed no channel %s that the bot can see a short while "
                     "ago; posting it again, which may show it twice", release.id, channel)
            return None
        try:
            found = slackapi.lookup_channel(self.client, channel)
        except ChatFailure as failure:
            _cannot_look(release, failure, f": Slack will not list the channels to find the "
                         f"id of {channel}", "; add channels:read (groups:read for a private "
                         "channel), or give the channel as an id")
            return None
        if found is None:
            slackapi.remember_unlisted(self.redis, channel, now=self.clock())
            log.warning("chat notifier: cannot look for the message of %s, whose post may "
                        "have worked: Slack lists no channel %s that the bot can see; "
                        "posting it again, which may show it twice (and not reading the "
                        "list for it again for %g s)", release.id, channel, slackapi.UNLISTED_FOR)
            return None
        slackapi.remember_channel(self.redis, channel, found)
        return found

    def _failed(self, release: Release, record: dict[str, str], failure: ChatFailure) -> None:
        attempts = int(record.get("attempts") or 0) + 1
        now = self.clock()
        delay = chatretry.next_try_in(self.backoff, attempts, failure.retry_after)
        if failure.retry_after:
            self.paused_until = max(self.paused_until, now + failure.retry_after)
        log.warning("chat message of %s not sent (attempt %d): %s", release.id, attempts,
                    failure.reason)

        def write(pipe: Pipeline) -> None:
            pipe.hset(MESSAGE_KEY.format(release=release.id), "attempts", attempts)
            if failure.permanent:
                pipe.zrem(DIRTY_KEY, release.id)
            else:
                pipe.zadd(DIRTY_KEY, {release.id: now + delay})
        note = Note(actor=ACTOR, step=chatmessages.CHAT_STEP, message=chatretry.failure_note(
            "Slack message", failure.reason, permanent=failure.permanent))
        self._write(release, write, note=note if attempts == 1 else None)

    def _succeeded(self, release: Release, record: dict[str, str]) -> None:
        attempts = int(record.get("attempts") or 0)
        key = MESSAGE_KEY.format(release=release.id)
        fields: dict[Any, Any] = {k: v for k, v in record.items()
                                  if k in ("channel", "ts", "digest")}

        def write(pipe: Pipeline) -> None:
            pipe.hset(key, mapping={**fields, "attempts": 0})
            pipe.hdel(key, "unsure")
            pipe.zrem(DIRTY_KEY, release.id)
        note = Note(actor=ACTOR, step=chatmessages.CHAT_STEP,
                    message=chatretry.caught_up_note("Slack message", attempts))
        self._write(release, write, note=note if attempts else None)

    def _write(self, release: Release, write: Callable[[Pipeline], object], *,
               note: Note | None = None) -> bool:
        """Record what a Slack call did (and `note` it in the audit trail) in one MULTI/EXEC,
        only while the release is recorded: a release pruned during the call (`bluegreen
        prune`, which deletes its chat records too) gets nothing written back, and the
        notifier lets it go. False then."""
        if self.store.write_while_recorded(release.id, write, note=note):
            return True
        log.info("chat notifier: %s was pruned while its Slack message was being sent; "
                 "nothing left to notify", release.id)
        self.redis.zrem(DIRTY_KEY, release.id)  # no longer synced: its records are gone
        return False


def _field(fields: dict[Any, Any], name: str) -> str:
    """A field of an events entry as text ("" when it is not there)."""
    return as_text(fields.get(name.encode()) or fields.get(name) or "")


def _cannot_look(release: Release, failure: ChatFailure, where: str, scope: str) -> None:
    """A failed look for the message of a post that may have worked: a transient failure
    is raised (look again at the next try); any other is logged, and the caller posts
    again. `scope` says what to grant when Slack answered `missing_scope`."""
    if failure.is_transient:
        raise failure
    log.warning("chat notifier: cannot look for the message of %s, whose post may have "
                "worked%s (%s%s); posting it again, which may show it twice", release.id,
                where, failure.reason, scope if failure.error == "missing_scope" else "")
