"""The stored cluster snapshot of each app: its Redis key, its shape, and reading it.

The worker writes one JSON document per app (`worker.snapshot`, the only writer; it
reads the cluster through `worker.kube`). Everyone else reads it from here, which
imports neither the Kubernetes client nor the steps, so the web process can show the
cluster without ever talking to it. Key:

    bluegreen:snapshot:<app>    JSON, no expiry (an old snapshot says how old it is)

Shape (times are Unix seconds):

    {"app", "namespace", "taken_at", "source": "step" | "job" | "idle",
     "live": "blue" | "green" | null, "live_since",
     "routes": {"virtual_service", "exists", "default", "test", "subsets": [...]},
     "colors": {"blue": {"deployment", "exists", "release", "version", "tag", "state",
                         "image", "ready", "desired", "is_ready"}, "green": {...}},
     "drift": [{"kind", "color", "message"}],
     "error": null | "why the last refresh failed", "error_at"}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline

SNAPSHOT_KEY = "bluegreen:snapshot:{app}"

Snapshot = dict[str, Any]


def key(app: str) -> str:
    return SNAPSHOT_KEY.format(app=app)


def queue_reads(pipe: Pipeline, apps: Iterable[str]) -> None:
    """Queue a read of each app's snapshot into `pipe`; `parse_reads` decodes the answers."""
    for app in apps:
        pipe.get(key(app))


def parse_reads(apps: Sequence[str], answers: Sequence[Any]) -> dict[str, Snapshot | None]:
    return {app: decode(raw) for app, raw in zip(apps, answers, strict=True)}


def load(redis: Redis, app: str) -> Snapshot | None:
    return decode(redis.get(key(app)))


def load_many(redis: Redis, apps: Sequence[str]) -> dict[str, Snapshot | None]:
    """Every app's snapshot (None: never taken) in one round trip."""
    with redis.pipeline(transaction=False) as pipe:
        queue_reads(pipe, apps)
        return parse_reads(apps, pipe.execute())


def decode(raw: bytes | str | None) -> Snapshot | None:
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def encode(doc: Snapshot) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))
