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
    # Each worker is an event loop: one per core, for Redis shares the cores with them (a
    # third worker on 2 cores spent ~10 % more CPU per delivery from 8 connections on and
    # answered fewer: docs/benchmarks.md, change 24); at least two, so one worker's
    # restart never leaves the port unserved; at most eight.
    return max(2, min(multiprocessing.cpu_count(), 8))


bind = f"0.0.0.0:{os.environ.get('PORT') or '8000'}"
workers = _workers()
# uvicorn on uvloop, serving deliveries on asyncio and the other routes through Flask
# (webhook.asgi). `gunicorn -k gthread` still serves the same app, all of it in Flask.
worker_class = "webhook.asgi.Worker"
timeout = 30              # a stuck request is killed long before anyone waits that long
graceful_timeout = 20
keepalive = 5
# Workers are not recycled after N requests: recycling an asyncio worker closes every
# keep-alive connection it holds (a forge sees a reset), and at thousands of deliveries
# a second that was a restart every few seconds. Nothing here is known to leak; set
# GUNICORN_CMD_ARGS="--max-requests N" to recycle anyway.
max_requests = 0
# Import and build the app once in the master; workers fork from it, so a worker that
# gunicorn replaces starts in milliseconds instead of re-importing Flask, rq and
# slack_sdk (0.4-1.5 s of CPU each on two cores). Safe: create_app() connects to
# nothing (redis-py opens connections per process on first use) and starts no threads;
# each worker builds its own asyncio front and Redis client (webhook.asgi.Worker).
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
