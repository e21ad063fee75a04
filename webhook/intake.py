"""POST /webhook and /webhook/<forge>: detect the forge, verify, parse, match, submit.

A delivery goes through, in order: forge detection (headers, or the path), the body
size cap (Content-Length, before reading), the forge's secret being configured, the
signature over the raw body, the content type, JSON decoding, the forge's pure
parser, matching a configured app by repository and tag pattern, and finally
`Engine.submit_tag`, which dedupes, records and queues in one Redis transaction.
Every refusal happens before the engine is called, so a refused delivery changes
nothing. A request carrying no forge's event header is 400 `unknown_forge` (no forge
sends such a request, so no hook is disabled by it); an unknown forge named in the
path is 404. A GitHub or Gitea `create` event is ignored: the tag's push is the
release (see `webhook.forges.github.parse_create`). Events we do not act on get
200 `ignored` (GitLab disables a hook for good after a 4xx). Each delivery ends in
exactly one structured log line, which never holds a secret, a signature or a token.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from webhook import errors, forges, signatures
from webhook.context import current
from webhook.forges import Forge, Ignored, Scheme, TagPush
from webhook.forges.payload import HeaderMap, header
from worker import metrics
from worker.api import Submitted, TagEvent
from worker.config import Settings

bp = Blueprint("intake", __name__)
log = logging.getLogger("bluegreen.webhook")
LOGGED_VALUE_MAX = 200


@dataclass
class Outcome:
    """What the delivery log line says about one delivery."""

    forge: str | None = None
    delivery: str | None = None
    repository: str | None = None
    tags: list[str] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)
    result: str = "error"
    reason: str | None = None
    status: int = 500


@bp.post("/webhook")
@bp.post("/webhook/<forge_name>")
def receive(forge_name: str | None = None) -> Response:
    """Answer one forge delivery and log exactly one line about it."""
    outcome = Outcome()
    try:
        response = _receive(forge_name, outcome)
    except Exception as error:  # every error is rendered here so it is logged once
        refusal = errors.to_http_error(error)
        outcome.result, outcome.reason = "error", refusal.code
        response = errors.render(refusal)
    outcome.status = response.status_code
    _log(outcome)
    metrics.record_webhook(current().redis, outcome.forge, outcome.result)
    return response


def _receive(forge_name: str | None, outcome: Outcome) -> Response:
    forge = _forge(forge_name)
    outcome.forge = forge.name
    outcome.delivery = header(request.headers, *forge.delivery_headers)
    _check_size()
    settings = current().settings
    raw = _verified_body(forge, settings)
    try:
        parsed = forge.parse(request.headers, _json_body(raw))
    except forges.MalformedPayload as e:
        raise errors.MalformedPayload(f"{forge.name} payload: {e}") from e
    if isinstance(parsed, Ignored):
        return _ignored(outcome, [parsed.reason])
    pushes = _with_delivery_ids(parsed, raw)
    outcome.repository = pushes[0].repository
    outcome.tags = [p.tag for p in pushes]
    return _submit(pushes, settings, outcome)


class UnknownForgeName(errors.NotFound):
    code = "unknown_forge"


def _forge(forge_name: str | None) -> Forge:
    if forge_name is None:
        forge = forges.detect(request.headers)
        if forge is None:
            raise errors.UnknownForge()
        return forge
    if forge_name not in forges.FORGES:
        raise UnknownForgeName(f"no forge named {forge_name[:40]!r}; "
                               f"use one of: {', '.join(forges.FORGES)}")
    return forges.FORGES[forge_name]


def _body_limit() -> int:
    return int(current_app.config["MAX_CONTENT_LENGTH"])


def _check_size() -> None:
    """Refuse by the declared Content-Length, before reading anything."""
    limit = _body_limit()
    if request.content_length is not None and request.content_length > limit:
        raise errors.PayloadTooLarge(f"the body is over the {limit} byte limit")


def _read_body() -> bytes:
    """The raw body. A chunked body (no Content-Length) is read only up to the limit,
    silently, so one that fills it is refused rather than checked truncated."""
    raw = request.get_data(cache=True)
    limit = _body_limit()
    if request.content_length is None and len(raw) >= limit:
        raise errors.PayloadTooLarge(f"the body is over the {limit} byte limit")
    return raw


def _verified_body(forge: Forge, settings: Settings) -> bytes:
    """The raw body, once its signature or token checks out against our secrets."""
    secrets: tuple[str, ...] = getattr(settings, forge.secret_setting)
    if not any(secrets):
        raise errors.Unauthorized(f"{forge.name} webhooks are not configured here "
                                  "(no secret is set for this forge)")
    raw = _read_body()
    if not is_authentic(forge, request.headers, raw, secrets):
        raise errors.Unauthorized(f"missing or invalid {forge.signature_header} header")
    return raw


def is_authentic(forge: Forge, headers: HeaderMap, raw: bytes,
                 secrets: tuple[str, ...]) -> bool:
    """True when the forge's signature or token header matches one of `secrets`."""
    given = headers.get(forge.signature_header)
    if forge.scheme is Scheme.PREFIXED_HMAC:
        return signatures.is_valid_prefixed_hmac(raw, given, secrets)
    if forge.scheme is Scheme.HEX_HMAC:
        return signatures.is_valid_hex_hmac(raw, given, secrets)
    return signatures.is_valid_token(given, secrets)


