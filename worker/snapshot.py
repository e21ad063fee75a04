"""Taking cluster snapshots: what each app's routes and Deployments are, and where they drift.

Owns writing `bluegreen:snapshot:<app>` (its shape and readers are `worker.clusterview`)
and the drift rules: a snapshot compares what the cluster holds with what the release
records say, so a change made outside the product (someone ran kubectl) shows up with
a description a person can act on. Snapshots are taken

- by jobs, through `step_starts` (each automatic step starts: the previous one is done)
  and `after_job` (the job is over), with the job's own `Cluster`;
- by a sidecar of the worker process (`start`) every `BLUEGREEN_SNAPSHOT_INTERVAL`
  seconds (default 15) for apps whose queue runs no job, so drift shows up while idle.

A write keeps the snapshot that *started* last (a slow idle read never overwrites what
a job saw after it). Taking a snapshot must never fail a release: the job hooks log and
swallow every error. Step timings for the metrics ride on the same hooks.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis import Redis, WatchError

from worker import clusterview, metrics, queueing
from worker.colors import Color
from worker.config import AppConfig, Settings
from worker.kube import Cluster, DeploymentInfo, KubeError, default_route_subset
from worker.machine import ReleaseState
from worker.manifests import TemplateError, release_variables
from worker.releases import Release, ReleaseStore
from worker.steps import Context, cookie_route_subset, referenced_subsets, subsets_of

log = logging.getLogger(__name__)

S = ReleaseState
Snapshot = clusterview.Snapshot
DEFAULT_INTERVAL = 15.0
SIDECAR_ATTEMPTS = 2  # an unreachable cluster is reported at the next round, not waited out
SIDECAR_TIMEOUT = 5.0  # seconds per API request: an unreachable cluster waits for the next round
STAGED = frozenset({S.CHECKING, S.DEPLOYING, S.TESTING, S.AWAITING_PROMOTION})
OCCUPANTS = frozenset({S.AWAITING_PROMOTION, S.STANDBY, S.ROLLED_BACK})


@dataclass(frozen=True)
class Observed:
    """What the cluster holds for one app."""

    vs_exists: bool
    default: str | None
    test: str | None
    subsets: tuple[str, ...]
    referenced: frozenset[str]
    deployments: Mapping[Color, DeploymentInfo | None]


@dataclass(frozen=True)
class Records:
    """What the release records say about one app."""

    live: Release | None
    deployed: Mapping[Color, Release | None]        # the last release deployed into each colour
    staged: Mapping[Color, tuple[Release, ...]]     # checking .. awaiting_promotion, by colour
    labelled: Mapping[str, Release]                 # releases the Deployments' labels name


def observe(cluster: Cluster, app: AppConfig) -> Observed:
    """Read the app's VirtualService, DestinationRule and both Deployments."""
    ns, name = app.namespace, app.virtual_service
    vs = cluster.get_virtual_service(namespace=ns, name=name)
    dr = cluster.get_destination_rule(namespace=ns, name=name)
    deployments = {c: cluster.get_deployment(namespace=ns, name=app.deployment(c)) for c in Color}
    return Observed(vs_exists=vs is not None, default=default_route_subset(vs) if vs else None,
                    test=cookie_route_subset(vs),
                    subsets=tuple(sorted(str(s.get("name")) for s in subsets_of(dr))),
                    referenced=frozenset(referenced_subsets(vs)), deployments=deployments)


def read_records(store: ReleaseStore, app: AppConfig, seen: Observed) -> Records:
    mine = [r for r in store.in_states([S.LIVE, *STAGED]) if r.app == app.name]
    labels = [d.release_id for d in seen.deployments.values() if d and d.release_id]
    return Records(
        live=next((r for r in reversed(mine) if r.state is S.LIVE), None),
        deployed={c: store.occupant_for(app.name, c) for c in Color},
        staged={c: tuple(r for r in mine if r.color is c and r.state in STAGED) for c in Color},
        labelled={r.id: r for r in store.get_many(labels)})


# -- drift ---------------------------------------------------------------------------------


def find_drift(app: AppConfig, seen: Observed, rec: Records) -> list[dict[str, Any]]:
    """Every difference between the cluster and the records, each with a message."""
    found = _route_drift(app, seen, rec)
    for color, release in _expected_occupants(rec).items():
        if not any(r.state.is_running for r in rec.staged[color]):  # a deploy replaces it now
            found += _deployment_drift(app, color, release, rec, seen.deployments[color])
    return found


def _drift(kind: str, color: str | Color | None, message: str) -> dict[str, Any]:
    return {"kind": kind, "color": None if color is None else str(color), "message": message}


