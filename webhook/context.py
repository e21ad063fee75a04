"""What every view needs from the app: settings, the Redis client and the engine.

`create_app` builds one `Web` and stores it in `app.extensions`; views call
`current()` instead of reaching into globals, so a test can build several apps with
different settings side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from redis import Redis

from worker.api import Engine
from worker.config import Settings

EXTENSION = "bluegreen"


@dataclass(frozen=True)
class Web:
    settings: Settings
    redis: Redis
    engine: Engine


def current() -> Web:
    """The `Web` of the app handling this request."""
    web = current_app.extensions[EXTENSION]
    assert isinstance(web, Web)
    return web
