"""The operator API: commands on an app's releases, release reads, health and readiness.

Commands (`POST /api/apps/<app>/promote|rollback|decommission|abort`) need a bearer
token (`webhook.auth`), name the release they mean so a stale click changes nothing
(decommission names a colour, and may name the release expected on it), and go to
`Engine.submit_command`, which checks what Redis knows and queues the job;
the worker re-checks the cluster. Reads (`GET /api/releases[/<id>]`) are read-only
views (SPEC §3): open unless `BLUEGREEN_STATUS_TOKEN` is set, and then guarded by the
same check as `/status` (`webhook.status.authorize_read`, which also takes an operator
token), before any lookup, so a refusal says nothing about which releases exist.
`/healthz` and `/readyz` are for the kubelet. Errors are raised and rendered by
`webhook.errors`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import redis
from flask import Blueprint, Response, jsonify, request

from webhook import auth, errors
from webhook.context import current
from webhook.status import authorize_read
from worker.api import Action, Color, ReleaseState, is_release_id

bp = Blueprint("operator_api", __name__)
MAX_LIMIT = 1000


@bp.post("/api/apps/<app>/<any(promote, rollback, decommission, abort):action>")
def command(app: str, action: str) -> tuple[Response, int]:
    """Queue a promote, rollback, decommission or abort of one named release."""
    web = current()
    actor = auth.require_operator(web.settings, request.headers.get("Authorization"))
    web.engine.app_config(app)  # an unknown app is 404 whatever the body says
    body = _json_object()
    color = None
    if action == Action.DECOMMISSION:
        # The colour alone says what to delete; a named release makes a stale request fail.
        color = _color(body.get("color"))
        release = None if body.get("release") is None else _release_id(body["release"])
    else:
        release = _release_id(body.get("release"))
    queued = web.engine.submit_command(app, Action(action), release=release, color=color,
                                       actor=actor)
    return jsonify(result="queued", action=action, app=app, job=queued.job_id,
                   position=queued.position, release=queued.release.id), 202


@bp.get("/api/releases")
def releases() -> Response:
    """Releases, newest first, optionally of one app and in one state."""
    web = current()
    authorize_read(web)
    app = request.args.get("app") or None
    if app is not None:
        web.engine.app_config(app)  # 404 unknown_app, as the commands answer it
    found = web.engine.list_releases(app=app, state=_state(request.args.get("state")),
                                     limit=_limit(request.args.get("limit")))
    return jsonify(result="ok", releases=[r.to_json() for r in found])


@bp.get("/api/releases/<release_id>")
def release(release_id: str) -> Response:
    """One release record and its audit trail, oldest entry first."""
    web = current()
    authorize_read(web)
    engine = web.engine
    found = engine.get_release(release_id)  # (an id of another shape is none: the store)
    if found is None:
        raise UnknownRelease(f"no release {release_id[:80]!r}")
    return jsonify(result="ok", release=found.to_json(),
                   audit=[asdict(entry) for entry in engine.audit(release_id)])


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up and serving (says nothing about Redis)."""
    return jsonify(result="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready to take deliveries: Redis answers PING."""
    try:
        current().redis.ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return errors.render(errors.ServiceUnavailable("Redis does not answer PING")), 503
    return jsonify(result="ok"), 200


class UnknownRelease(errors.NotFound):
    code = "unknown_release"


def _json_object() -> dict[str, Any]:
    """The request body as a JSON object (any content type; an empty body is `{}`)."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise errors.InvalidJson() from e
    if not isinstance(body, dict):
        raise errors.BadRequest("the body must be a JSON object")
    return body


def _release_id(value: object) -> str:
    """The release a command names; 400 for anything that is not shaped like an id."""
    if not is_release_id(value):
        raise errors.BadRequest('name the release: {"release": "<release id>"}')
    return value


def _color(value: object) -> Color:
    colors = [c.value for c in Color]
    if not isinstance(value, str) or value not in colors:
        raise errors.BadRequest(f'name the colour: {{"color": one of {colors}}}')
    return Color(value)


def _state(value: str | None) -> ReleaseState | None:
    if not value:
        return None
    states = [s.value for s in ReleaseState]
    if value not in states:
        raise errors.BadRequest(f"state must be one of {', '.join(states)}")
    return ReleaseState(value)


def _limit(value: str | None) -> int:
    if value is None or value == "":
        return 100
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
        raise errors.BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)