def _route_drift(app: AppConfig, seen: Observed, rec: Records) -> list[dict[str, Any]]:
    vs, live, found = f"VirtualService {app.namespace}/{app.virtual_service}", rec.live, []
    if live is not None and not seen.vs_exists:
        found.append(_drift("route", live.color, f"{vs} is gone, but {_name(live)} is live on "
                            f"{live.color}: users get no route"))
    elif live is not None and seen.default != live.color.value:
        found.append(_drift("route", seen.default, f"{vs} sends default traffic to "
                            f"{seen.default or 'nothing'}, but the live release {_name(live)} "
                            f"is on {live.color}"))
    elif live is None and seen.default is not None:
        found.append(_drift("route", seen.default, f"{vs} sends default traffic to "
                            f"{seen.default}, but no release of {app.name} is live"))
    if seen.test is not None and not (seen.test in {c.value for c in Color}
                                      and rec.staged[Color(seen.test)]):
        found.append(_drift("test_route", seen.test, f"{vs} sends Cookie test=true traffic to "
                            f"{seen.test}, but no release is being tested or awaits promotion "
                            "there"))
    missing = sorted(seen.referenced - set(seen.subsets))
    if seen.vs_exists and missing:
        found.append(_drift("subset", None, f"{vs} routes to subset {', '.join(missing)}, which "
                            "its DestinationRule lacks: Istio answers 503 there"))
    return found


def _expected_occupants(rec: Records) -> dict[Color, Release]:
    """The release each colour's Deployment must carry, where the records are sure of one."""
    expected = {rec.live.color: rec.live} if rec.live is not None else {}
    for color, last in rec.deployed.items():
        if color not in expected and last is not None and last.state in OCCUPANTS:
            expected[color] = last
    return expected


def _deployment_drift(app: AppConfig, color: Color, release: Release, rec: Records,
                      info: DeploymentInfo | None) -> list[dict[str, Any]]:
    what = f"Deployment {app.namespace}/{app.deployment(color)}"
    role = "live" if release is rec.live else str(release.state).replace("_", " ")
    if info is None:
        return [_drift("deployment", color, f"{what} is gone, but the {role} release "
                       f"{_name(release)} runs there")]
    if info.release_id != release.id:
        return [_drift("release_label", color, f"{what} carries release "
                       f"{info.release_id or '(no release label)'}, but the records say the "
                       f"{role} release {_name(release)} runs there")]
    found = []
    image = _expected_image(app, release)
    if image is not None and info.image != image:
        found.append(_drift("image", color, f"{what} runs image {info.image}, but "
                            f"{_name(release)} was deployed with {image}"))
    if release is rec.live and not info.is_ready:
        found.append(_drift("not_ready", color, f"{what} serves live traffic with "
                            f"{info.ready_replicas}/{info.replicas} pods ready"))
    return found


def _expected_image(app: AppConfig, release: Release) -> str | None:
    try:
        return release_variables(app, release, live=None)["IMAGE"]
    except (TemplateError, KeyError):
        return None


def _name(release: Release) -> str:
    return f"{release.tag} ({release.id})"


# -- the document ----------------------------------------------------------------------------


def build(app: AppConfig, seen: Observed, rec: Records, *, now: float, source: str,
          previous: Snapshot | None) -> Snapshot:
    """The snapshot document (shape in `worker.clusterview`)."""
    live = seen.default if seen.default in {c.value for c in Color} else None
    return {
        "app": app.name, "namespace": app.namespace, "taken_at": now, "source": source,
        "live": live, "live_since": _live_since(live, rec, now, previous),
        "routes": {"virtual_service": app.virtual_service, "exists": seen.vs_exists,
                   "default": seen.default, "test": seen.test, "subsets": list(seen.subsets)},
        "colors": {c.value: _color_doc(app, c, seen.deployments[c], rec) for c in Color},
        "drift": find_drift(app, seen, rec), "error": None, "error_at": None}


def _live_since(live: str | None, rec: Records, now: float,
                previous: Snapshot | None) -> float | None:
    if live is None:
        return None
    if rec.live is not None and rec.live.color.value == live:
        return rec.live.updated_at
    if previous is not None and previous.get("live") == live and previous.get("live_since"):
        return float(previous["live_since"])
    return now


def _color_doc(app: AppConfig, color: Color, info: DeploymentInfo | None,
               rec: Records) -> dict[str, Any]:
    doc: dict[str, Any] = {"deployment": app.deployment(color), "exists": info is not None}
    if info is None:
        return doc
    release = rec.labelled.get(info.release_id or "")
    doc.update(release=info.release_id, image=info.image, ready=info.ready_replicas,
               desired=info.replicas, is_ready=info.is_ready,
               version=release.version if release else _image_tag(info.image),
               tag=release.tag if release else None,
               state=release.state.value if release else None)
    return doc


def _image_tag(image: str | None) -> str | None:
    tail = (image or "").rsplit("/", 1)[-1]
    return tail.split(":", 1)[1] if ":" in tail else None


# -- taking and storing ------------------------------------------------------------------------


