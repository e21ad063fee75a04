"""A chat request to act on a release: who may, what happens to a double click, what to answer.

Both chat platforms end here once their request is verified and parsed:
`authorise(settings, app, who)` applies the per-app allow-lists, and `submit(...)`
queues the command through `Engine.submit_command` (never runs it) and says what to
answer. Rules (also in docs/architecture.md):

- `slack_users` non-empty: only those Slack user ids may act on the app;
- `slack_channels` non-empty: commands are taken only in those channels (ids or names);
  empty: only in the app's own channel (`slack_channel`, else `SLACK_CHANNEL`). With no
  channel configured at all, chat commands for the app are refused: a valid signature
  proves Slack sent the request, not that its sender may deploy.
- Mattermost has no user allow-list in the config; its buttons are signed for the
  channel they were posted in (`worker.chatsign`), and act only there.

A repeated click — while the same command (release and action) is still being
queued, or waits in the queue, or runs — is acknowledged and changes nothing; once
that command has run, a click goes to the engine again, which says why it is stale. A
command that names no release (`/deploy promote APP`) acts on the one the app's state
implies (`Engine.resolve`, as the engine picks it), resolved before the
repeat guard: its repeat, or a click for that release, is the same command. Refusals and
the engine's errors (stale, unknown release, ...) come back as text for an ephemeral
reply, the same messages the HTTP API renders. Every queued command is audited by the
engine with the actor `<platform>:<user id> (<user name>)`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from redis.exceptions import RedisError

from webhook.context import Web
from worker import metrics
from worker.api import Action, Color, EngineError, Queued, Unavailable
from worker.config import AppConfig, Settings

CLICK_KEY = "bluegreen:chatops:click:{app}:{target}:{action}"
CLICK_TTL = 15
CLAIMING = "claiming"    # the claim's value until the command is queued (then: its job id)


@dataclass(frozen=True)
class Chatter:
    """Who sent a chat request, and from where."""

    platform: str           # "slack" | "mattermost"
    user_id: str
    user_name: str = ""
    channel_id: str = ""
    channel_name: str = ""

    @property
    def actor(self) -> str:
        name = f" ({self.user_name})" if self.user_name and self.user_name != self.user_id else ""
        return f"{self.platform}:{self.user_id}{name}"


@dataclass(frozen=True)
class Command:
    """What the person asked for; `release` None lets the engine pick the one the state implies."""

    app: str
    action: Action
    release: str | None = None
    color: Color | None = None


@dataclass(frozen=True)
class Outcome:
    """What to tell the person; `queued` when a job was queued by this request."""

    text: str
    queued: Queued | None = None
    result: str = "queued"  # for /metrics: queued, already_requested, refused, or an error code


class Refused(Exception):
    """The sender may not act on this app from here; the message says why."""


def authorise(settings: Settings, app: AppConfig, who: Chatter) -> None:
    """Raise `Refused` unless `who` may act on `app` (see the module docstring)."""
    if who.platform != "slack":
        return
    if app.slack_users and who.user_id not in app.slack_users:
        raise Refused(f"you are not allowed to release {app.name}: your Slack user id "
                      f"{who.user_id} is not in its slack_users list")
    if app.slack_channels:
        if not _in_channel(app.slack_channels, who):
            raise Refused(f"{app.name} takes chat commands only in its slack_channels, "
                          "not in this channel")
        return
    home = app.slack_channel or settings.slack_channel
    if home is None:
        raise Refused(f"chat commands for {app.name} are off: configure its slack_channel "
                      "(or SLACK_CHANNEL) or a slack_channels allow-list")
    if not _in_channel((home,), who):
        raise Refused(f"{app.name} takes chat commands only in {home}")


def submit(web: Web, command: Command, who: Chatter) -> Outcome:
    """Queue the command once; a repeat or a stale command is an answer, not an error."""
    outcome = _submit(web, command, who)
    metrics.record_chat_action(web.redis, outcome.result)
    return outcome


def _submit(web: Web, command: Command, who: Chatter) -> Outcome:
    app = web.settings.apps.get(command.app)
    if app is None:
        return Outcome(f"Nothing changed: no app named {command.app!r} is configured.",
                       result="unknown_app")
    try:
        authorise(web.settings, app, who)
    except Refused as e:
        return Outcome(f"Not allowed: {e}. Nothing changed.", result="refused")
    try:
        return _submit_once(web, _named(web, app, command), who)
    except EngineError as e:
        return Outcome(f"Nothing changed: {e.message}", result=e.code)
    except RedisError:
        return Outcome("Nothing changed: Redis is unavailable; try again in a moment.",
                       result="redis_unavailable")


def _named(web: Web, app: AppConfig, command: Command) -> Command:
    """`command` naming the release it acts on: without one, the release the app's state
    implies (as the engine would pick it), so that `/deploy promote APP` meets the same
    repeat guard as a click on that release's button."""
    if command.release is not None:
        return command
    target = web.engine.resolve(app.name, command.action, release=None, color=command.color)
    return replace(command, release=target.id)


def _submit_once(web: Web, command: Command, who: Chatter) -> Outcome:
    """Claim the command for `CLICK_TTL` s (a concurrent double click finds the claim), skip it
    while the same command waits in the queue, else queue it."""
    key = CLICK_KEY.format(app=command.app, target=command.release,
                           action=command.action.value)
    try:
        claimed = web.redis.set(key, CLAIMING, nx=True, ex=CLICK_TTL)
        if not claimed and _text(web.redis.get(key)) == CLAIMING:
            return _already(command, "was asked for a moment ago")
    except RedisError as e:
        raise Unavailable(f"Redis is unavailable, nothing was changed: {e}") from e
    try:
        pending = _pending(web, command)
        if pending:
            if claimed:
                web.redis.delete(key)
            return _already(command, pending)
        queued = web.engine.submit_command(command.app, command.action,
                                           release=command.release, color=command.color,
                                           actor=who.actor)
    except Exception:
        web.redis.delete(key)  # a refused request must not hold up a corrected one
        raise
    web.redis.set(key, queued.job_id, ex=CLICK_TTL)
    where = f"position {queued.position} in the queue" if queued.position else "running now"
    return Outcome(f":hourglass: {command.action.value} of {queued.release.tag} "
                   f"({queued.release.id}) is queued, {where}; the release message will show "
                   "the outcome.", queued)


def _already(command: Command, how: str) -> Outcome:
    return Outcome(f"Already requested: {command.action.value} of "
                   f"{command.release or command.app} {how}; this request changed nothing.",
                   result="already_requested")


def _pending(web: Web, command: Command) -> str | None:
    """How the same command is already on its way (queued or running), if it is."""
    for queue in web.engine.queue_status():
        running = queue.get("running") or {}
        if _same(running, command):
            return "is running now"
        for job in queue.get("waiting") or []:
            if _same(job, command):
                return f"is already queued (position {job.get('position')})"
    return None


def _same(job: dict[str, object], command: Command) -> bool:
    return job.get("release") == command.release and job.get("action") == command.action.value


def _text(value: object) -> str | None:
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)


def _in_channel(allowed: tuple[str, ...], who: Chatter) -> bool:
    names = {who.channel_id, who.channel_name, who.channel_name.lstrip("#")} - {""}
    return any(entry.strip().lstrip("#") in names for entry in allowed)
