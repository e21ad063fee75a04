"""Mattermost release messages: one post per release, created once and updated in place.

`render()` is pure: it turns a release (and what `worker.chatmessages.render` is
given) into a Mattermost post — `message` (one line) and `props.attachments[0]` with
the status, pending command and history text, a colour, and `actions`: the same
buttons as the Slack message (`chatmessages.buttons`, so the same stale-command guard
and none while a command is pending). Mattermost does not sign the requests its
buttons send, so each button's `integration.context` is `worker.chatsign.sign(...)`
over app, action, release, colour and the channel it is posted in, which
`POST /chatops/mattermost/actions` (`webhook.chatops.mattermost`) verifies.

The text is written through `chatmessages`' shared lines with Mattermost's own
`Markup` (`MARKDOWN`; `PLAIN` for the plain-text fallback), so every value from a
forge or a person (tag, commit message, pusher, error, audit message) is escaped as
it is put in: it shows literally and makes no link, mention, image or formatting.

The REST calls (create, update, find) are `worker.mattermostapi`'s.
`MattermostDelivery` is what the notifier (`worker.notify`) calls beside Slack for each
release it syncs: it keeps `bluegreen:chat:mattermost:<release>` (hash: post_id,
server_props — JSON of the props the server put on the post, sent back with each update
so that they stay, `worker.mattermostapi` says why —, digest, attempts; `pending` and
`unsure` while a create is not settled), sends only when the
rendering changed, and on failure notes the first failure of a streak in the audit
trail (step `chat`) and returns when to try again; the notifier puts that time in its
dirty set (the earlier of Slack's and ours).

A create may work without us hearing so (a timeout, a dropped connection, a 5xx from
a proxy in front of the server), and creating again would leave two posts, the first
frozen with whatever buttons it had. Two things keep it to one:
- every create of a release's post carries the same `pending_post_id` until one is
  answered (`<release id>:<millis>`; the server checks no form, it is only a key, so
  it must be unique server-wide). The server remembers a pending_post_id for 30 s
  after creating its post (MM-10856) and answers a create that repeats it with the
  first post (201), or with a 500 while that first create is still being saved;
- a create that may have worked leaves `unsure` (when it was sent), and the next try
  first looks for the post by its `props.bluegreen_release` among the channel's posts
  since a little before then, and adopts it (then updates it: it may show the release
  as it was). This also covers what the server's memory does not: a retry after its
  30 s, or one that reaches another app server of a cluster (each keeps its own).
When the lookup is refused (the bot cannot read the channel), it creates again with
the same pending_post_id, which is safe within those 30 s, and logs a warning.

Posting is on only when `MATTERMOST_URL`, `MATTERMOST_BOT_TOKEN`, `MATTERMOST_CHANNEL`,
`MATTERMOST_TOKEN` (the signing key) and `BLUEGREEN_PUBLIC_URL` are all set.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline

from worker import chatmessages, chatretry, chatsign
from worker.chatmessages import CHAT_STEP, DOING, LABELS, Markup
from worker.chatretry import LOOKBACK, ChatFailure
from worker.commands import Action
from worker.config import Settings
from worker.machine import ReleaseState
from worker.mattermostapi import RELEASE_PROP, MattermostClient, Post, Posted
from worker.redistext import as_text
from worker.releases import AuditEntry, Note, Release, ReleaseStore

log = logging.getLogger(__name__)

S = ReleaseState
POST_KEY = "bluegreen:chat:mattermost:{release}"
ACTIONS_PATH = "/chatops/mattermost/actions"
ACTOR = "notifier"
COLORS = {S.AWAITING_PROMOTION: "#ECB22E", S.LIVE: "#2EB67D", S.REJECTED: "#E01E5A",
          S.FAILED: "#E01E5A"}
IN_PROGRESS_COLOR, ENDED_COLOR = "#1D9BD1", "#8D8D8D"
# Every ASCII punctuation character may be backslash-escaped in (CommonMark) Markdown.
_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")
_BACKTICKS = re.compile(r"`+")
# Mattermost looks for mentions in text with its Markdown escapes undone, so a backslash
# is not trusted to stop `@channel`; a zero-width joiner after the `@` leaves no name.
_NO_MENTION = "@\u200d"


@dataclass(frozen=True)
class Target:
    """Where the buttons send their clicks and which channel they are signed for."""

    secret: str
    actions_url: str
    channel: str


def target(settings: Settings) -> Target | None:
    """The buttons' target, or None when Mattermost posting is not fully configured."""
    s = settings
    if not (s.mattermost_url and s.mattermost_bot_token and s.mattermost_channel
            and s.mattermost_secret and s.public_url):
        return None
    return Target(secret=s.mattermost_secret, channel=s.mattermost_channel,
                  actions_url=s.public_url.rstrip("/") + ACTIONS_PATH)


