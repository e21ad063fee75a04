"""Operator commands before they are queued: `Action`, the engine's errors, and the checks.

`resolve_target()` finds the release a command acts on (the one named, or the one
the app's state implies) and refuses, with a reason a person can act on, a command
that Redis already shows to be stale (SPEC §5.6): e.g. `release X is superseded by
Y`. The worker re-checks the cluster when the job runs; `worker.api` queues it.
"""

from __future__ import annotations

from enum import StrEnum

from worker.colors import Color
from worker.config import AppConfig
from worker.machine import ReleaseState
from worker.releases import Release, ReleaseStore

S = ReleaseState


class Action(StrEnum):
    """What a person can ask for."""

    PROMOTE = "promote"
    ROLLBACK = "rollback"
    DECOMMISSION = "decommission"
    ABORT = "abort"

    @classmethod
    def parse(cls, value: Action | str) -> Action:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(a.value for a in cls)
            raise InvalidCommand(f"unknown action {value!r} (actions: {names})") from None


ALLOWED: dict[Action, frozenset[ReleaseState]] = {
    Action.PROMOTE: frozenset({S.AWAITING_PROMOTION}),
    Action.ROLLBACK: frozenset({S.LIVE}),
    Action.DECOMMISSION: frozenset({S.STANDBY, S.ROLLED_BACK, S.FAILED, S.ABORTED,
                                    S.SUPERSEDED}),
    Action.ABORT: frozenset({S.QUEUED, S.CHECKING, S.DEPLOYING, S.TESTING,
                             S.AWAITING_PROMOTION}),
}
"""Release states from which each action may be queued."""


class EngineError(Exception):
    """A request the engine refuses; the web side renders `status`, `code` and the message."""

    status = 500
    code = "engine_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownApp(EngineError):
    status, code = 404, "unknown_app"


class UnknownRelease(EngineError):
    status, code = 404, "unknown_release"


class StaleCommand(EngineError):
    status, code = 409, "stale_command"


class InvalidCommand(EngineError):
    status, code = 400, "invalid_command"


class Unavailable(EngineError):
    status, code = 503, "redis_unavailable"


def resolve_target(store: ReleaseStore, app: AppConfig, action: Action, *,
                   release_id: str | None, color: Color | None) -> Release:
    """The release `action` acts on; raises UnknownRelease, InvalidCommand or StaleCommand."""
    if release_id is None:
        target = _implied(store, app, action, color)
    else:
        found = store.get(release_id)
        if found is None or found.app != app.name:
            raise UnknownRelease(f"app {app.name} has no release {release_id!r}")
        target = found
    if action is Action.DECOMMISSION:
        _check_on_color(store, app, target, color or target.color)
    if target.state not in ALLOWED[action]:
        raise StaleCommand(why_not(store, target, action))
    if action is Action.ROLLBACK:
        _check_standby(store, app, target)
    return target


def why_not(store: ReleaseStore, release: Release, action: Action) -> str:
    """Why `action` cannot act on `release` in its current state."""
    rid, state = release.id, release.state
    if state is S.SUPERSEDED:
        # The audit entry names the release that superseded this one; the newest recorded
        # into the colour since may be another (say, a tag rejected later).
        how = next((e.message for e in reversed(store.audit(rid))
                    if e.state_to == S.SUPERSEDED.value), "")
        if how.startswith("superseded by "):
            return f"release {rid} is {how}"
        return f"release {rid} is superseded" + (f": {how}" if how else "")
    if state is S.FAILED:
        return f"release {rid} failed: {release.error or 'see its audit trail'}"
    if state is S.LIVE and action is Action.DECOMMISSION:
        return (f"release {rid} is live on {release.color}: the live colour is never "
                "decommissioned")
    if state is S.AWAITING_PROMOTION and action is Action.DECOMMISSION:
        return f"release {rid} is awaiting promotion on {release.color}: abort it instead"
    allowed = " or ".join(sorted(s.value for s in ALLOWED[action]))
    return f"release {rid} is {state.value}; {action.value} needs a release that is {allowed}"


def _implied(store: ReleaseStore, app: AppConfig, action: Action,
             color: Color | None) -> Release:
    if action is Action.DECOMMISSION:
        if color is None:
            raise InvalidCommand("decommission needs a colour (blue or green)")
        occupant = store.occupant_for(app.name, color)
        if occupant is None:
            raise StaleCommand(f"no release of {app.name} has been deployed into {color}")
        return occupant
    wanted = S.LIVE if action is Action.ROLLBACK else S.AWAITING_PROMOTION
    candidates = store.recent(app=app.name, state=wanted)
    if len(candidates) != 1:
        names = ", ".join(r.id for r in candidates) or "none"
        raise StaleCommand(f"{action.value} needs exactly one {wanted.value} release of "
                           f"{app.name}; found {names}: name the release")
    return candidates[0]


def _check_on_color(store: ReleaseStore, app: AppConfig, release: Release, color: Color) -> None:
    if release.color is not color:
        raise StaleCommand(f"release {release.id} is on {release.color}, not {color}")
    occupant = store.occupant_for(app.name, color)
    if occupant is not None and occupant.id != release.id:
        raise StaleCommand(f"release {release.id} is no longer on {color}: {occupant.id} "
                           "was deployed into it since")


def _check_standby(store: ReleaseStore, app: AppConfig, release: Release) -> None:
    standby = [r for r in store.recent(app=app.name, state=S.STANDBY)
               if r.color is release.color.other()]
    if not standby:
        raise StaleCommand(f"nothing to roll back to: no standby release of {app.name} on "
                           f"{release.color.other()} (it was decommissioned or never live)")
