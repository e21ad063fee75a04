"""The release state machine: `ReleaseState`, the one `TRANSITIONS` table and `advance()`.

A release moves `queued → checking → deploying → testing → awaiting_promotion →
live`; the other states say how it left that path:

- `rejected`   the sanity check refused it (its colour is the live one);
- `failed`     a step failed; live traffic was left untouched;
- `superseded` a newer release for the same colour came before it was promoted;
- `aborted`    dropped by a person before it went live;
- `standby`    it was live and a newer release was promoted: its Deployment still
               runs, idle, as the rollback target (rollback makes it live again);
- `rolled_back` it was live and a person routed traffic back to the standby;
- `decommissioned` its idle Deployment was deleted (or replaced by a newer deploy).

So at most one release per app is `live`. Terminal states have no exits. Where the
records live is `worker.releases`; what runs between states is `worker.steps`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.releases import Release


class ReleaseState(StrEnum):
    """A release's state; the values are exactly the strings stored in Redis."""

    QUEUED = "queued"
    CHECKING = "checking"
    DEPLOYING = "deploying"
    TESTING = "testing"
    AWAITING_PROMOTION = "awaiting_promotion"
    LIVE = "live"
    STANDBY = "standby"
    REJECTED = "rejected"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"
    DECOMMISSIONED = "decommissioned"

    @property
    def is_terminal(self) -> bool:
        return not TRANSITIONS[self]

    @property
    def is_running(self) -> bool:
        """A job is (or should be) working on it right now."""
        return self in RUNNING


S = ReleaseState

TRANSITIONS: Mapping[ReleaseState, frozenset[ReleaseState]] = MappingProxyType({
    S.QUEUED: frozenset({S.CHECKING, S.SUPERSEDED, S.ABORTED, S.FAILED}),
    S.CHECKING: frozenset({S.DEPLOYING, S.REJECTED, S.ABORTED, S.FAILED}),
    S.DEPLOYING: frozenset({S.TESTING, S.FAILED}),
    S.TESTING: frozenset({S.AWAITING_PROMOTION, S.FAILED}),
    S.AWAITING_PROMOTION: frozenset({S.LIVE, S.SUPERSEDED, S.ABORTED, S.FAILED}),
    S.LIVE: frozenset({S.STANDBY, S.ROLLED_BACK}),
    S.STANDBY: frozenset({S.LIVE, S.DECOMMISSIONED}),
    S.ROLLED_BACK: frozenset({S.DECOMMISSIONED}),
    S.REJECTED: frozenset(),
    S.FAILED: frozenset(),
    S.SUPERSEDED: frozenset(),
    S.ABORTED: frozenset(),
    S.DECOMMISSIONED: frozenset(),
})

RUNNING = frozenset({S.CHECKING, S.DEPLOYING, S.TESTING})
"""States in which a job is working on the release (a crash leaves it here)."""

WAITING = frozenset({S.QUEUED, S.AWAITING_PROMOTION})
"""States in which a release waits for a worker or a person."""

DEPLOYED = frozenset({S.AWAITING_PROMOTION, S.LIVE, S.STANDBY, S.ROLLED_BACK})
"""States in which the release's Deployment stands on the cluster."""


def _reachable(start: ReleaseState, *, avoiding: ReleaseState | None = None
               ) -> frozenset[ReleaseState]:
    """The states a release in `start` can reach (`start` too), never passing `avoiding`."""
    seen, todo = {start}, [start]
    while todo:
        for state in TRANSITIONS[todo.pop()]:
            if state is not avoiding and state not in seen:
                seen.add(state)
                todo.append(state)
    return frozenset(seen)


_WITHOUT_DEPLOYING = _reachable(S.QUEUED, avoiding=S.DEPLOYING)
_SINCE_DEPLOYING = _reachable(S.DEPLOYING)
HAS_DEPLOYED = _SINCE_DEPLOYING - _WITHOUT_DEPLOYING
"""States only a release that started deploying reaches (from `deploying` on)."""
MAY_HAVE_DEPLOYED = _SINCE_DEPLOYING & _WITHOUT_DEPLOYING
"""Ends reached both before a deploy and after one (superseded, aborted, failed): the
release's audit trail says how far it went (`ReleaseStore.took_colour`)."""


class IllegalTransition(Exception):
    """The table does not allow this move; the message says from what to what."""

    def __init__(self, release_id: str, current: ReleaseState, to: ReleaseState) -> None:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "nothing"
        super().__init__(f"release {release_id} is {current.value} and cannot become "
                         f"{to.value} (from {current.value} it may become: {allowed})")
        self.release_id, self.current, self.to = release_id, current, to


def can_advance(current: ReleaseState, to: ReleaseState) -> bool:
    return to in TRANSITIONS[current]


def advance(release: Release, to: ReleaseState, *, now: float) -> Release:
    """`release` in state `to`, stamped `now`; raises `IllegalTransition` if the table forbids it.

    The running step is cleared when the release leaves the running states.
    """
    if not can_advance(release.state, to):
        raise IllegalTransition(release.id, release.state, to)
    step = release.step if to in RUNNING else None
    return dataclasses.replace(release, state=to, updated_at=now, step=step)
