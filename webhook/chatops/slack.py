"""POST /chatops/slack/actions (buttons) and /chatops/slack/commands (`/deploy ...`).

Each request is verified first — slack_sdk's `SignatureVerifier` over the raw body
(read before the form is parsed), 5-minute window — and refused with 401 otherwise,
before anything else is read: whatever the headers hold, a bad signature is a refusal
(one log line, no header echoed), never a 500. Then it is parsed, authorised and queued by
`webhook.chatops.actions` within Slack's 3 s; everything a person should read comes
back as an ephemeral reply with HTTP 200 (Slack shows a 4xx only as a generic
error). A button click also rewrites the clicked message through `response_url`
("⏳ promoting…", buttons gone) from a background thread (`responder`); the worker's
notifier later shows the outcome in the same message. That rewrite can reach Slack
after the notifier's update (the thread pool busy, Slack slow), so once it is answered
or has failed the notifier is asked to send the message again
(`Engine.resend_chat_message`): it ends showing the release as it is, whichever write
landed last.

Slash command: `/deploy promote APP [RELEASE]`, `/deploy rollback APP [RELEASE]`,
`/deploy abort APP [RELEASE]`, `/deploy decommission APP COLOR [RELEASE]`,
`/deploy status [APP]`, `/deploy help`. Payloads and `response_url` are never logged.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

import orjson
from flask import Blueprint, Response, jsonify, request
from redis.exceptions import RedisError
from slack_sdk.signature import SignatureVerifier

from webhook import errors
from webhook.chatops import responder
from webhook.chatops.actions import Chatter, Command, submit
from webhook.chatops.status import status_text
from webhook.context import Web, current
from worker.api import Action, Color, EngineError, is_release_id
from worker.chatmessages import ACTION_PREFIX, ButtonValue, render

bp = Blueprint("chatops_slack", __name__)
log = logging.getLogger("bluegreen.chatops")
USAGE = {
    Action.PROMOTE: "promote APP [RELEASE]",
    Action.ROLLBACK: "rollback APP [RELEASE]",
    Action.ABORT: "abort APP [RELEASE]",
    Action.DECOMMISSION: "decommission APP COLOR [RELEASE]",
}


@bp.post("/chatops/slack/actions")
def actions() -> Response:
    """A click on one of our buttons: queue its command, show it pending, answer at once."""
    web = current()
    payload = _payload(_verified_form(web))
    clicked = _our_action(payload)
    if payload.get("type") != "block_actions" or clicked is None:
        return Response(status=200)  # not a click on our buttons: nothing to do
    who = _clicker(payload)
    try:
        value = ButtonValue.parse(clicked.get("value"))
    except ValueError as e:
        return _answer(web, payload, f"Nothing changed: {e}.")
    outcome = submit(web, Command(value.app, value.action, value.release, value.color), who)
    if outcome.queued is None:
        return _answer(web, payload, outcome.text)
    _show_pending(web, payload, str(clicked.get("block_id") or ""))
    return ephemeral(outcome.text)


@bp.post("/chatops/slack/commands")
def commands() -> Response:
    """`/deploy ...`: queue a command, or answer status or help."""
    web = current()
    form = _verified_form(web)
    if form.get("ssl_check"):
        return Response(status=200)
    who = Chatter("slack", _required(form, "user_id"), form.get("user_name", ""),
                  form.get("channel_id", ""), form.get("channel_name", ""))
    name = form.get("command") or "/deploy"
    words = form.get("text", "").split()
    verb = words[0].lower() if words else "help"
    try:
        if verb == "status":
            return ephemeral(status_text(web, words[1:2]))
        if verb == "help":
            return ephemeral(help_text(name))
        command = parse_command(words)
    except ValueError as e:
        return ephemeral(f"{e}\n{help_text(name)}")
    except EngineError as e:
        return ephemeral(f"Nothing changed: {e.message}")
    return ephemeral(submit(web, command, who).text)


def parse_command(words: list[str]) -> Command:
    """`promote myapp [RELEASE]` and the like; ValueError saying what is wrong."""
    try:
        action = Action(words[0].lower())
    except ValueError:
        raise ValueError(f"Unknown command {words[0][:40]!r}.") from None
    args = words[1:]
    wanted = 2 if action is Action.DECOMMISSION else 1
    if not wanted <= len(args) <= wanted + 1:
        raise ValueError(f"Usage: {USAGE[action]}")
    color = Color.parse(args[1]) if action is Action.DECOMMISSION else None
    release = args[wanted] if len(args) > wanted else None
    if release is not None and not is_release_id(release):
        raise ValueError(f"{release[:80]!r} is not a release id. Usage: {USAGE[action]}")
    return Command(app=args[0], action=action, release=release, color=color)


def help_text(name: str) -> str:
    lines = [f"`{name} {usage}`" for usage in USAGE.values()]
    return ("*bluegreen* — release from chat. Without RELEASE a command acts on the app's one "
            "release awaiting promotion (promote, abort) or live (rollback).\n"
            + "\n".join(lines) + f"\n`{name} status [APP]`\n`{name} help`")


def ephemeral(text: str) -> Response:
    """An answer only the sender sees (HTTP 200, as Slack wants even for refusals)."""
    return jsonify(response_type="ephemeral", replace_original=False, text=text)


def _verified_form(web: Web) -> dict[str, str]:
    """The form fields of a request Slack signed in the last 5 minutes; else 401."""
    secret = web.settings.slack_signing_secret
    if not secret:
        raise errors.Unauthorized("Slack chat-ops are off: no SLACK_SIGNING_SECRET is configured")
    raw = request.get_data(cache=True)  # the raw body, before Flask parses the form
    try:
        valid = SignatureVerifier(secret).is_valid_request(raw, dict(request.headers))
    except (ValueError, TypeError):
        # ValueError: a timestamp that is not a number, a body that is not UTF-8;
        # TypeError: a signature that is not ASCII (`hmac.compare_digest` refuses the str)
        valid = False
    if not valid:
        log.info("Slack request refused (401): missing, invalid or expired signature")
        raise errors.Unauthorized("missing, invalid or expired Slack signature")
    return dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def _payload(form: dict[str, str]) -> dict[str, Any]:
    try:
        # orjson, not json: it refuses an escaped lone surrogate ("\udc80"), which Slack
        # never sends and which no audit entry, log line or chat message could hold
        payload = orjson.loads(form.get("payload", ""))
    except orjson.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        raise errors.BadRequest("an interactivity request carries a `payload` field of "
                                "JSON text (UTF-8)")
    return payload


def _our_action(payload: dict[str, Any]) -> dict[str, Any] | None:
    for action in payload.get("actions") or []:
        if isinstance(action, dict) and str(action.get("action_id", "")).startswith(
                ACTION_PREFIX):
            return action
    return None


def _clicker(payload: dict[str, Any]) -> Chatter:
    user, channel, container = (_object(payload, key) for key in ("user", "channel", "container"))
    user_id = user.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise errors.BadRequest("the payload names no user")
    return Chatter("slack", user_id, str(user.get("username") or user.get("name") or ""),
                   str(channel.get("id") or container.get("channel_id") or ""),
                   str(channel.get("name") or ""))


def _object(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    return value if isinstance(value, dict) else {}


def _required(form: dict[str, str], name: str) -> str:
    if not form.get(name):
        raise errors.BadRequest(f"the slash command carries no {name}")
    return form[name]


def _answer(web: Web, payload: dict[str, Any], text: str) -> Response:
    """An ephemeral reply; for a click it must also go through `response_url` to be seen."""
    _send(web, payload, {"response_type": "ephemeral", "replace_original": False, "text": text})
    return ephemeral(text)


def _show_pending(web: Web, payload: dict[str, Any], block_id: str) -> None:
    """Rewrite the clicked message as the notifier will: command pending, no buttons."""
    try:
        release = web.engine.get_release(block_id.removeprefix(ACTION_PREFIX))
        if release is None:
            return
        other = web.engine.occupant_for(release.app, release.color.other())
        message = render(release, web.engine.audit(release.id), other=other,
                         other_audit=web.engine.audit(other.id) if other else ())
    except (EngineError, RedisError) as e:
        log.warning("clicked message not updated: %s", type(e).__name__)
        return
    _send(web, payload, {"replace_original": True, "text": message.text,
                         "blocks": message.blocks}, then=_resender(web, release.id))


def _resender(web: Web, release_id: str) -> Callable[[], None]:
    """What to do once the pending rewrite reached Slack (or did not): have the release's
    message sent again, in case the notifier's update of the outcome landed first."""
    def resend() -> None:
        try:
            web.engine.resend_chat_message(release_id)
        except EngineError as e:
            log.warning("release message not sent again after the pending rewrite: %s",
                        e.message)
    return resend


def _send(web: Web, payload: dict[str, Any], body: dict[str, Any], *,
          then: Callable[[], None] | None = None) -> None:
    url = payload.get("response_url")
    if url is None:
        return
    if not responder.is_allowed(url, web.settings.slack_api_url):
        log.warning("not answering through a response_url outside Slack's hosts")
        return
    responder.send(str(url), body, then=then)
