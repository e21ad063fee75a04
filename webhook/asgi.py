"""The web process's front: forge deliveries on asyncio, every other route in Flask.

gunicorn serves `webhook:create_app()` with this module's `Worker` (set in
`webhook/gunicorn_conf.py`): uvicorn's gunicorn worker (uvloop, and the httptools
parser) with the loaded Flask app wrapped in a `Front`, an ASGI app, and uvicorn's
HTTP protocol extended as `FrontProtocol`:

- `POST /webhook` and `POST /webhook/<forge>` run the very steps of `webhook.intake`
  (detect, cap, verify, parse, match, answer, log) on the event loop and send the
  engine's submission (`worker.submission.SUBMIT`) over the worker's one Redis link
  (`webhook.redislink`), deliveries waiting at the same time sharing one call
  (`webhook.groupcommit`): no thread, no WSGI environ, one Redis round trip for an
  accepted or duplicate delivery. `FrontProtocol` (`webhook.protocol`) answers a
  delivery straight from the parser's callbacks; the rare one it leaves to uvicorn (a
  chunked body, `Expect: 100-continue`, a pipelined request) reaches `Front.deliver`
  (`webhook.front`) through ASGI, which runs the same steps;
- every other request (operator API, chat-ops, status, board, metrics) goes to the
  Flask app through `a2wsgi`'s WSGI bridge, in a small thread pool, its body read on
  the loop first within the same deadline as a delivery's (so a slow client holds no
  thread), with one access line in the format of `gunicorn_conf.access_log_format`
  (its path escaped: `webhook.front.loggable`).

A delivery's access record is its structured delivery line (`intake.log_delivery`).
The Flask view of `webhook.intake` stays the reference, and what the test client and
any WSGI server (`gunicorn -k gthread`) run; `tests/test_asgi.py` holds both fronts to
the same answers. `webhook.boundedhttp` adds the request-head limits gunicorn's own
parser had and httptools lacks; `webhook.wire` holds what both paths read and write.
This module owns only the gunicorn worker that puts them together.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from webhook.front import Front, access
from webhook.protocol import FrontProtocol

__all__ = ["Front", "FrontProtocol", "Worker"]


class Worker(UvicornWorker):  # type: ignore[misc]
    """gunicorn worker: uvicorn on uvloop with `FrontProtocol`, serving `Front(app)`."""

    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop", "http": FrontProtocol, "interface": "asgi3", "lifespan": "on",
        "access_log": False, "proxy_headers": False, "server_header": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        access.handlers = self.log.access_log.handlers
        access.setLevel(self.log.access_log.level)
        access.propagate = False

    def init_process(self) -> None:
        # Each log record would otherwise ask threading and multiprocessing who wrote it
        # (~2 µs of a delivery's ~10 µs line); no format here prints either (gunicorn's
        # prints the pid, which records still carry).
        logging.logThreads = False
        logging.logMultiprocessing = False
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.wsgi
        if not isinstance(app, Flask):
            raise TypeError(f"{type(self).__name__} serves the Flask app of "
                            f"webhook:create_app(), not {type(app).__name__}")
        self.wsgi: Any = Front(app)
