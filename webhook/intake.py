"""POST /webhook and /webhook/<forge>: detect the forge, verify, parse, match, submit.

A delivery goes through, in order: forge detection (headers, or the path), the body
size cap (Content-Length, before reading), the forge's secret being configured, the
signature over the raw body, the content type, JSON decoding, the forge's pure
parser, matching a configured app by repository and tag pattern (a tag name Git
would not allow is ignored before any pattern sees it), and finally the
engine's submission (`worker.submission`), which dedupes, records and queues the
delivery's releases in one atomic Redis call and counts the delivery in the metrics.
Every refusal happens before that call, so a refused delivery changes nothing. A
request carrying no forge's event header is 400 `unknown_forge` (no forge sends such
a request, so no hook is disabled by it); an unknown forge named in the path is 404.
A GitHub or Gitea `create` event is ignored: the tag's push is the release (see
`webhook.forges.github.parse_create`). Events we do not act on get 200 `ignored`
(GitLab disables a hook for good after a 4xx). Each delivery ends in exactly one
structured log line, which never holds a secret, a signature or a token.

The steps are plain functions of headers and bytes (`open_delivery`, `read_pushes`,
`answer`, `refuse`, `log_delivery`), so two front ends share them: the Flask view
below (the WSGI app, used by tests and any WSGI server) and `webhook.asgi`, the
asyncio path the web process serves deliveries on. Only reading the body and the
Redis call differ between them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request

from webhook import errors, forges, signatures
from webhook.context import current
from webhook.forges import Forge, Ignored, Scheme, TagPush
from webhook.forges.payload import HeaderMap, header
from worker import metrics
from worker.api import Submitted, TagEvent
from worker.config import Settings
from worker.refnames import why_not_a_tag

bp = Blueprint("intake", __name__)
log = logging.getLogger("bluegreen.webhook")
LOGGED_VALUE_MAX = 200
LOGGED_TAGS_MAX = 20
# One encoder for every answer: json.dumps with `separators` builds a new one per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


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
    counted: bool = False  # the submission counted it in the metrics already


@dataclass(frozen=True)
class Answer:
    """An answer to a delivery, for either front end to send."""

    status: int
    body: dict[str, object]
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        """The body as Flask's `jsonify` writes it (compact, ASCII, a closing newline)."""
        return _COMPACT_JSON.encode(self.body).encode() + b"\n"


@dataclass(frozen=True)
class Pending:
    """A verified delivery's tag pushes that some app takes, waiting to be submitted."""

    events: list[TagEvent]
    reasons: list[str]  # why the other pushes were ignored


@bp.post("/webhook")
@bp.post("/webhook/<forge_name>")
def receive(forge_name: str | None = None) -> Response:
    """Answer one forge delivery and log exactly one line about it."""
    web = current()
    outcome = Outcome()
    try:
        forge = open_delivery(forge_name, request.headers, request.content_length,
                              web.settings, _body_limit(), outcome)
        result = read_pushes(forge, request.headers, request.content_type, _read_body(),
                             web.settings, outcome)
        if isinstance(result, Pending):
            submitted = web.engine.submit_tags(result.events, count_as=forge.name)
            result = answer(result, submitted, outcome)
    except Exception as error:  # every error is rendered here so it is logged once
        result = refuse(error, outcome)
    log_delivery(outcome, result.status)
    if not outcome.counted:
        metrics.record_webhook(web.redis, outcome.forge, outcome.result)
    response = Response(result.encoded(), status=result.status, mimetype="application/json")
    response.headers.update(result.headers)
    return response


class UnknownForgeName(errors.NotFound):
    code = "unknown_forge"


def open_delivery(forge_name: str | None, headers: HeaderMap, content_length: int | None,
                  settings: Settings, limit: int, outcome: Outcome) -> Forge:
    """The forge, once the declared size and the forge's configuration allow reading on."""
    forge = _forge(forge_name, headers)
    outcome.forge = forge.name
    outcome.delivery = header(headers, *forge.delivery_headers)
    if content_length is not None and content_length > limit:
        raise errors.PayloadTooLarge.over(limit)
    if not any(_secrets(forge, settings)):
        raise errors.Unauthorized(f"{forge.name} webhooks are not configured here "
                                  "(no secret is set for this forge)")
    return forge


