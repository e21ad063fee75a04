"""HTTP edge of bluegreen: forge intake, chat-ops, operator API, status pages, metrics.

`create_app()` is the WSGI application factory gunicorn serves (see the Procfile).
It imports the application lazily, so the pure parts (`webhook.forges`,
`webhook.signatures`) can be imported without Flask, Redis or the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask
    from redis import Redis

    from worker.config import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> Flask:
    """The web application; see `webhook.app.create_app`."""
    from webhook.app import create_app as factory

    return factory(settings, redis)
