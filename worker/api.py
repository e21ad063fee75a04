"""The engine's public face: what the web side (and the CLI) may ask of the release engine.

Owns `Engine` and the values it speaks: `TagEvent` in, `Submitted`/`Queued` out,
`EngineError`s with an HTTP `status` and `code` for the web side to render. A tag
push is deduplicated, recorded and enqueued in one MULTI/EXEC, so a crash or a
lost connection leaves either all of it or nothing. Commands are checked against
what Redis knows (`worker.commands`) and queued for the worker, which re-checks the
cluster. This module never talks to Kubernetes and never imports the steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from redis import Redis, WatchError
from redis.client import Pipeline

from worker import queueing, queuestatus
from worker.colors import Color
from worker.commands import (
    Action,
    EngineError,
    InvalidCommand,
    StaleCommand,
    Unavailable,
    UnknownApp,
    UnknownRelease,
    resolve_target,
)
from worker.config import AppConfig, Settings
from worker.releases import AuditEntry, Release, ReleaseState, ReleaseStore, new_release_id

__all__ = ["Action", "AuditEntry", "Color", "Engine", "EngineError", "InvalidCommand",
           "Queued", "Release", "ReleaseState", "StaleCommand", "Submitted", "TagEvent",
           "Unavailable", "UnknownApp", "UnknownRelease"]

DEDUPE_TTL = 7 * 24 * 3600
SEEN_DELIVERY_KEY = "bluegreen:seen:delivery:{forge}:{digest}:{app}"
SEEN_TAG_KEY = "bluegreen:seen:tag:{app}:{digest}"


@dataclass(frozen=True)
class TagEvent:
    """A tag push as the web side parsed it from a forge's webhook."""

    forge: str
    delivery_id: str
    repository: str
    tag: str
    commit: str
    pusher: str


@dataclass(frozen=True)
class Submitted:
    """The answer for one matching app: the release, whether it was already known, its place."""

    release: Release
    duplicate: bool
    position: int | None  # 1 = next to run; None when not waiting in the queue


@dataclass(frozen=True)
class Queued:
    """The answer to a command: the queued job, its place in the queue, and its release."""

    job_id: str
    position: int
    release: Release


