"""HTTP errors: one base exception, one renderer, and the mapping of everything else onto it.

Views raise an `HttpError` subclass; `register(app)` installs the single error
handler that turns any exception into `{"result": "error", "code", "message"}` with
the right status: our own errors as they are, the engine's `EngineError`s by their
`status`/`code`, Werkzeug's (404, 405, 413, ...) by status, Redis connection errors as
503, and anything unexpected as a logged 500 that reveals nothing. Messages are
written for a person and never contain a secret, a signature or a token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from worker.api import EngineError

log = logging.getLogger("bluegreen.web")


class HttpError(Exception):
    """Base of every error a view raises; subclasses set `status` and `code`."""

    status: int = 500
    code: str = "internal_error"
    message: str = "something went wrong on our side; the error is logged"

    def __init__(self, message: str | None = None, *,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(HttpError):
    status, code, message = 400, "bad_request", "the request is not what this endpoint takes"


class InvalidJson(HttpError):
    status, code, message = 400, "invalid_json", "the body is not valid JSON"


class MalformedPayload(HttpError):
    status, code, message = 400, "malformed_payload", "the payload is missing what we need"


class UnknownForge(HttpError):
    status, code = 400, "unknown_forge"
    message = ("no forge event header (X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event, "
               "X-Forgejo-Event or X-Event-Key); POST to /webhook/<forge> to name one")


class Unauthorized(HttpError):
    status, code, message = 401, "unauthorized", "missing or invalid credentials"


class NotFound(HttpError):
    status, code, message = 404, "not_found", "no such resource"


class MethodNotAllowed(HttpError):
    status, code, message = 405, "method_not_allowed", "this method is not allowed here"


class PayloadTooLarge(HttpError):
    status, code, message = 413, "payload_too_large", "the body is larger than we accept"

    @classmethod
    def over(cls, limit: int) -> PayloadTooLarge:
        return cls(f"the body is over the {limit} byte limit")


class RequestTimeout(HttpError):
    status, code, message = 408, "request_timeout", "the body did not arrive in time"


class UriTooLong(HttpError):
    status, code, message = 414, "uri_too_long", "the request line is too long"


class HeaderFieldsTooLarge(HttpError):
    status, code = 431, "request_header_fields_too_large"
    message = "the request's header fields are too many or too large"


class UnsupportedMediaType(HttpError):
    status, code, message = 415, "unsupported_media_type", "send the body as application/json"


class ServiceUnavailable(HttpError):
    status, code, message = 503, "redis_unavailable", "Redis is unreachable; nothing was recorded"


_BY_STATUS: dict[int, type[HttpError]] = {
    cls.status: cls for cls in (BadRequest, Unauthorized, NotFound, MethodNotAllowed,
                                PayloadTooLarge, UnsupportedMediaType, ServiceUnavailable)
}


def to_http_error(error: Exception) -> HttpError:
    """Any exception as the `HttpError` a client should see."""
    if isinstance(error, HttpError):
        return error
    if isinstance(error, EngineError):
        return _from_engine(error)
    if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return ServiceUnavailable()
    if isinstance(error, HTTPException):
        return _from_werkzeug(error)
    log.exception("unhandled error", exc_info=error)
    return HttpError()


def _from_engine(error: EngineError) -> HttpError:
    converted = HttpError(str(error) or None)
    converted.status, converted.code = error.status, error.code
    return converted


def _from_werkzeug(error: HTTPException) -> HttpError:
    status = error.code or 500
    converted = _BY_STATUS.get(status, HttpError)()
    if converted.status != status:
        converted.status, converted.code = status, "http_error"
        converted.message = error.description or converted.message
    allowed = getattr(error, "valid_methods", None)
    if status == 405 and allowed:
        converted.headers["Allow"] = ", ".join(allowed)
    return converted


def body(error: HttpError) -> dict[str, object]:
    """The JSON body every error answer has."""
    return {"result": "error", "code": error.code, "message": error.message}


def render(error: HttpError) -> Response:
    """The JSON body and status every error answer has."""
    response = jsonify(body(error))
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def register(app: Flask) -> None:
    """Install the one error handler on `app`."""

    @app.errorhandler(Exception)
    def handle(error: Exception) -> Response:
        return render(to_http_error(error))