def refresh(redis: Redis, cluster: Cluster, store: ReleaseStore, app: AppConfig, *,
            source: str, clock: Callable[[], float] = time.time) -> Snapshot | None:
    """Read the cluster and store the app's snapshot; None if a newer one landed meanwhile.

    A cluster error is stored as the snapshot's `error` (the last good view is kept).
    """
    started = clock()
    previous = clusterview.load(redis, app.name)
    try:
        seen = observe(cluster, app)
        doc = build(app, seen, read_records(store, app, seen), now=started, source=source,
                    previous=previous)
    except KubeError as e:
        doc = dict(previous or {"app": app.name, "namespace": app.namespace, "taken_at": None,
                                "live": None, "colors": {}, "drift": []})
        doc.update(error=str(e), error_at=started)
    return doc if _store_unless_newer(redis, app.name, doc, started) else None


def _store_unless_newer(redis: Redis, app: str, doc: Snapshot, started: float) -> bool:
    key = clusterview.key(app)
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                current = clusterview.decode(pipe.get(key))
                if current is not None and _started(current) > started:
                    return False
                pipe.multi()
                pipe.set(key, clusterview.encode({**doc, "started_at": started}))
                pipe.execute()
                return True
            except WatchError:
                continue


def _started(doc: Snapshot) -> float:
    value = doc.get("started_at") or doc.get("error_at") or doc.get("taken_at") or 0
    return float(value)


# -- hooks for jobs ----------------------------------------------------------------------------


def step_starts(ctx: Context, release_id: str, step: str, *, look: bool = True) -> None:
    """A step (or command) starts, so the previous one is done: time it; show the cluster."""
    redis = ctx.store.redis
    _quietly(f"timing {step} of {release_id}", lambda: metrics.step_started(
        redis, app=ctx.app.name, release_id=release_id, step=step))
    if look:
        _quietly(f"snapshot of {ctx.app.name}", lambda: refresh(
            redis, ctx.cluster, ctx.store, ctx.app, source="step"))


def after_job(redis: Redis, app: AppConfig, cluster: Cluster, store: ReleaseStore) -> None:
    """A job of `app` is over: close its step timing and show the cluster as it left it."""
    _quietly(f"timing a job of {app.name}", lambda: metrics.steps_ended(redis, app=app.name))
    _quietly(f"snapshot of {app.name}", lambda: refresh(redis, cluster, store, app,
                                                        source="job"))


def _quietly(what: str, action: Callable[[], Any]) -> None:
    try:
        action()
    except Exception:  # watching must never fail a release
        log.exception("%s failed; the release goes on", what)


# -- the idle sidecar ------------------------------------------------------------------------


def interval(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds between idle refreshes (`BLUEGREEN_SNAPSHOT_INTERVAL`, default 15)."""
    try:
        value = float(environ.get("BLUEGREEN_SNAPSHOT_INTERVAL") or DEFAULT_INTERVAL)
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value > 0 else DEFAULT_INTERVAL


def start(settings: Settings, redis: Redis, stop: threading.Event) -> threading.Thread:
    """The sidecar: refresh idle apps' snapshots until `stop` is set. It runs in the
    sidecars' own process (`worker.sidecars`), which never forks."""
    thread = threading.Thread(target=_loop, args=(settings, redis, stop, interval()),
                              name="bluegreen-snapshot", daemon=True)
    thread.start()
    return thread


def _loop(settings: Settings, redis: Redis, stop: threading.Event, every: float) -> None:
    cluster: Cluster | None = None
    failures = 0
    while not stop.is_set():
        try:
            cluster = cluster or Cluster(
                kubeconfig=settings.kubeconfig, attempts=SIDECAR_ATTEMPTS,
                request_timeout=SIDECAR_TIMEOUT, user_agent="bluegreen/snapshot")
            refresh_idle(settings, redis, cluster, every=every)
            failures = 0
        except Exception:  # Redis down, bad credentials: try again later, never crash
            failures += 1
            log.exception("snapshot refresh failed (%d in a row)", failures)
        stop.wait(every * min(2 ** failures, 8))
    if cluster is not None:
        cluster.close()


def refresh_idle(settings: Settings, redis: Redis, cluster: Cluster, *, every: float,
                 clock: Callable[[], float] = time.time) -> list[str]:
    """Refresh the apps whose queue runs no job and whose snapshot is older than `every`."""
    store, done = ReleaseStore(redis), []
    snapshots = clusterview.load_many(redis, sorted(settings.apps))
    for name, app in sorted(settings.apps.items()):
        previous = snapshots[name]
        fresh = previous is not None and clock() - _started(previous) < every
        if fresh or _is_busy(redis, app.queue):
            continue  # a job's own hooks show what it changes
        if refresh(redis, cluster, store, app, source="idle", clock=clock) is not None:
            done.append(name)
    return done


def _is_busy(redis: Redis, queue: str) -> bool:
    registry = queueing.get_queue(redis, queue).started_job_registry
    return bool(redis.zcard(registry.key))

