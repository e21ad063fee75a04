"""The engine's public face: what the web side (and the CLI) may ask of the release engine.

Owns `Engine` and the values it speaks: `TagEvent` in, `Submitted`/`Queued` out,
`EngineError`s with an HTTP `status` and `code` for the web side to render. A
delivery's tag pushes are deduplicated, recorded and enqueued in one atomic Lua call
(`worker.submission`), so a crash or a lost connection leaves either all of it or
nothing. Commands are checked against
what Redis knows (`worker.commands`) and queued for the worker, which re-checks the
cluster. This module never talks to Kubernetes and never imports the steps.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from redis import Redis
from redis.client import Pipeline

from worker import notify, queueing, queuestatus, submission
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
from worker.releases import (
    AuditEntry,
    Note,
    Release,
    ReleaseState,
    ReleaseStore,
    is_release_id,
    watched,
)
from worker.submission import Submitted, TagEvent

__all__ = ["Action", "AuditEntry", "Color", "Engine", "EngineError", "InvalidCommand",
           "Queued", "Release", "ReleaseState", "StaleCommand", "Submitted", "TagEvent",
           "Unavailable", "UnknownApp", "UnknownRelease", "is_release_id", "redis_unavailable"]


@dataclass(frozen=True)
class Queued:
    """The answer to a command: the queued job, its place in the queue, and its release."""

    job_id: str
    position: int
    release: Release


JUMP_THE_QUEUE = frozenset({Action.ROLLBACK, Action.ABORT})
"""Commands queued at the front (rollback: SPEC §5.8; abort: `Engine.submit_command`)."""


class Engine:
    """Records and queues releases and commands in Redis; the worker does the rest."""

    def __init__(self, settings: Settings, redis: Redis, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.redis = redis
        self.clock = clock
        self.store = ReleaseStore(redis, clock=clock)
        self._submit = redis.register_script(submission.SUBMIT)

    def submit_tag(self, event: TagEvent) -> list[Submitted]:
        """Dedupe, record and enqueue one release per app the tag matches ([] if none does)."""
        return self.submit_tags([event])

    def submit_tags(self, events: Sequence[TagEvent], *,
                    count_as: str | None = None) -> list[Submitted]:
        """One delivery's pushes, in one atomic call (`worker.submission`): per matching
        app, a new release, or the original when the delivery or the commit was seen.
        `count_as` counts the delivery under that forge in the webhook metrics."""
        with redis_unavailable():
            planned = self.plan(events, count_as=count_as)
            if planned is None:
                return []
            [reply] = self._submit(args=submission.script_args([planned]))
            return submission.answers(planned, reply)

    def plan(self, events: Sequence[TagEvent], *,
             count_as: str | None = None) -> submission.Plan | None:
        """What `submit_tags` would send, for a caller that runs `submission.SUBMIT`
        on its own client (the web process's asyncio intake). Sends nothing: the
        asyncio front calls it on its event loop."""
        return submission.plan(self.settings, events, clock=self.clock,
                               count_as=count_as)

    def submit_command(self, app: str, action: Action | str, *, release: str | None,
                       color: Color | None = None, actor: str) -> Queued:
        """Check the command against Redis and queue it; rollback and abort go to the front.

        An abort waiting behind the queue would come too late: the release's own job runs
        first, deploys it (replacing the colour's standby) and may promote it itself. At the
        front it runs before a queued release starts; a release already running sees it
        between its steps (`worker.jobs`)."""
        config = self.app_config(app)
        action = Action.parse(action)
        target = self.resolve(app, action, release=release, color=color)
        with redis_unavailable():
            color_value = (color or target.color).value if action is Action.DECOMMISSION else None
            def queue_command(pipe: Pipeline) -> str:
                behind = None
                if action is Action.ABORT:  # at the front, but behind a rollback
                    behind = queueing.front_rollback(pipe, config.queue)
                pipe.multi()
                job_id = queueing.enqueue_command(
                    pipe, self.redis, config, action=action.value, release_id=target.id,
                    color=color_value, actor=actor, at_front=action in JUMP_THE_QUEUE,
                    behind=behind)
                self.store.queue_note(pipe, target, Note(
                    actor=actor, step=action.value,
                    message=f"{action.value} requested by {actor}"))
                return job_id
            # an abort's place is read from the queue: it is WATCHed until the write
            job_id = watched(self.redis, [queueing.queue_key(config.queue)]
                             if action is Action.ABORT else [], queue_command)
            place = queueing.position(self.redis, config.queue, job_id)
            return Queued(job_id=job_id, position=place or 0,  # 0: a worker took it already
                          release=target)

    def resolve(self, app: str, action: Action | str, *, release: str | None,
                color: Color | None = None) -> Release:
        """The release a command would act on, checked as `submit_command` checks it (the one
        named, or the one the app's state implies); nothing is queued."""
        config = self.app_config(app)
        with redis_unavailable():
            return resolve_target(self.store, config, Action.parse(action), release_id=release,
                                  color=color)

    def resend_chat_message(self, release_id: str) -> None:
        """Have the worker's notifier send the release's Slack message again, as the release
        is now, even if that is what it last sent: a click's `response_url` reply rewrote
        the message, maybe after the notifier's last update (`worker.notify.ask_resend`)."""
        with redis_unavailable():
            notify.ask_resend(self.redis, release_id, now=self.clock())

    def get_release(self, release_id: str) -> Release | None:
        with redis_unavailable(reading=True):
            return self.store.get(release_id)

    def audit_lengths(self, release_ids: Sequence[str]) -> list[int]:
        """How many entries each release's audit trail has."""
        with redis_unavailable(reading=True):
            return self.store.audit_lengths(release_ids)

    def audit(self, release_id: str) -> list[AuditEntry]:
        with redis_unavailable(reading=True):
            return self.store.audit(release_id)

    def occupant_for(self, app: str, color: Color) -> Release | None:
        """The release that last deployed into `app`'s `color` (`ReleaseStore.occupant_for`):
        the one a release message shows as its other colour, as the notifier renders it."""
        with redis_unavailable(reading=True):
            return self.store.occupant_for(app, color)

    def list_releases(self, *, app: str | None = None, state: ReleaseState | None = None,
                      limit: int = 100) -> list[Release]:
        """Newest first."""
        with redis_unavailable(reading=True):
            return self.store.recent(app=app, state=state, limit=limit)

    def awaiting(self, app: str) -> list[Release]:
        """`app`'s releases awaiting promotion, newest first."""
        self.app_config(app)
        return self.list_releases(app=app, state=ReleaseState.AWAITING_PROMOTION)

    def queue_status(self) -> list[dict[str, Any]]:
        """Per queue: the running job, waiting jobs, failed jobs and whether a worker is alive."""
        with redis_unavailable(reading=True):
            return queuestatus.describe(self.redis, self.settings, self.store)

    def app_config(self, name: str) -> AppConfig:
        """The configured app `name`; `UnknownApp` (404) if there is none."""
        config = self.settings.apps.get(name)
        if config is None:
            known = ", ".join(sorted(self.settings.apps))
            raise UnknownApp(f"no app named {name!r} is configured (apps: {known})")
        return config


@contextlib.contextmanager
def redis_unavailable(*, reading: bool = False) -> Iterator[None]:
    """Any Redis failure becomes `Unavailable` (503): nothing was half-written. `reading`:
    the answer says what could not be read, not that nothing was changed."""
    try:
        yield
    except redis.exceptions.RedisError as e:
        if reading:
            raise Unavailable(f"Redis is unavailable, so the releases cannot be read: {e}") from e
        raise Unavailable("Redis is unavailable or refused the write; nothing was changed: "
                          f"{e}") from e