def _json_body(raw: bytes) -> Any:
    if request.mimetype == "application/x-www-form-urlencoded":
        raise errors.UnsupportedMediaType(
            "form-encoded webhooks (payload=...) are not accepted: set the webhook's "
            "content type to application/json")
    if not request.is_json:
        raise errors.UnsupportedMediaType(
            f"content type {request.mimetype[:60] or 'none'!r} is not accepted: "
            "send application/json")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise errors.InvalidJson("the body is not valid JSON") from e


def _with_delivery_ids(pushes: tuple[TagPush, ...], raw: bytes) -> list[TagPush]:
    """Pushes with a delivery id each: a forge that sent none gets a digest of the body,
    so a resend of the same body dedupes. (The engine dedupes per delivery id and tag.)"""
    fallback = "body-" + hashlib.sha256(raw).hexdigest()[:32]
    return [p if p.delivery_id else replace(p, delivery_id=fallback) for p in pushes]


def _submit(pushes: list[TagPush], settings: Settings, outcome: Outcome) -> Response:
    submitted: list[Submitted] = []
    reasons: list[str] = []
    engine = current().engine
    for push in pushes:
        reason = _mismatch(push, settings)
        if reason is not None:
            reasons.append(reason)
            continue
        submitted.extend(engine.submit_tag(TagEvent(
            forge=push.forge, delivery_id=push.delivery_id, repository=push.repository,
            tag=push.tag, commit=push.commit, pusher=push.pusher)))
    outcome.releases = [s.release.id for s in submitted]
    queued = [s for s in submitted if not s.duplicate]
    duplicates = [s for s in submitted if s.duplicate]
    if queued:
        return _queued(outcome, queued, duplicates, reasons)
    if duplicates:
        return _duplicate(outcome, duplicates, reasons)
    return _ignored(outcome, reasons or ["no configured app matches this push"])


def _mismatch(push: TagPush, settings: Settings) -> str | None:
    """Why no configured app takes this tag, or None when at least one does."""
    apps = settings.apps_for_repository(push.repository)
    if not apps:
        return f"repository {push.repository} is not configured for any app"
    if not any(app.color_for_tag(push.tag) for app in apps):
        names = ", ".join(app.name for app in apps)
        return f"tag {push.tag} matches no tag pattern of {names}"
    return None


def _entry(submitted: Submitted) -> dict[str, object]:
    release = submitted.release
    return {"id": release.id, "app": release.app, "color": release.color.value,
            "tag": release.tag, "position": submitted.position}


def _queued(outcome: Outcome, queued: list[Submitted], duplicates: list[Submitted],
            reasons: list[str]) -> Response:
    outcome.result = "queued"
    body: dict[str, object] = {"result": "queued", "releases": [_entry(s) for s in queued]}
    if duplicates:
        body["duplicates"] = [_entry(s) for s in duplicates]
    if reasons:
        body["ignored"] = reasons
    return _answer(body, 202)


def _duplicate(outcome: Outcome, duplicates: list[Submitted], reasons: list[str]) -> Response:
    outcome.result = "duplicate"
    body: dict[str, object] = {"result": "duplicate", "release": duplicates[0].release.id,
                               "releases": [_entry(s) for s in duplicates]}
    if reasons:
        body["ignored"] = reasons
    return _answer(body, 200)


def _ignored(outcome: Outcome, reasons: list[str]) -> Response:
    outcome.result, outcome.reason = "ignored", "; ".join(reasons)
    return _answer({"result": "ignored", "reason": outcome.reason}, 200)


def _answer(body: dict[str, object], status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def _log(outcome: Outcome) -> None:
    def clip(value: str | None) -> str | None:
        return None if value is None else value[:LOGGED_VALUE_MAX]

    line = {"event": "webhook", "forge": outcome.forge, "delivery": clip(outcome.delivery),
            "repository": clip(outcome.repository),
            "tags": [clip(t) for t in outcome.tags[:20]], "result": outcome.result,
            "reason": clip(outcome.reason), "status": outcome.status,
            "releases": outcome.releases}
    log.info(json.dumps(line, ensure_ascii=True))
