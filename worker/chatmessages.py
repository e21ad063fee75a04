"""What a release's chat message says: Block Kit blocks, fallback text and button values. Pure.

`render(release, audit, ...)` turns a release record and its audit trail into the one
Slack message that follows the release (`worker.notify` posts and updates it): a
header (app, tag, colour, state), a status line saying what is happening or how it
ended (which step failed and why), a pending command ("⏳ promoting…"), the recent
history (who did what, when) and the buttons that apply now:

    queued              Abort
    awaiting_promotion  Promote <colour>, Abort
    live                Rollback (when a standby exists), Decommission <other colour>
                        (when the other colour holds an idle, decommissionable release)
    anything else       none; and none at all while a command is pending

A button's value (`ButtonValue`, JSON) names the app, action and release it was made
for, so a click on an old message is refused as stale (SPEC §5.6). Audit entries of
step `chat` (the notifier's own notes) are left out of the message.

The text shared with other chats (`status_line`, `history_lines`, `fallback_text`,
`actor_name`) is written through a `Markup`: each value (a tag, an error, a name) is
escaped for the target dialect where it is put in, and our own formatting (bold, code
spans, people, dates) is written in that dialect. `SLACK` writes Slack's mrkdwn; the
Mattermost dialects live in `worker.mattermost`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from worker.colors import Color
from worker.commands import Action
from worker.machine import ReleaseState
from worker.releases import AuditEntry, Release

S = ReleaseState
ACTION_PREFIX = "bluegreen:"      # action_id of every button: "bluegreen:promote"
CHAT_STEP = "chat"                # audit step of the notifier's own notes
PENDING_MAX_AGE = 3600.0          # a request older than this is no longer shown as pending
HISTORY_LINES = 6
MAX_TEXT = 1500

LABELS: dict[ReleaseState, tuple[str, str]] = {
    S.QUEUED: (":hourglass_flowing_sand:", "Queued"),
    S.CHECKING: (":mag:", "Sanity check"),
    S.DEPLOYING: (":rocket:", "Deploying"),
    S.TESTING: (":test_tube:", "Smoke testing"),
    S.AWAITING_PROMOTION: (":raised_hand:", "Awaiting promotion"),
    S.LIVE: (":large_green_circle:", "Live"),
    S.STANDBY: (":zzz:", "Standby"),
    S.REJECTED: (":no_entry:", "Rejected"),
    S.FAILED: (":x:", "Failed"),
    S.SUPERSEDED: (":fast_forward:", "Superseded"),
    S.ABORTED: (":octagonal_sign:", "Aborted"),
    S.ROLLED_BACK: (":leftwards_arrow_with_hook:", "Rolled back"),
    S.DECOMMISSIONED: (":wastebasket:", "Decommissioned"),
}
DOING = {Action.PROMOTE: "promoting", Action.ROLLBACK: "rolling back",
         Action.DECOMMISSION: "decommissioning", Action.ABORT: "aborting"}


class Markup(Protocol):
    """How one chat writes a message: values escaped where they are put in, our formatting."""

    def text(self, value: str) -> str:
        """A value (tag, error, name) as text that formats, links and notifies nothing."""

    def code(self, value: str) -> str:
        """A value in a code span that it cannot close."""

    def bold(self, markup: str) -> str:
        """Text already written in this markup, in bold."""

    def user(self, user_id: str) -> str:
        """The Slack user of a `slack:` actor."""

    def date(self, at: float) -> str:
        """A point in time."""


class SlackMarkup:
    """Slack's mrkdwn: `&`, `<` and `>` escaped in values, so a value cannot make a link."""

    def text(self, value: str) -> str:
        return _esc(value)

    def code(self, value: str) -> str:
        return f"`{_esc(value)}`"

    def bold(self, markup: str) -> str:
        return f"*{markup}*"

    def user(self, user_id: str) -> str:
        return f"<@{user_id}>"

    def date(self, at: float) -> str:
        return _when(at)


SLACK: Markup = SlackMarkup()


@dataclass(frozen=True)
class ButtonValue:
    """What a button was made for: the stale-command guard travels in the button itself."""

    app: str
    action: Action
    release: str
    color: Color | None = None

    def to_json(self) -> str:
        data = {"app": self.app, "action": self.action.value, "release": self.release}
        if self.color is not None:
            data["color"] = self.color.value
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def parse(cls, raw: object) -> ButtonValue:
        """A button value from a click; ValueError (readable) when it is not one of ours."""
        try:  # orjson refuses an escaped lone surrogate: not text a release could name
            data = orjson.loads(raw) if isinstance(raw, str) else None
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or not all(
                isinstance(data.get(k), str) and data[k] for k in ("app", "action", "release")):
            raise ValueError("this button was not made by bluegreen (no app/action/release)")
        if data["action"] not in {a.value for a in Action}:
            raise ValueError(f"unknown action {str(data['action'])[:40]!r}")
        color = data.get("color")
        return cls(app=data["app"], action=Action(data["action"]), release=data["release"],
                   color=None if color is None else Color.parse(str(color)))