def read_pushes(forge: Forge, headers: HeaderMap, content_type: str | None, raw: bytes,
                settings: Settings, outcome: Outcome) -> Pending | Answer:
    """Verify, decode, parse and match: the pushes to submit, or the `ignored` answer."""
    if not is_authentic(forge, headers, raw, _secrets(forge, settings)):
        raise errors.Unauthorized(f"missing or invalid {forge.signature_header} header")
    try:
        parsed = forge.parse(headers, _json_body(content_type, raw))
    except forges.MalformedPayload as e:
        raise errors.MalformedPayload(f"{forge.name} payload: {e}") from e
    if isinstance(parsed, Ignored):
        return _ignored(outcome, [parsed.reason])
    outcome.repository = parsed[0].repository
    outcome.tags = [p.tag for p in parsed]
    events, reasons = _matched(parsed, _fallback_delivery_id(parsed, raw), settings)
    if not events:
        return _ignored(outcome, reasons or ["no configured app matches this push"])
    return Pending(events=events, reasons=reasons)


def answer(pending: Pending, submitted: Sequence[Submitted], outcome: Outcome) -> Answer:
    """The answer once the engine has submitted `pending` (which also counted it)."""
    outcome.counted = True
    outcome.releases = [s.release.id for s in submitted]
    queued = [s for s in submitted if not s.duplicate]
    duplicates = [s for s in submitted if s.duplicate]
    if queued:
        return _queued(outcome, queued, duplicates, pending.reasons)
    if duplicates:
        return _duplicate(outcome, duplicates, pending.reasons)
    outcome.counted = False  # the apps went away between matching and submitting
    return _ignored(outcome, pending.reasons or ["no configured app matches this push"])


def refuse(error: Exception, outcome: Outcome) -> Answer:
    """The error answer for anything a step raised."""
    refusal = errors.to_http_error(error)
    outcome.result, outcome.reason = "error", refusal.code
    return Answer(refusal.status, errors.body(refusal), dict(refusal.headers))


def _forge(forge_name: str | None, headers: HeaderMap) -> Forge:
    if forge_name is None:
        forge = forges.detect(headers)
        if forge is None:
            raise errors.UnknownForge()
        return forge
    if forge_name not in forges.FORGES:
        raise UnknownForgeName(f"no forge named {forge_name[:40]!r}; "
                               f"use one of: {', '.join(forges.FORGES)}")
    return forges.FORGES[forge_name]


def _secrets(forge: Forge, settings: Settings) -> tuple[str, ...]:
    secrets: tuple[str, ...] = getattr(settings, forge.secret_setting)
    return secrets


def _body_limit() -> int:
    return int(current_app.config["MAX_CONTENT_LENGTH"])


def _read_body() -> bytes:
    """The raw body. A chunked body (no Content-Length) is read only up to the limit,
    silently, so one that fills it is refused rather than checked truncated."""
    raw = request.get_data(cache=True)
    limit = _body_limit()
    if request.content_length is None and len(raw) >= limit:
        raise errors.PayloadTooLarge.over(limit)
    return raw


def is_authentic(forge: Forge, headers: HeaderMap, raw: bytes,
                 secrets: tuple[str, ...]) -> bool:
    """True when the forge's signature or token header matches one of `secrets`."""
    given = headers.get(forge.signature_header)
    if forge.scheme is Scheme.PREFIXED_HMAC:
        return signatures.is_valid_prefixed_hmac(raw, given, secrets)
    if forge.scheme is Scheme.HEX_HMAC:
        return signatures.is_valid_hex_hmac(raw, given, secrets)
    return signatures.is_valid_token(signatures.header_bytes(given), secrets)


def media_type(content_type: str | None) -> str:
    """`text/HTML; charset=utf-8` -> `text/html`, as Werkzeug's `mimetype` reads it."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _json_body(content_type: str | None, raw: bytes) -> Any:
    mimetype = media_type(content_type)
    if mimetype == "application/x-www-form-urlencoded":
        raise errors.UnsupportedMediaType(
            "form-encoded webhooks (payload=...) are not accepted: set the webhook's "
            "content type to application/json")
    if not (mimetype == "application/json"
            or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        raise errors.UnsupportedMediaType(
            f"content type {mimetype[:60] or 'none'!r} is not accepted: "
            "send application/json")
    return _decoded(raw)


def _decoded(raw: bytes) -> Any:
    """The JSON document in `raw`, as `json.loads` reads it, in well under half the time.

    orjson reads what forges send. What it refuses, the stdlib reads as before: NaN and
    Infinity, UTF-16 and UTF-32, a byte order mark, escaped lone surrogates, nesting past
    orjson's 1024 levels (which the stdlib's recursion limit refuses in turn). Where the
    two differ on a document both read, an integer past 64 bits is a float from orjson;
    no forge parser reads a number. (A lone surrogate read here is refused later if it
    is in a field a release keeps: `forges.TagPush`.)
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise errors.InvalidJson("the body is not valid JSON") from e


