"""GET /status (JSON) and GET / (the live board): what every app, queue and release is doing.

Owns the status document and its optional token. The document is assembled from
Redis only: release records and queue state through `worker.api`, the length of each
listed release's audit trail, and the cluster as the worker last saw it
(`worker.clusterview` snapshots, with their age and drift). The
web process never talks to Kubernetes. Reads are bounded (recent releases: `?limit=`,
default 50, at most 200; a few pipelined reads, and one record read per app for its
live release), so the answer stays fast with many apps and thousands of releases.

The board is a static page whose script polls `/status` every two seconds. Polling,
not server-sent events: gunicorn's gthread workers have a few threads each, and every
open event stream would hold one of them for as long as a board is open, taking it
from forge deliveries with 3-10 s deadlines; a poll is one short request.

When `BLUEGREEN_STATUS_TOKEN` is set, both routes need it (or an operator API token)
as `Authorization: Bearer <token>` or, for the browser page, `?token=<token>`;
it is compared in constant time and never echoed. `authorize_read` is that check;
`webhook.operator_api` applies it to the release reads too, which show the same records.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request

from webhook import auth, errors
from webhook.context import Web, current
from webhook.signatures import matching_token
from worker import clusterview
from worker.api import Release, ReleaseState

bp = Blueprint("status", __name__)
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
POLL_MS = 2000
S = ReleaseState
UNFINISHED = frozenset({S.QUEUED, S.CHECKING, S.DEPLOYING, S.TESTING})


@bp.get("/status")
def status() -> Response:
    """Apps, queues and recent releases as JSON."""
    web = current()
    authorize_read(web)
    response = jsonify(document(web, limit=_limit(request.args.get("limit")), now=time.time()))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
def board() -> Response:
    """The live HTML board (it polls /status)."""
    authorize_read(current())
    response = Response(render_template("board.html", poll_ms=POLL_MS), mimetype="text/html")
    response.headers.update({"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                             "X-Content-Type-Options": "nosniff"})
    return response


def authorize_read(web: Web) -> None:
    """Raise 401 unless the request carries the status token or an operator API token.

    Does nothing when no status token is configured: the read views are then open.
    """
    token = web.settings.status_token
    if not token:
        return
    given = auth.bearer_token(request.headers.get("Authorization")) or request.args.get("token")
    if matching_token(given, (token, *web.settings.api_tokens)) is None:
        raise errors.Unauthorized("the status and release reads need a token: send "
                                  "'Authorization: Bearer <token>', or open the board as "
                                  "/?token=<token>",
                                  headers=auth.CHALLENGE)


def _limit(value: str | None) -> int:
    if not value:
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
        raise errors.BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)


# -- the document ------------------------------------------------------------------------------


def document(web: Web, *, limit: int, now: float) -> dict[str, Any]:
    """The whole status answer (see README, "Watching releases")."""
    engine, names = web.engine, sorted(web.settings.apps)
    live = _by_app(engine.list_releases(state=S.LIVE, limit=len(names) * 4 + 10))
    awaiting = _by_app(engine.list_releases(state=S.AWAITING_PROMOTION, limit=MAX_LIMIT))
    snapshots = clusterview.load_many(web.redis, names)
    return {
        "result": "ok",
        "generated_at": now,
        "apps": {name: _app(web, name, live.get(name, []), awaiting.get(name, []),
                            snapshots[name], now) for name in names},
        "queues": [_queue(q, now) for q in engine.queue_status()],
        "releases": _with_audit_entries(web, [summary(r, now)
                                              for r in engine.list_releases(limit=limit)]),
    }


def _with_audit_entries(web: Web, releases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each release with `audit_entries`, the length of its audit trail (one pipelined
    LLEN each). A note (a command requested, a retry) adds an entry without changing
    the record's `updated_at`; the board refetches an open trail when this changes."""
    lengths = web.engine.audit_lengths([str(release["id"]) for release in releases])
    return [{**release, "audit_entries": n} for release, n in zip(releases, lengths, strict=True)]


def _by_app(releases: list[Release]) -> dict[str, list[Release]]:
    grouped: dict[str, list[Release]] = {}
    for release in releases:
        grouped.setdefault(release.app, []).append(release)
    return grouped


