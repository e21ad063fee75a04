"""Forgetting old releases: what `bluegreen prune` removes from Redis, and what it keeps.

Release records stay in Redis until pruned (SPEC §4: they survive restarts). `prune`
removes the releases that reached an end state (rejected, failed, superseded, aborted,
decommissioned: states with no exits) before a cut-off: each one's record, audit trail,
index entries and chat message records (`worker.notify`, `worker.mattermost`), in one
MULTI/EXEC per release (`ReleaseStore.forget`). It keeps, whatever their age, the
releases the engine still reads to decide:

- the one that holds its colour (`ReleaseStore.occupant_for`): its Deployment may still
  run, and a decommission or the next deploy is checked against it;
- the newest release recorded into each colour (`ReleaseStore.latest_for`), by which a
  queued release finds out that a newer one was recorded for its colour.

Live, standby and rolled-back releases are never ended, so never pruned, nor is anything
queued, running or awaiting promotion. The delivery and tag dedupe keys expire on their
own after `worker.submission.DEDUPE_TTL`. A release that changes while it is being
pruned is left as it is (`forget` answers False).

It runs when someone runs `bluegreen prune`, and on its own when `BLUEGREEN_RETENTION`
is set (`90d`): a worker sidecar (`start`, `worker.sidecars`) then prunes what ended
longer ago than that, at most once an `INTERVAL` among every worker sharing the Redis
(the first to take `RAN_KEY` for the interval does it), and logs what it removed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from redis import Redis

from worker.colors import Color
from worker.config import Settings
from worker.mattermost import POST_KEY
from worker.notify import MESSAGE_KEY
from worker.releases import Release, ReleaseStore

log = logging.getLogger(__name__)

PAGE = 500
INTERVAL = 3600.0  # s between automatic passes (BLUEGREEN_RETENTION), among all workers
RAN_KEY = "bluegreen:retention:ran"  # who took the current interval's pass; expires with it


@dataclass
class Outcome:
    """What a pass removed (or, dry, would remove) and what it kept, with why."""

    removed: list[Release] = field(default_factory=list)
    kept: dict[str, list[Release]] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)

    def keep(self, why: str, release: Release) -> None:
        self.kept.setdefault(why, []).append(release)


def prune(store: ReleaseStore, *, before: float, apps: set[str] | None = None,
          dry_run: bool = False,
          progress: Callable[[int, int], None] = lambda done, total: None) -> Outcome:
    """Remove the releases of `apps` (None: every app) that ended before `before`, as the
    module docstring says; `dry_run`: only say which. `progress(done, total)` is called
    after every page of releases looked at."""
    outcome = Outcome()
    protected: dict[tuple[str, Color], dict[str, str]] = {}
    ids = store.ended_before(before)
    for done, page in _pages(ids):
        for release in store.get_many(page):
            if not release.state.is_terminal or release.updated_at >= before or (
                    apps is not None and release.app not in apps):
                continue
            why = _protected(store, protected, release)
            if why is not None:
                outcome.keep(why, release)
            elif dry_run or store.forget(release, also=_chat_keys(release.id)):
                outcome.removed.append(release)
            else:
                outcome.changed.append(release.id)
        progress(done, len(ids))
    return outcome


def _pages(ids: list[str]) -> Iterator[tuple[int, list[str]]]:
    for start in range(0, len(ids), PAGE):
        page = ids[start:start + PAGE]
        yield start + len(page), page


def _protected(store: ReleaseStore, cache: dict[tuple[str, Color], dict[str, str]],
               release: Release) -> str | None:
    """Why `release` must stay (None: it may go); read once per app and colour."""
    key = (release.app, release.color)
    if key not in cache:
        found: dict[str, str] = {}
        newest = store.latest_for(*key)
        if newest is not None:
            found[newest.id] = "newest of its colour"
        occupant = store.occupant_for(*key)
        if occupant is not None:
            found[occupant.id] = "holds its colour"
        cache[key] = found
    return cache[key].get(release.id)


def _chat_keys(release_id: str) -> list[str]:
    return [MESSAGE_KEY.format(release=release_id), POST_KEY.format(release=release_id)]


def start(settings: Settings, redis: Redis, stop: threading.Event) -> threading.Thread:
    """The sidecar: prune automatically while `BLUEGREEN_RETENTION` is set (else the
    thread ends at once). It runs in the sidecars' own process (`worker.sidecars`)."""
    thread = threading.Thread(target=keep_pruning, args=(settings, redis, stop),
                              name="bluegreen-retention", daemon=True)
    thread.start()
    return thread


def keep_pruning(settings: Settings, redis: Redis, stop: threading.Event, *,
                 every: float = INTERVAL, clock: Callable[[], float] = time.time) -> None:
    """Until `stop`, every `every` seconds: if no worker has taken this interval's pass
    (`RAN_KEY`), take it and prune what ended `settings.retention` ago or earlier. A
    failure (Redis away, say) is logged and the next interval tries again."""
    if settings.retention is None:
        return
    store = ReleaseStore(redis, clock=clock)
    me = f"{socket.gethostname()}-{os.getpid()}"
    while not stop.is_set():
        try:
            if redis.set(RAN_KEY, me, nx=True, ex=max(1, round(every))):
                _pass(store, before=clock() - settings.retention)
        except Exception:  # a sidecar never stops on an error (worker.sidecars)
            log.exception("retention: the automatic prune failed; trying again in %g s",
                          every)
        stop.wait(every)


def _pass(store: ReleaseStore, *, before: float) -> None:
    outcome = prune(store, before=before)
    kept = sum(len(releases) for releases in outcome.kept.values())
    log.info("retention: removed %d release(s) that ended before %s (BLUEGREEN_RETENTION); "
             "kept %d the engine still reads; %d changed meanwhile and were left",
             len(outcome.removed), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(before)),
             kept, len(outcome.changed))
