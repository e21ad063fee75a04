"""The Flask application factory: settings, Redis, engine, blueprints, errors, body cap.

`create_app(settings=None, redis=None)` loads settings from the environment when
none are given, connects to Redis lazily (short timeouts, so an unreachable Redis is
a quick 503 rather than a hung request), registers every blueprint and the one error
handler, and caps request bodies. Each blueprint owns its routes; the engine behind
`worker.api` owns everything that happens after a request is accepted.
"""

from __future__ import annotations

import logging
import sys

from flask import Flask
from redis import Redis

from webhook import chatops, errors, intake, metrics_view, operator_api, status
from webhook.context import EXTENSION, Web
from worker.api import Engine
from worker.config import Settings, load_settings

MAX_BODY_BYTES = 1024 * 1024  # forge push payloads are a few KiB; 1 MiB leaves room
REDIS_CONNECT_TIMEOUT = 2.0
REDIS_SOCKET_TIMEOUT = 5.0
BLUEPRINTS = (intake.bp, operator_api.bp, status.bp, metrics_view.bp, *chatops.BLUEPRINTS)


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> Flask:
    """A configured web application (gunicorn calls this once per worker)."""
    settings = settings if settings is not None else load_settings()
    if redis is None:
        redis = Redis.from_url(settings.redis_url,
                               socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
                               socket_timeout=REDIS_SOCKET_TIMEOUT,
                               health_check_interval=30)
    app = Flask("webhook")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = Web(settings=settings, redis=redis,
                                    engine=Engine(settings, redis))
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    errors.register(app)
    _log_to_stderr()
    return app


def _log_to_stderr() -> None:
    """Send our structured log lines to stderr unless logging is already configured."""
    logger = logging.getLogger("bluegreen")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