# -- rendering (pure) ------------------------------------------------------------------------------

def render(release: Release, audit: Sequence[AuditEntry], to: Target, *,
           other: Release | None = None, other_audit: Sequence[AuditEntry] = (),
           position: int | None = None, now: float | None = None) -> Post:
    """The post of `release`; arguments as `worker.chatmessages.render`, plus the target."""
    pending = chatmessages.pending_for(release, audit, other=other, other_audit=other_audit,
                                       now=now)
    emoji, label = LABELS[release.state]
    md = MARKDOWN
    lines = [f"{emoji} {md.bold(label)} — release {md.code(release.id)}, "
             f"commit {md.code(release.commit[:12])}",
             chatmessages.status_line(release, audit, position=position, markup=md)]
    if pending is not None:
        lines.append(f":hourglass: {md.bold(DOING[Action(pending.step)] + '…')} requested by "
                     f"{chatmessages.actor_name(pending.actor, md)}; the outcome shows here")
    lines += chatmessages.history_lines(audit, markup=md)
    shown = [] if pending is not None else chatmessages.buttons(release, other)
    attachment: dict[str, Any] = {
        "fallback": chatmessages.fallback_text(release, pending, markup=PLAIN),
        "color": _color(release.state),
        "text": "\n".join(lines),
        "actions": [_action(button, to) for button in shown],
    }
    message = (f"{md.bold(md.text(release.app))} {md.code(release.tag)} → "
               f"{md.bold(release.color.value)}: {label.lower()}")
    return Post(message=message, props={"attachments": [attachment], RELEASE_PROP: release.id})


def _action(button: chatmessages.Button, to: Target) -> dict[str, Any]:
    value = button.value
    context = chatsign.sign(to.secret, app=value.app, action=value.action.value,
                            release=value.release,
                            color=value.color.value if value.color is not None else None,
                            channel=to.channel)
    action: dict[str, Any] = {"id": re.sub(r"[^A-Za-z0-9]", "", value.action.value),
                              "name": button.text, "type": "button",
                              "integration": {"url": to.actions_url, "context": context}}
    if button.style:
        action["style"] = button.style
    return action


def _color(state: ReleaseState) -> str:
    return COLORS.get(state, ENDED_COLOR if state.is_terminal or state is S.STANDBY
                      else IN_PROGRESS_COLOR)


class MarkdownMarkup:
    """Mattermost's Markdown. A value is put on one line (a line break could start a
    heading, quote, list or table row), and its `@` cannot mention anyone; in text each
    punctuation character is backslash-escaped, and a code span's fence is longer than
    any run of backticks in it. Slack users show as `slack:U1`, dates as UTC."""

    def text(self, value: str) -> str:
        return _PUNCTUATION.sub(lambda m: "\\" + m.group(), _inert(value))

    def code(self, value: str) -> str:
        value = _inert(value)
        fence = "`" * (1 + max((len(run) for run in _BACKTICKS.findall(value)), default=0))
        # A space each side keeps a backtick at either end off the fence; one is stripped.
        pad = " " if not value or value[0] in "` " or value[-1] in "` " else ""
        return f"{fence}{pad}{value}{pad}{fence}"

    def bold(self, markup: str) -> str:
        return f"**{markup}**"

    def user(self, user_id: str) -> str:
        return self.code(f"slack:{user_id}")

    def date(self, at: float) -> str:
        return chatmessages.utc_text(at)