@dataclass(frozen=True)
class Button:
    text: str
    value: ButtonValue
    style: str | None = None          # "primary" | "danger"
    confirm: str | None = None        # a question asked before the click counts

    def block(self) -> dict[str, Any]:
        element: dict[str, Any] = {
            "type": "button", "action_id": ACTION_PREFIX + self.value.action.value,
            "text": {"type": "plain_text", "text": self.text, "emoji": True},
            "value": self.value.to_json()}
        if self.style:
            element["style"] = self.style
        if self.confirm:
            element["confirm"] = {
                "title": {"type": "plain_text", "text": "Are you sure?"},
                "text": {"type": "mrkdwn", "text": self.confirm},
                "confirm": {"type": "plain_text", "text": self.text},
                "deny": {"type": "plain_text", "text": "Cancel"}}
        return element


@dataclass(frozen=True)
class Message:
    """A chat message: fallback `text` (notifications, old clients) and Block Kit `blocks`."""

    text: str
    blocks: list[dict[str, Any]]

    def digest(self) -> str:
        """Changes exactly when what people would see changes."""
        body = json.dumps([self.text, self.blocks], sort_keys=True).encode()
        return hashlib.sha256(body).hexdigest()[:32]

    def buttons(self) -> list[dict[str, Any]]:
        return [element for block in self.blocks if block["type"] == "actions"
                for element in block["elements"]]


def render(release: Release, audit: Sequence[AuditEntry], *, other: Release | None = None,
           other_audit: Sequence[AuditEntry] = (), position: int | None = None,
           now: float | None = None) -> Message:
    """The message of `release`; `other` is the release last deployed into its other
    colour (`ReleaseStore.occupant_for`).

    A decommission of `other` requested from this message (its button is here) shows
    as pending here too, so pass `other`'s audit trail as `other_audit`.
    """
    pending = pending_for(release, audit, other=other, other_audit=other_audit, now=now)
    blocks: list[dict[str, Any]] = [_header(release), _fields(release)]
    blocks.append(_context(status_line(release, audit, position=position)))
    if pending is not None:
        blocks.append(_section(_pending_text(pending)))
    history = history_lines(audit)
    if history:
        blocks.append(_context("\n".join(history)))
    shown = [] if pending is not None else buttons(release, other)
    if shown:
        blocks.append({"type": "actions", "block_id": ACTION_PREFIX + release.id,
                       "elements": [button.block() for button in shown]})
    return Message(text=fallback_text(release, pending), blocks=blocks)


def buttons(release: Release, other: Release | None) -> list[Button]:
    """The buttons that apply to `release` now (see the module docstring)."""
    def value(action: Action, target: Release = release,
              color: Color | None = None) -> ButtonValue:
        return ButtonValue(app=release.app, action=action, release=target.id, color=color)

    abort = Button("Abort", value(Action.ABORT), "danger",
                   f"Abort {_esc(release.tag)}? Its test route and Deployment are removed.")
    if release.state is S.QUEUED:
        return [abort]
    if release.state is S.AWAITING_PROMOTION:
        return [Button(f"Promote {release.color}", value(Action.PROMOTE), "primary"), abort]
    if release.state is not S.LIVE or other is None or other.color is release.color:
        return []
    shown = []
    if other.state is S.STANDBY:
        shown.append(Button("Rollback", value(Action.ROLLBACK), "danger",
                            f"Route default traffic back to {other.color} "
                            f"({_esc(other.tag)})?"))
    if other.state in (S.STANDBY, S.ROLLED_BACK):
        shown.append(Button(f"Decommission {other.color}",
                            value(Action.DECOMMISSION, other, other.color), None,
                            f"Delete Deployment {release.app}-{other.color} "
                            f"({_esc(other.tag)})? Rollback to it is no longer possible."))
    return shown


def pending_request(audit: Sequence[AuditEntry], *, now: float | None = None
                    ) -> AuditEntry | None:
    """The latest command request ("promote requested by X") that nothing has answered yet."""
    actions = {a.value for a in Action}
    for index in range(len(audit) - 1, -1, -1):
        entry = audit[index]
        if entry.step in actions and is_request(entry):
            later = audit[index + 1:]
            answered = any(e.step == entry.step or _is_terminal(e.state_to) for e in later)
            too_old = now is not None and now - entry.at > PENDING_MAX_AGE
            return None if answered or too_old else entry
    return None


def is_request(entry: AuditEntry) -> bool:
    return entry.state_to is None and " requested by " in entry.message


