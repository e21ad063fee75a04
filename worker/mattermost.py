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

The REST calls are `worker.mattermostapi`'s.
`MattermostDelivery` is what the notifier (`worker.notify`) calls beside Slack for each
release it syncs: it keeps `bluegreen:chat:mattermost:<release>` (hash: post_id, digest,
attempts), sends only when the rendering changed, and on failure notes the first
failure of a streak in the audit trail (step `chat`) and returns when to try again;
the notifier puts that time in its dirty set (the earlier of Slack's and ours).

Posting is on only when `MATTERMOST_URL`, `MATTERMOST_BOT_TOKEN`, `MATTERMOST_CHANNEL`,
`MATTERMOST_TOKEN` (the signing key) and `BLUEGREEN_PUBLIC_URL` are all set.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis

from worker import chatmessages, chatretry, chatsign
from worker.chatmessages import CHAT_STEP, DOING, LABELS, Markup
from worker.commands import Action
from worker.config import Settings
from worker.machine import ReleaseState
from worker.mattermostapi import MattermostClient, Post, PostFailure
from worker.redistext import as_text
from worker.releases import AuditEntry, Release, ReleaseStore

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
    return Post(message=message, props={"attachments": [attachment]})


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
    """`value` on one line, its `@` unable to mention anyone."""
    return " ".join(value.splitlines()).replace("@", _NO_MENTION)


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
            post_id = self._deliver(record.get("post_id"), post)
        except PostFailure as failure:
            return self._failed(release, attempts + 1, failure)
        with self.redis.pipeline() as pipe:
            pipe.hset(key, mapping={"post_id": post_id, "digest": post.digest(), "attempts": 0})
            if attempts:
                self.store.note(release.id, actor=ACTOR, step=CHAT_STEP, pipe=pipe,
                                message=f"Mattermost post caught up after {attempts} failed "
                                f"attempt{'s' if attempts > 1 else ''}")
            pipe.execute()
        return None

    def _deliver(self, post_id: str | None, post: Post) -> str:
        if post_id:
            try:
                self.client.update(post_id, post)
                return post_id
            except PostFailure as failure:
                if failure.status != 404:
                    raise
                log.info("chat notifier: the post was deleted in Mattermost; posting it again")
        return self.client.create(self.to.channel, post)

    def _failed(self, release: Release, attempts: int, failure: PostFailure) -> float | None:
        delay = chatretry.next_try_in(self.backoff, attempts, failure.retry_after)
        log.warning("Mattermost post of %s not sent (attempt %d): %s", release.id, attempts,
                    failure.reason)
        with self.redis.pipeline() as pipe:
            pipe.hset(POST_KEY.format(release=release.id), "attempts", attempts)
            if attempts == 1:
                self.store.note(release.id, actor=ACTOR, step=CHAT_STEP, pipe=pipe,
                                message=chatretry.failure_note(
                                    "Mattermost post", failure.reason,
                                    permanent=failure.permanent))
            pipe.execute()
        return None if failure.permanent else self.clock() + delay
