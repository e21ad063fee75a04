"""GET /metrics: Prometheus text, built from Redis at each scrape.

Every number comes from `worker.metrics.RedisCollector`, which reads what all web
and worker processes wrote to Redis, so the answer is the same whichever gunicorn
worker serves the scrape. No per-process metrics are exported (they would differ
from one scrape to the next).
"""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from webhook.context import current
from worker import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape() -> Response:
    web = current()
    body = generate_latest(metrics.registry(web.redis, web.settings))
    response = Response(body, status=200)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    response.headers["Cache-Control"] = "no-store"
    return response