def status_line(release: Release, audit: Sequence[AuditEntry], *,
                position: int | None = None, markup: Markup = SLACK) -> str:
    """What is happening now, or how the release ended and who did it when."""
    m, state, color = markup, release.state, release.color
    last = _last_transition(audit, state)
    if state is S.QUEUED:
        return "Waiting for the worker" + (f": position {position} in the queue"
                                           if position else "")
    if state in (S.CHECKING, S.DEPLOYING, S.TESTING):
        step = f" (step {m.code(release.step)})" if release.step else ""
        return f"{LABELS[state][1]} {color}{step}…"
    if state is S.AWAITING_PROMOTION:
        return (f"Smoke tests passed. Requests with `Cookie: test=true` reach {color}; "
                "everyone else stays on the live colour until someone promotes it.")
    if state in (S.REJECTED, S.FAILED):
        step = last.step if last is not None else (release.step or "a step")
        why = release.error or (last.message if last is not None else "see the audit trail")
        return f"{m.bold(m.text(step))} failed: {m.text(_clip(why))}" + _by(last, m)
    if state is S.LIVE:
        return f"Default traffic goes to {color}" + _by(last, m)
    return m.text(_clip(last.message if last is not None else state.value)) + _by(last, m)


def history_lines(audit: Sequence[AuditEntry], *, markup: Markup = SLACK) -> list[str]:
    """The latest entries (state changes, requests, refusals): when, who, what."""
    m, shown = markup, [e for e in audit if e.step != CHAT_STEP]
    return [f"{m.date(e.at)} {actor_name(e.actor, m)}: {m.text(_clip(e.message, 300))}"
            for e in shown[-HISTORY_LINES:]]


def pending_for(release: Release, audit: Sequence[AuditEntry], *, other: Release | None,
                other_audit: Sequence[AuditEntry], now: float | None) -> AuditEntry | None:
    """The request a message of `release` shows as pending (and so offers no buttons):
    one of its own, or, while it is live, a decommission of `other` asked from it."""
    pending = pending_request(audit, now=now)
    if pending is None and other is not None and release.state is S.LIVE:
        requested = pending_request(other_audit, now=now)
        if requested is not None and requested.step == Action.DECOMMISSION:
            pending = requested
    return pending


def fallback_text(release: Release, pending: AuditEntry | None, *,
                  markup: Markup = SLACK) -> str:
    """One line for notifications and clients without blocks (Slack formats it too)."""
    m, label = markup, LABELS[release.state][1].lower()
    text = f"{m.text(release.app)} {m.text(release.tag)} → {release.color}: {label}"
    if pending is not None:
        text += f" ({DOING[Action(pending.step)]}…)"
    elif release.state in (S.REJECTED, S.FAILED) and release.error:
        text += f": {m.text(_clip(release.error, 300))}"
    return text


def actor_name(actor: str, markup: Markup = SLACK) -> str:
    """`slack:U123 (alice)` → `<@U123>` (Slack shows the person); others in a code span."""
    if actor.startswith("slack:"):
        user = actor.removeprefix("slack:").split(" ", 1)[0]
        if user:
            return markup.user(user)
    return markup.code(actor)


def _header(release: Release) -> dict[str, Any]:
    emoji, label = LABELS[release.state]
    return _section(f"*{_esc(release.app)}* `{_esc(release.tag)}` → *{release.color}*   "
                    f"{emoji} *{label}*")


def _fields(release: Release) -> dict[str, Any]:
    return {"type": "section", "fields": [
        {"type": "mrkdwn", "text": f"*Release*\n`{_esc(release.id)}`"},
        {"type": "mrkdwn", "text": f"*Commit*\n`{_esc(release.commit[:12])}`"},
        {"type": "mrkdwn", "text": f"*Version*\n{_esc(release.version)}"},
        {"type": "mrkdwn",
         "text": f"*Pushed*\n{actor_name(release.actor)} {_when(release.created_at)}"},
    ]}


def _pending_text(entry: AuditEntry) -> str:
    return f":hourglass: *{DOING[Action(entry.step)]}…* requested by {actor_name(entry.actor)} " \
           f"{_when(entry.at)}; the outcome shows here"


def _last_transition(audit: Sequence[AuditEntry], state: ReleaseState) -> AuditEntry | None:
    for entry in reversed(audit):
        if entry.state_to == state.value:
            return entry
    return None


def _is_terminal(state: str | None) -> bool:
    return state is not None and state in {s.value for s in S} and S(state).is_terminal


def _by(entry: AuditEntry | None, markup: Markup) -> str:
    if entry is None:
        return ""
    return f" — {actor_name(entry.actor, markup)} {markup.date(entry.at)}"


def utc_text(at: float) -> str:
    """A point in time as text, in UTC (Slack's fallback for a date; Mattermost's date)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _when(at: float) -> str:
    """A time each reader sees in their own timezone (UTC in the fallback)."""
    return f"<!date^{int(at)}^{{date_short_pretty}} {{time_secs}}|{utc_text(at)}>"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _esc(text: str) -> str:
    """Slack's three control characters in mrkdwn (so a tag or error cannot make a link),
    and bidirectional controls shown as marks (`visible_bidi`)."""
    return visible_bidi(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible_bidi(value: str) -> str:
    """`value` with its bidirectional controls shown as marks (`<U+202E>`): obeyed, they
    make a tag or message read in another order than it is (Git allows them in tags)."""
    return BIDI.sub(lambda m: f"<U+{ord(m.group()):04X}>", value)
