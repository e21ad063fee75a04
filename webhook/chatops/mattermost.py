"""POST /chatops/mattermost/actions: clicks on Mattermost interactive message buttons.

Mattermost does not sign its requests, so the button's `context` is what we trust:
it must carry a valid `sig` (`worker.chatsign`, keyed with `MATTERMOST_TOKEN`) over the
app, action, release, colour and channel it was made for. A missing or tampered
context — or no secret configured — is answered 401 with nothing changed, as a bad
Slack signature is: such a request did not come from a button we made. A context
signed for another channel is refused with an ephemeral answer. Everything else goes
through `webhook.chatops.actions` like a Slack click (queued, never run here) and is
answered `{"ephemeral_text": ...}` with HTTP 200, which Mattermost shows the clicker.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, jsonify, request

from webhook import errors
from webhook.chatops.actions import Chatter, Command, submit
from webhook.context import current
from worker import chatsign
from worker.api import Action, Color, EngineError

bp = Blueprint("chatops_mattermost", __name__)


@bp.post("/chatops/mattermost/actions")
def actions() -> Response:
    """Verify the button's signed context, then queue its command."""
    web = current()
    body = _json_body()
    context = body.get("context")
    if not chatsign.verify(web.settings.mattermost_secret, context):
        raise errors.Unauthorized("this button's context is not signed by bluegreen")
    assert isinstance(context, dict)  # verify() accepts only a mapping
    who = Chatter("mattermost", _text(body, "user_id"), str(body.get("user_name") or ""),
                  str(body.get("channel_id") or ""), str(body.get("channel_name") or ""))
    if context.get("channel") and context["channel"] != who.channel_id:
        return _ephemeral("Not allowed: this button acts only in the channel it was posted "
                          "in. Nothing changed.")
    try:
        command = Command(app=context["app"], action=Action.parse(context["action"]),
                          release=context["release"],
                          color=Color.parse(context["color"]) if context.get("color") else None)
    except (EngineError, ValueError) as e:
        return _ephemeral(f"Nothing changed: {e}")
    return _ephemeral(submit(web, command, who).text)


def _ephemeral(text: str) -> Response:
    return jsonify(ephemeral_text=text)


def _json_body() -> dict[str, Any]:
    try:  # orjson refuses an escaped lone surrogate, which no audit entry could hold
        body = orjson.loads(request.get_data(cache=True) or b"{}")
    except orjson.JSONDecodeError as e:
        raise errors.InvalidJson() from e
    if not isinstance(body, dict):
        raise errors.BadRequest("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise errors.BadRequest(f"the request names no {name}")
    return value