def _fallback_delivery_id(pushes: tuple[TagPush, ...], raw: bytes) -> str:
    """The delivery id for pushes a forge sent without one: a digest of the body, so a
    resend of the same body dedupes (the engine dedupes per delivery id and tag). Only
    computed when a push lacks an id: hashing the body costs as much as matching it."""
    if all(p.delivery_id for p in pushes):
        return ""
    return "body-" + hashlib.sha256(raw).hexdigest()[:32]


def _matched(pushes: tuple[TagPush, ...], fallback_id: str,
             settings: Settings) -> tuple[list[TagEvent], list[str]]:
    """The events of the pushes some configured app takes, and why the others are not."""
    events: list[TagEvent] = []
    reasons: list[str] = []
    for push in pushes:
        reason = _mismatch(push, settings)
        if reason is not None:
            reasons.append(reason)
            continue
        events.append(TagEvent(forge=push.forge, delivery_id=push.delivery_id or fallback_id,
                               repository=push.repository, tag=push.tag, commit=push.commit,
                               pusher=push.pusher))
    return events, reasons


def _mismatch(push: TagPush, settings: Settings) -> str | None:
    """Why no configured app takes this tag, or None when at least one does."""
    invalid = why_not_a_tag(push.tag)
    if invalid is not None:  # never pushed: a forge's payload can say anything
        return f"tag {push.tag!r} is not a name Git allows for a tag: {invalid}"
    apps = settings.apps_for_repository(push.repository)
    if not apps:
        return f"repository {push.repository} is not configured for any app"
    for app in apps:
        if app.color_for_tag(push.tag) is not None:
            return None
    names = ", ".join(app.name for app in apps)
    return f"tag {push.tag} matches no tag pattern of {names}"


def _entry(submitted: Submitted) -> dict[str, object]:
    release = submitted.release
    return {"id": release.id, "app": release.app, "color": release.color.value,
            "tag": release.tag, "position": submitted.position}


def _queued(outcome: Outcome, queued: list[Submitted], duplicates: list[Submitted],
            reasons: list[str]) -> Answer:
    outcome.result = "queued"
    body: dict[str, object] = {"result": "queued", "releases": [_entry(s) for s in queued]}
    if duplicates:
        body["duplicates"] = [_entry(s) for s in duplicates]
    if reasons:
        body["ignored"] = reasons
    return Answer(202, body)


def _duplicate(outcome: Outcome, duplicates: list[Submitted], reasons: list[str]) -> Answer:
    outcome.result = "duplicate"
    body: dict[str, object] = {"result": "duplicate", "release": duplicates[0].release.id,
                               "releases": [_entry(s) for s in duplicates]}
    if reasons:
        body["ignored"] = reasons
    return Answer(200, body)


def _ignored(outcome: Outcome, reasons: list[str]) -> Answer:
    outcome.result, outcome.reason = "ignored", "; ".join(reasons)
    return Answer(200, {"result": "ignored", "reason": outcome.reason})


def log_delivery(outcome: Outcome, status: int) -> None:
    """The delivery's one log line."""
    outcome.status = status
    log.info(_line(outcome))


def _line(outcome: Outcome) -> str:
    """The line as `json.dumps(..., ensure_ascii=True)` writes a dict of these keys, in
    this order (tests/test_intake_steps.py checks that it is), spelt out: every value is
    a string, a list of strings, None or an int, and building the dict and dumping it
    cost a refusal more than checking its signature."""
    tags = ", ".join([_logged(t) for t in outcome.tags[:LOGGED_TAGS_MAX]])
    releases = ", ".join([encode_basestring_ascii(r) for r in outcome.releases])
    return (f'{{"event": "webhook", "forge": {_logged(outcome.forge, None)}, '
            f'"delivery": {_logged(outcome.delivery)}, '
            f'"repository": {_logged(outcome.repository)}, "tags": [{tags}], '
            f'"result": {encode_basestring_ascii(outcome.result)}, '
            f'"reason": {_logged(outcome.reason)}, "status": {outcome.status:d}, '
            f'"releases": [{releases}]}}')


def _logged(value: str | None, limit: int | None = LOGGED_VALUE_MAX) -> str:
    """`value` as a JSON string clipped to `limit` characters, or `null`."""
    return "null" if value is None else encode_basestring_ascii(value[:limit])