class Engine:
    """Records and queues releases and commands in Redis; the worker does the rest."""

    def __init__(self, settings: Settings, redis: Redis, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.redis = redis
        self.clock = clock
        self.store = ReleaseStore(redis, clock=clock)

    def submit_tag(self, event: TagEvent) -> list[Submitted]:
        """Dedupe, record and enqueue one release per app the tag matches ([] if none does)."""
        apps = [app for app in self.settings.apps_for_repository(event.repository)
                if app.color_for_tag(event.tag) is not None]
        if not apps:
            return []
        with _redis_errors():
            created, seen, places = self._record_new(event, apps)
            return [self._submitted(app, created.get(app.name), seen.get(app.name),
                                    places.get(app.name)) for app in apps]

    def submit_command(self, app: str, action: Action | str, *, release: str | None,
                       color: Color | None = None, actor: str) -> Queued:
        """Check the command against Redis and queue it; rollback goes to the front."""
        config = self._app(app)
        action = Action.parse(action)
        with _redis_errors():
            target = resolve_target(self.store, config, action, release_id=release, color=color)
            color_value = (color or target.color).value if action is Action.DECOMMISSION else None
            with self.redis.pipeline() as pipe:
                pipe.multi()
                job_id = queueing.enqueue_command(
                    pipe, self.redis, config, action=action.value, release_id=target.id,
                    color=color_value, actor=actor, at_front=action is Action.ROLLBACK)
                self.store.note(target.id, actor=actor, step=action.value, pipe=pipe,
                                message=f"{action.value} requested by {actor}")
                pipe.execute()
            place = queueing.position(self.redis, config.queue, job_id)
            return Queued(job_id=job_id, position=place or 0,  # 0: a worker took it already
                          release=target)

    def get_release(self, release_id: str) -> Release | None:
        with _redis_errors():
            return self.store.get(release_id)

    def audit(self, release_id: str) -> list[AuditEntry]:
        with _redis_errors():
            return self.store.audit(release_id)

    def list_releases(self, *, app: str | None = None, state: ReleaseState | None = None,
                      limit: int = 100) -> list[Release]:
        """Newest first."""
        with _redis_errors():
            return self.store.recent(app=app, state=state, limit=limit)

    def awaiting(self, app: str) -> list[Release]:
        """`app`'s releases awaiting promotion, newest first."""
        self._app(app)
        return self.list_releases(app=app, state=ReleaseState.AWAITING_PROMOTION)

    def queue_status(self) -> list[dict[str, Any]]:
        """Per queue: the running job, waiting jobs, failed jobs and whether a worker is alive."""
        with _redis_errors():
            return queuestatus.describe(self.redis, self.settings, self.store)

    def _app(self, name: str) -> AppConfig:
        config = self.settings.apps.get(name)
        if config is None:
            known = ", ".join(sorted(self.settings.apps))
            raise UnknownApp(f"no app named {name!r} is configured (apps: {known})")
        return config

    def _record_new(self, event: TagEvent, apps: list[AppConfig]
                    ) -> tuple[dict[str, Release], dict[str, Release], dict[str, int]]:
        """In one transaction: releases for apps not seen before; the originals of the rest.

        Also the new releases' queue positions: a release job goes to the back of its
        queue, so its position is the queue's length right after the push, read in the
        same MULTI/EXEC (no extra round trip, and no scan of a long queue).
        """
        keys = {app.name: _seen_keys(event, app) for app in apps}
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*[k for group in keys.values() for k in group])  # type: ignore[no-untyped-call]
                    seen = self._seen(pipe, keys)
                    pipe.multi()
                    created: dict[str, Release] = {}
                    lengths: dict[str, int] = {}  # app -> index of its LLEN in EXEC's answer
                    for app in apps:
                        if app.name not in seen:
                            created[app.name] = self._record(pipe, event, app, keys[app.name])
                            lengths[app.name] = len(pipe)
                            pipe.llen(queueing.get_queue(self.redis, app.queue).key)
                    answers = pipe.execute()
                    return created, seen, {a: int(answers[i]) for a, i in lengths.items()}
                except WatchError:
                    continue

    def _seen(self, pipe: Pipeline, keys: dict[str, list[str]]) -> dict[str, Release]:
        seen: dict[str, Release] = {}
        for app, group in keys.items():
            ids = [i for i in pipe.mget(group) if i is not None]
            original = self.store.get(_text(ids[0])) if ids else None
            if original is not None:
                seen[app] = original
        return seen

    def _record(self, pipe: Pipeline, event: TagEvent, app: AppConfig,
                keys: list[str]) -> Release:
        color = app.color_for_tag(event.tag)
        assert color is not None  # apps were filtered on it
        now = self.clock()
        release = Release(
            id=new_release_id(app.name, event.tag), app=app.name, color=color, tag=event.tag,
            version=app.version_for_tag(event.tag), commit=event.commit, forge=event.forge,
            delivery_id=event.delivery_id, repository=event.repository,
            state=ReleaseState.QUEUED, created_at=now, updated_at=now,
            actor=f"{event.forge}:{event.pusher}")
        self.store.add(release, pipe=pipe, message=(
            f"tag {event.tag} ({event.commit[:12]}) pushed to {event.repository} by "
            f"{event.pusher}; {event.forge} delivery {event.delivery_id}"))
        for key in keys:
            pipe.set(key, release.id, ex=DEDUPE_TTL)
        queueing.enqueue_release(pipe, self.redis, app, release_id=release.id,
                                 description=f"release {event.tag} of {app.name} into {color}")
        return release

    def _submitted(self, app: AppConfig, created: Release | None,
                   original: Release | None, place: int | None) -> Submitted:
        release = created or original
        assert release is not None
        if created is None and release.state is ReleaseState.QUEUED:
            place = queueing.position(self.redis, app.queue, queueing.release_job_id(release.id))
        return Submitted(release=release, duplicate=created is None, position=place)


def _seen_keys(event: TagEvent, app: AppConfig) -> list[str]:
    """Keys that mark this delivery, and this repository+tag+commit, as seen for `app`."""
    keys = [SEEN_TAG_KEY.format(app=app.name, digest=_digest(
        event.repository.casefold(), event.tag, event.commit))]
    if event.delivery_id:
        # One delivery may carry several tags (Bitbucket): it is seen once per tag.
        keys.insert(0, SEEN_DELIVERY_KEY.format(forge=event.forge, app=app.name,
                                                digest=_digest(event.delivery_id, event.tag)))
    return keys


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    """Any Redis failure becomes `Unavailable` (503): nothing was half-written."""
    try:
        yield
    except redis.exceptions.RedisError as e:
        raise Unavailable("Redis is unavailable or refused the write; nothing was changed: "
                          f"{e}") from e
