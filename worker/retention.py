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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from worker.colors import Color
from worker.mattermost import POST_KEY
from worker.notify import MESSAGE_KEY
from worker.releases import Release, ReleaseStore

PAGE = 500


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
