"""GET /status latency with 50 apps and 2,000 releases in a real Redis, through real gunicorn.

Seeds a redis-server started here, the way the product writes it (the engine's
`ReleaseStore` and `Engine.submit_tag`, and one cluster snapshot per app in the shape
the worker writes): 50 apps on 5 queues, 2,000 releases whose states follow real
histories (per app one live, one standby, the rest decommissioned, failed, rejected,
superseded or rolled back), a release awaiting promotion on every fifth app, and 20
tag pushes still queued on top (so every queue lists waiting jobs). Then the Procfile's web
line (gunicorn, 2 workers) answers:

- `sequential`: one client, `--requests` GETs of /status (default limit: 50 recent
  releases), after a warm-up;
- `limit200`: the same with `?limit=200`, the largest page;
- `concurrent`: 8 clients at once, `--requests` GETs in all.

Prints median, p90 and p99 (milliseconds) and the answer's size; writes
`bench/results/status_latency.json`. No worker and no cluster run: /status reads
Redis only. Run: `.venv/bin/python bench/status_latency.py [--requests N]`.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import stack
from redis import Redis
from stack import Processes

sys.path.insert(0, str(stack.ROOT))

from worker import clusterview
from worker.api import Engine, TagEvent
from worker.colors import Color
from worker.config import Settings, parse_settings
from worker.releases import Release, ReleaseState, ReleaseStore, new_release_id

APPS, RELEASES, QUEUES, QUEUED = 50, 2000, 5, 20
S = ReleaseState
ENDINGS = ((S.DECOMMISSIONED, 6), (S.FAILED, 1), (S.REJECTED, 1), (S.SUPERSEDED, 1),
           (S.ROLLED_BACK, 1))
PATHS = {"sequential": "/status", "limit200": "/status?limit=200"}


def app_names() -> list[str]:
    return [f"app-{i:02d}" for i in range(APPS)]


def config() -> dict[str, Any]:
    return {"apps": {name: {"repository": f"acme/{name}", "queue": f"deploy-{i % QUEUES}",
                            "image": "registry.example.com/acme/$APP:$VERSION"}
                     for i, name in enumerate(app_names())}}


def seed(redis: Redis, settings: Settings) -> dict[str, int]:
    """Releases with histories, queued pushes and snapshots; counts of what was written."""
    store, rng, now = ReleaseStore(redis), random.Random(6), time.time()
    per_app = RELEASES // APPS
    for index, app in enumerate(app_names()):
        for n in range(per_app):
            color = Color.BLUE if n % 2 else Color.GREEN
            state = _state(n, per_app, index, rng)
            store.add(_release(app, n, color, state, now - (per_app - n) * 600), message="seed")
        _snapshot(redis, app, now)
    engine = Engine(settings, redis)
    for n in range(QUEUED):
        app = app_names()[n % APPS]
        engine.submit_tag(TagEvent(forge="github", delivery_id=f"bench-{n}",
                                   repository=f"acme/{app}", tag=f"v9.{n}-blue",
                                   commit=f"{n:040x}", pusher="bench"))
    return {"releases": int(redis.zcard("bluegreen:releases")), "apps": APPS, "queued": QUEUED}


def _state(n: int, total: int, app_index: int, rng: random.Random) -> ReleaseState:
    if n == total - 1:
        return S.AWAITING_PROMOTION if app_index % 5 == 0 else S.LIVE
    if n == total - 2:
        return S.LIVE if app_index % 5 == 0 else S.STANDBY
    if n == total - 3 and app_index % 5 == 0:
        return S.STANDBY
    states = [s for s, weight in ENDINGS for _ in range(weight)]
    return rng.choice(states)


def _release(app: str, n: int, color: Color, state: ReleaseState, at: float) -> Release:
    tag = f"v{n // 10}.{n % 10}-{color}"
    error = "smoke_test: GET /ready answered 503" if state is S.FAILED else None
    return Release(id=new_release_id(app, tag), app=app, color=color, tag=tag,
                   version=tag.rsplit("-", 1)[0], commit=f"{n:040x}", forge="github",
                   delivery_id=f"{app}-{n}", repository=f"acme/{app}", state=state,
                   created_at=at, updated_at=at + 90, error=error, actor="github:bench")


def _snapshot(redis: Redis, app: str, now: float) -> None:
    colors = {c.value: {"deployment": f"{app}-{c}", "exists": True, "release": f"{app}-x-{c}",
                        "version": "v1.0", "tag": f"v1.0-{c}", "state": "live",
                        "image": f"registry.example.com/acme/{app}:v1.0", "ready": 2,
                        "desired": 2, "is_ready": True} for c in Color}
    redis.set(clusterview.key(app), clusterview.encode({
        "app": app, "namespace": "default", "taken_at": now, "started_at": now,
        "source": "idle", "live": "blue", "live_since": now - 3600, "colors": colors,
        "routes": {"virtual_service": f"{app}-blue-green", "exists": True, "default": "blue",
                   "test": None, "subsets": ["blue", "green"]},
        "drift": [], "error": None, "error_at": None}))


def measure(url: str, count: int, *, clients: int = 1) -> tuple[list[float], int]:
    """Latencies (ms) of `count` GETs from `clients` threads; the last answer's size."""
    sizes: list[int] = []

    def one(_: int) -> float:
        started = time.perf_counter()
        answer = stack.http("GET", url)
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status != 200:
            raise RuntimeError(f"GET {url}: {answer.status} {answer.body[:200]!r}")
        sizes.append(len(answer.body))
        return elapsed

    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, range(count)))
    return latencies, sizes[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    workdir = Path(__import__("tempfile").mkdtemp(prefix="bench-status-"))
    with Processes(workdir) as procs:
        redis_url = stack.start_redis(procs)
        path = stack.write_config(procs, config()["apps"])
        settings = parse_settings(config(), {"REDIS_URL": redis_url})
        redis = Redis.from_url(redis_url)
        seeded = seed(redis, settings)
        web = stack.start_web(procs, stack.product_env(redis_url, path), workers=2)
        results: dict[str, Any] = {"seeded": seeded, "requests": args.requests}
        measure(web + "/status", 30)  # warm-up: imports, connection pools
        for name, route in PATHS.items():
            latencies, size = measure(web + route, args.requests)
            results[name] = {**stack.summary(latencies), "bytes": size}
        latencies, size = measure(web + "/status", args.requests, clients=8)
        results["concurrent"] = {**stack.summary(latencies), "bytes": size, "clients": 8}
    for name in (*PATHS, "concurrent"):
        figures = results[name]
        print(f"{name:<11} median {figures['median']:>6} ms  p90 {figures['p90']:>6} ms  "
              f"p99 {figures['p99']:>6} ms  ({figures['n']} requests, {figures['bytes']} bytes)")
    print(f"wrote {stack.write_results('status_latency', results)}")


if __name__ == "__main__":
    main()