class PlainMarkup:
    """Plain text (the attachment's fallback, shown in notifications): values as they
    are on one line, `@` unable to mention, no formatting."""

    def text(self, value: str) -> str:
        return _inert(value)

    def code(self, value: str) -> str:
        return self.text(value)

    def bold(self, markup: str) -> str:
        return markup

    def user(self, user_id: str) -> str:
        return self.text(f"slack:{user_id}")

    def date(self, at: float) -> str:
        return chatmessages.utc_text(at)


MARKDOWN: Markup = MarkdownMarkup()
PLAIN: Markup = PlainMarkup()


def _inert(value: str) -> str:
    """`value` on one line, its `@` unable to mention anyone, its bidirectional controls
    shown as marks (`chatmessages.visible_bidi`)."""
    return chatmessages.visible_bidi(" ".join(value.splitlines())).replace("@", _NO_MENTION)


# -- delivery (called by the notifier) --------------------------------------------------------

class MattermostDelivery:
    """Keeps each release's Mattermost post up to date; see the module docstring."""

    def __init__(self, to: Target, client: MattermostClient, redis: Redis, store: ReleaseStore,
                 *, clock: Callable[[], float], backoff: tuple[float, float]) -> None:
        self.to, self.client, self.redis, self.store = to, client, redis, store
        self.clock, self.backoff = clock, backoff

    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis, store: ReleaseStore, *,
                      clock: Callable[[], float], backoff: tuple[float, float]
                      ) -> MattermostDelivery | None:
        to = target(settings)
        if to is None or settings.mattermost_url is None or not settings.mattermost_bot_token:
            return None
        client = MattermostClient(settings.mattermost_url, settings.mattermost_bot_token)
        return cls(to, client, redis, store, clock=clock, backoff=backoff)

    def has_post(self, release_id: str) -> bool:
        return bool(self.redis.exists(POST_KEY.format(release=release_id)))

    def sync(self, release: Release, audit: Sequence[AuditEntry], **kwargs: Any) -> float | None:
        """Create or update the post if its rendering changed; None, or when to retry."""
        key = POST_KEY.format(release=release.id)
        record = {as_text(k): as_text(v) for k, v in self.redis.hgetall(key).items()}
        post = render(release, audit, self.to, **kwargs)
        attempts = int(record.get("attempts") or 0)
        if record.get("digest") == post.digest() and record.get("post_id"):
            return None
        try:
            posted = self._deliver(release, record, post)
        except ChatFailure as failure:
            return self._failed(release, attempts + 1, failure)

        def write(pipe: Pipeline) -> None:
            pipe.hset(key, mapping={"post_id": posted.id, "server_props": _stored(posted),
                                    "digest": post.digest(), "attempts": 0})
            pipe.hdel(key, "pending", "unsure")
        note = Note(actor=ACTOR, step=CHAT_STEP,
                    message=chatretry.caught_up_note("Mattermost post", attempts))
        self._write(release, write, note=note if attempts else None)
        return None

    def _write(self, release: Release, write: Callable[[Pipeline], object], *,
               note: Note | None = None) -> bool:
        """Record what a Mattermost call did (and `note` it in the audit trail) in one
        MULTI/EXEC, only while the release is recorded: a release pruned during the call
        (`bluegreen prune`, which deletes its post record too) gets nothing written back.
        False then, and the caller lets the release go: nothing is left to notify."""
        if self.store.write_while_recorded(release.id, write, note=note):
            return True
        log.info("chat notifier: %s was pruned while its Mattermost post was being sent; "
                 "nothing left to notify", release.id)
        return False

    def _deliver(self, release: Release, record: dict[str, str], post: Post) -> Posted:
        """Update the post in place, or create it."""
        post_id = record.get("post_id")
        if post_id:
            posted = Posted(post_id, _server_props(record.get("server_props")))
            try:
                self.client.update(post_id, post, server_props=posted.server_props)
                return posted
            except ChatFailure as failure:
                # The server answers an update of a deleted post 403, as for a post the bot
                # may not edit; only a read of it tells them apart (404: gone).
                if failure.status not in (403, 404) or self.client.exists(post_id):
                    raise
            log.info("chat notifier: the post was deleted in Mattermost; posting it again")
            self.redis.hdel(POST_KEY.format(release=release.id), "post_id", "server_props")
        elif record.get("unsure"):
            return self._settle(release, record, post)
        return self._create(release, record.get("pending"), post)

    def _create(self, release: Release, pending: str | None, post: Post) -> Posted:
        """Create the post under `pending` (a new pending_post_id if None)."""
        key = POST_KEY.format(release=release.id)
        if not pending:  # kept until a create is answered, so every retry repeats it
            pending = f"{release.id}:{int(self.clock() * 1000)}"
            self._write(release, lambda pipe: pipe.hset(key, "pending", pending))
        asked_at = self.clock()
        try:
            return self.client.create(self.to.channel, post, pending_post_id=pending)
        except ChatFailure as failure:
            if failure.may_have_worked:  # the post may be there: look before creating again
                self._write(release, lambda pipe: pipe.hsetnx(key, "unsure", f"{asked_at:.6f}"))
            raise

    def _settle(self, release: Release, record: dict[str, str], post: Post) -> Posted:
        """The post of a create that may have worked, found or created (the server gives
        the first one back within its 30 s), and brought up to date."""
        posted = self._find(release, float(record["unsure"]))
        if posted is None:
            posted = self._create(release, record.get("pending"), post)
        key = POST_KEY.format(release=release.id)

        def adopt(pipe: Pipeline) -> None:  # adopted, even if the update below fails
            pipe.hset(key, mapping={"post_id": posted.id, "server_props": _stored(posted)})
            pipe.hdel(key, "pending", "unsure")
        self._write(release, adopt)
        # It may show the release as it was at first.
        self.client.update(posted.id, post, server_props=posted.server_props)
        return posted

    def _find(self, release: Release, since: float) -> Posted | None:
        """The post about `release` made since a little before `since`; None if there is
        none, or the server will not say (logged): creating again is then up to the
        server's memory of the pending_post_id."""
        try:
            found = self.client.find(self.to.channel, release.id, since=since - LOOKBACK)
        except ChatFailure as failure:
            if failure.is_transient:
                raise  # we still cannot tell: look again at the next try
            log.warning("chat notifier: cannot look for the Mattermost post of %s, whose "
                        "create may have worked (%s); creating it again, which may show it "
                        "twice if that was over 30 s ago", release.id, failure.reason)
            return None
        if found is not None:
            log.info("chat notifier: the unanswered or failed create of %s's Mattermost post "
                     "did land; updating it", release.id)
        return found

    def _failed(self, release: Release, attempts: int, failure: ChatFailure) -> float | None:
        delay = chatretry.next_try_in(self.backoff, attempts, failure.retry_after)
        log.warning("Mattermost post of %s not sent (attempt %d): %s", release.id, attempts,
                    failure.reason)
        note = Note(actor=ACTOR, step=CHAT_STEP, message=chatretry.failure_note(
            "Mattermost post", failure.reason, permanent=failure.permanent))
        recorded = self._write(release, lambda pipe: pipe.hset(
            POST_KEY.format(release=release.id), "attempts", attempts),
            note=note if attempts == 1 else None)
        return None if failure.permanent or not recorded else self.clock() + delay


def _stored(posted: Posted) -> str:
    """The server's props of a post, as its record keeps them."""
    return json.dumps(posted.server_props, sort_keys=True)


def _server_props(stored: str | None) -> dict[str, Any]:
    """The server's props of a record's post (none for a record from before they were
    kept: its updates have dropped them already)."""
    try:
        props = json.loads(stored) if stored else {}
    except ValueError:
        return {}
    return props if isinstance(props, dict) else {}