def _app(web: Web, name: str, live: list[Release], awaiting: list[Release],
         snap: clusterview.Snapshot | None, now: float) -> dict[str, Any]:
    record = live[0] if live else None
    shown = _live(web, record, snap, now)
    return {
        "queue": web.settings.apps[name].queue,
        "live": shown,
        "colors": _colors(snap, shown["color"]),
        "awaiting": [summary(r, now) for r in awaiting],
        "drift": list((snap or {}).get("drift") or []),
        "snapshot": _snapshot_age(snap, now),
    }


def _live(web: Web, record: Release | None, snap: clusterview.Snapshot | None,
          now: float) -> dict[str, Any]:
    """The live colour and the release its Deployment carries, as the cluster was last
    seen (from the records until a first snapshot exists). `records_release` is the
    release the records call live; `conflict` says, for a person, how the two disagree
    (someone switched the route or replaced the Deployment by hand), never pairing the
    cluster's colour with the records' release in silence."""
    recorded = summary(record, now) if record else None
    if snap is None or snap.get("taken_at") is None:
        return {"color": record.color.value if record else None,
                "since": record.updated_at if record else None, "release": recorded,
                "seen_on": "records", "records_release": recorded, "conflict": None}
    color = snap.get("live")
    info = dict((snap.get("colors") or {}).get(color or "") or {})
    carried = info.get("release") if color else None
    on_color = record if record is not None and record.id == carried else (
        web.engine.get_release(str(carried)) if carried else None)
    return {"color": color, "since": snap.get("live_since"),
            "release": summary(on_color, now) if on_color else None, "seen_on": "cluster",
            "records_release": recorded, "conflict": _conflict(record, snap, color, info,
                                                               on_color)}


def _conflict(record: Release | None, snap: clusterview.Snapshot, color: str | None,
              info: dict[str, Any], on_color: Release | None) -> str | None:
    """How the cluster's live colour and release differ from the records' live release;
    None when they agree, or when the records changed after the snapshot was taken (a
    promote or rollback the worker has not looked at since: the next snapshot says)."""
    if record is not None and record.updated_at > float(snap["taken_at"]):
        return None
    carried = info.get("release")
    if record is None and color is None:
        return None
    if record is not None and (color, carried) == (record.color.value, record.id):
        return None
    if color is None:
        cluster = "the default route sends users to no colour"
    elif not info.get("exists"):
        cluster = f"the default route sends users to {color}, which has no Deployment"
    else:
        what = (_name(on_color) if on_color else f"release {carried}" if carried
                else "no release label")
        cluster = (f"the default route sends users to {color}, whose Deployment "
                   f"{info.get('deployment')} carries {what}")
    records = (f"the records say {_name(record)} is live on {record.color}" if record
               else "the records say no release is live")
    return f"{cluster}, but {records}"


def _name(release: Release) -> str:
    return f"{release.tag} ({release.id})"


def _colors(snap: clusterview.Snapshot | None, live: str | None) -> dict[str, Any]:
    colors = dict((snap or {}).get("colors") or {})
    return {c: {**colors.get(c, {"exists": None}), "live": c == live} for c in ("blue", "green")}


def _snapshot_age(snap: clusterview.Snapshot | None, now: float) -> dict[str, Any] | None:
    if snap is None:
        return None
    taken = snap.get("taken_at")
    return {"taken_at": taken, "age": None if taken is None else round(now - float(taken), 3),
            "source": snap.get("source"), "error": snap.get("error"),
            "error_at": snap.get("error_at")}


def _queue(queue: dict[str, Any], now: float) -> dict[str, Any]:
    worker = dict(queue.get("worker") or {})
    if isinstance(worker.get("at"), int | float):
        worker["age"] = round(now - worker["at"], 3)
    running = queue.get("running")
    if running and isinstance(running.get("started_at"), int | float):
        running = {**running, "running_for": round(now - running["started_at"], 3)}
    return {**queue, "worker": worker, "running": running}


def summary(release: Release, now: float) -> dict[str, Any]:
    """A release as the status shows it: the record plus its duration and audit link."""
    end = now if release.state in UNFINISHED else release.updated_at
    return {**release.to_json(), "duration": round(max(0.0, end - release.created_at), 3),
            "audit_url": f"/api/releases/{release.id}"}
