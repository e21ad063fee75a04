"""Gunicorn settings for the web process (`gunicorn --config webhook/gunicorn_conf.py ...`).

Binds `0.0.0.0:${PORT:-8000}`; worker count from `WEB_CONCURRENCY`, else from the CPU
count; timeouts well inside the forges' delivery deadlines. The access log names the
path without its query string and no headers, so tokens and signatures never reach
a log. The application itself is `webhook:create_app()`, named on the command line.
"""

from __future__ import annotations

import multiprocessing
import os


def _workers() -> int:
    configured = os.environ.get("WEB_CONCURRENCY")
    if configured and configured.isdigit() and int(configured) > 0:
        return int(configured)
    return min(2 * multiprocessing.cpu_count() + 1, 8)


bind = f"0.0.0.0:{os.environ.get('PORT') or '8000'}"
workers = _workers()
worker_class = "gthread"  # a few threads per worker, so a slow client does not block one
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30              # a stuck request is killed long before anyone waits that long
graceful_timeout = 20
keepalive = 5
max_requests = 2000       # recycle workers now and then; jitter avoids a restart stampede
max_requests_jitter = 200
# Import and build the app once in the master; workers fork from it. A recycled worker
# then starts in milliseconds instead of re-importing Flask, rq and slack_sdk (0.4-1.5 s
# of CPU each time on two cores, a worker every ~2000 requests: under a burst that was
# the web process's largest single cost and its p99). Safe: create_app() connects to
# nothing (redis-py opens connections per process on first use) and starts no threads.
# (A HUP then reloads workers from the master's copy of the code: restart to deploy.)
preload_app = True
limit_request_line = 8190
limit_request_fields = 100
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("WEB_LOG_LEVEL", "info")
# %(U)s is the path without the query string; no header atoms: nothing secret is logged.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
proc_name = "bluegreen-web"
# gunicorn 27's control socket defaults to one path per user; several web processes on
# one host (and the tests) would take it from each other. Older gunicorns ignore this.
control_socket_disable = True
