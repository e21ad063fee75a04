"""The jobs rq runs: a release's automatic steps, and an operator's command.

Owns the sequencing around `worker.steps`: state transitions and audit entries (actor
"worker" for automatic steps, the requester for commands), superseding, failing a
release safely (test route removed, live traffic untouched, a snapshot of the routes
and Deployments recorded), and turning stale or refused commands into a result instead
of a crash. Each job returns `{"result": ..., "message": ...}` (rq keeps it):
`run_release` → awaiting_promotion | live | rejected | failed | superseded | skipped | done
(an abort asked for while it ran, done by the release's job);
`run_command` → done | stale | failed.

`run_release` is all of a release's automatic steps in ONE job (SPEC §5.5); it also
resumes a release a dead worker left mid-step, since every step is idempotent
(`worker.recovery` re-runs what a dead worker left, when the next one starts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job, get_current_job

from worker import snapshot, steps
from worker.colors import Color
from worker.config import Settings, load_settings
from worker.kube import Cluster, KubeError
from worker.machine import ReleaseState
from worker.queueing import (
    waiting_command,
)
from worker.releases import TAKES_COLOUR_STEP, Move, Release, ReleaseStore
from worker.steps import Context, Stale, StepFailed

log = logging.getLogger(__name__)

S = ReleaseState
ACTOR = "worker"
Result = dict[str, str]
PATH = (S.QUEUED, S.CHECKING, S.DEPLOYING, S.TESTING, S.AWAITING_PROMOTION)
ABORTABLE = frozenset({S.QUEUED, S.CHECKING, S.AWAITING_PROMOTION})
"""Where an abort job (or the release's own job, `abort_if_asked`) can drop a release."""


@dataclass(frozen=True)
class Session:
    """Settings and records for one job."""

    settings: Settings
    redis: Redis
    store: ReleaseStore

    @classmethod
    def open(cls) -> Session:
        settings = load_settings()
        job = get_current_job()
        redis = job.connection if job is not None else Redis.from_url(settings.redis_url)
        return cls(settings, redis, ReleaseStore(redis))

    @contextmanager
    def context(self, app: str, user_agent: str) -> Iterator[Context]:
        """A step context with its own Cluster, named `user_agent` in the API's logs."""
        cluster = Cluster(kubeconfig=self.settings.kubeconfig, user_agent=user_agent)
        try:
            yield Context(self.settings.apps[app], cluster, self.store, self.settings.ingress_url)
        finally:
            snapshot.after_job(self.redis, self.settings.apps[app], cluster, self.store)
            cluster.close()


def result(outcome: str, message: str) -> Result:
    log.info("%s: %s", outcome, message)
    return {"result": outcome, "message": message}


# -- run_release ------------------------------------------------------------------------------


def run_release(release_id: str) -> Result:
    """Sanity check, deploy, smoke test, then await promotion (or promote: auto_promote)."""
    return release_job(Session.open(), release_id)


def release_job(session: Session, release_id: str) -> Result:
    release = session.store.get(release_id)
    if release is None:
        return result("skipped", f"no release {release_id} is recorded")
    if release.state not in PATH[:-1]:
        return result("skipped", f"{release_id} is already {release.state}")
    if release.app not in session.settings.apps:
        why = f"app {release.app} is no longer configured; " + (
            "nothing was applied" if release.state is S.QUEUED else
            f"what it had applied (its {release.color} Deployment and test route, if any) is "
            "left on the cluster: without the app's config nothing can be cleaned up")
        session.store.transition(release_id, S.FAILED, actor=ACTOR, step="checking",
                                 message=why, error=why)
        return result("failed", why)
    with session.context(release.app, f"bluegreen/{release_id}") as ctx:
        newer = newer_release(ctx, release)
        if newer is not None:
            why = f"a newer release {newer.id} ({newer.tag}) for {release.color} was recorded"
            ctx.store.transition(release_id, S.SUPERSEDED, actor=ACTOR, step="supersede",
                                 message=f"superseded by {newer.id} ({newer.tag}), recorded "
                                 f"for {release.color} before this one ran; skipped without "
                                 "changing the cluster")
            return result("superseded", why)
        return run_steps(ctx, release)


def newer_release(ctx: Context, release: Release) -> Release | None:
    """A newer release into the same colour, for a release that has not started yet.

    Only the newest release of a colour is deployed: tags pushed together may be queued
    in another order than they were recorded in, and an older one must never replace a
    newer one's Deployment.
    """
    newest = ctx.store.latest_for(release.app, release.color)
    if release.state is S.QUEUED and newest is not None and newest.id != release.id:
        return newest
    return None


def take_colour(ctx: Context, release: Release) -> None:
    """Just before its Deployment is applied, the release takes its colour: the older ones
    waiting for it are superseded, and its audit trail says so (`ReleaseStore.took_colour`).

    Not earlier: a release rejected by its check, or failing before this point (its Service
    refused, say), leaves those releases, their Deployment and test route as they were."""
    supersede_older(ctx, release)
    if not ctx.store.took_colour(release.id):  # (a resumed release took it already)
        ctx.store.note(release.id, actor=ACTOR, step=TAKES_COLOUR_STEP, message=(
            f"applying Deployment {ctx.namespace}/{ctx.app.deployment(release.color)}: "
            f"{release.color} holds this release from now on"))


def supersede_older(ctx: Context, release: Release) -> None:
    """Older releases into the same colour that wait (queued or for promotion) are dropped."""
    for old in ctx.store.in_states([S.QUEUED, S.AWAITING_PROMOTION]):
        if (old.app == release.app and old.color is release.color and old.id != release.id
                and (old.created_at, old.id) < (release.created_at, release.id)):
            ctx.store.transition(old.id, S.SUPERSEDED, actor=ACTOR, step="supersede",
                                 message=f"superseded by {release.id} ({release.tag}), which "
                                 f"takes {release.color} and its test route")


def run_steps(ctx: Context, release: Release) -> Result:
    step, live = "sanity_check", None
    try:
        release = enter(ctx, release, S.CHECKING, step)
        live = steps.sanity_check(ctx, release)
        if (aborted := abort_if_asked(ctx, release)) is not None:
            return aborted  # asked while it was being checked: it never deploys
        step = "deploy"
        release = enter(ctx, release, S.DEPLOYING, step)
        try:
            steps.deploy(ctx, release, live, taking=lambda: take_colour(ctx, release))
        finally:
            retire_replaced(ctx, release)
        step = "smoke_test"
        release = enter(ctx, release, S.TESTING, step)
        steps.smoke_test(ctx, release)
    except steps.Rejected as e:
        return reject(ctx, release, str(e))
    except RedisError:
        raise
    except Exception as e:  # any failure must end in `failed`, never a release stuck mid-step
        return fail(ctx, release, step, e, live)
    release = ctx.store.transition(
        release.id, S.AWAITING_PROMOTION, actor=ACTOR, step="smoke_test",
        message=f"smoke tests passed; {release.tag} awaits promotion on {release.color} "
        "(requests with Cookie test=true reach it)", route_after=routes_or_none(ctx))
    if (aborted := abort_if_asked(ctx, release)) is not None:
        return aborted  # asked while it deployed or was tested: never promoted
    if ctx.app.auto_promote:
        return auto_promote(ctx, release)
    return result("awaiting_promotion", f"{release.id} awaits promotion on {release.color}")


def abort_if_asked(ctx: Context, release: Release) -> Result | None:
    """Abort `release` now if an abort of it waits in the queue (None: none does).

    Abort jobs go to the front of the queue, but a release whose job is already running
    would only meet its abort once the job ends: deployed, and promoted by auto_promote.
    So the job looks between its steps and aborts as the requester asked; their job,
    done here, is cancelled. A release resumed past its check (deploying or testing
    after a crash) meets it at the next look, once it awaits promotion. If the abort
    cannot be done now, this job stops (never promoting) and leaves the abort's own job,
    next in the queue, to try again and say why."""
    redis = ctx.store.redis
    job_id = waiting_command(redis, ctx.app.queue, release.id, "abort")
    if job_id is None:
        return None
    current = ctx.store.get(release.id) or release
    if current.state not in ABORTABLE:
        return None
    try:
        job: Job | None = Job.fetch(job_id, connection=redis)
    except NoSuchJobError:
        job = None
    actor = str(job.args[4]) if job is not None and len(job.args) > 4 else ACTOR
    try:
        outcome = abort(ctx, current, actor)
    except (Stale, KubeError) as e:
        log.warning("release %s: the abort %s asked for could not be done now: %s",
                    release.id, actor, e)
        return result(current.state.value, f"{release.id} stopped for the abort {actor} asked "
                      f"for, which could not be done now ({e}); its job, next, tries again")
    if job is not None:
        job.cancel()
    return outcome


def auto_promote(ctx: Context, release: Release) -> Result:
    """Promote at once (auto_promote); if that cannot be done the release keeps awaiting."""
    actor = f"{ACTOR} (auto_promote)"
    try:
        return promote(ctx, release, actor)
    except RedisError:
        raise
    except Exception as e:  # it passed its tests: a person can still promote it
        why = f"auto_promote failed, the release awaits a person's promote: {e}"
        ctx.store.note(release.id, actor=actor, step="promote", message=why)
        return result("awaiting_promotion", why)


def routes_or_none(ctx: Context) -> steps.Route | None:
    """The routes for the audit trail; None when the cluster cannot be read just now."""
    try:
        return steps.route_state(ctx)
    except KubeError as e:
        log.warning("cannot read the routes for the audit trail: %s", e)
        return None


def enter(ctx: Context, release: Release, state: ReleaseState, step: str) -> Release:
    """Move forward to `state`; a resumed release already past it just records the step.

    The snapshot of the cluster comes after: it reads the cluster, and for that long the
    release would show the state it left (`queued` with its job running)."""
    current = ctx.store.get(release.id) or release
    if PATH.index(current.state) < PATH.index(state):
        moved = ctx.store.transition(release.id, state, actor=ACTOR, step=step,
                                     message=f"{step} started")
    else:
        moved = ctx.store.set_step(release.id, step)
    snapshot.step_starts(ctx, release.id, step)
    return moved


def retire_replaced(ctx: Context, release: Release) -> None:
    """Once the colour's Deployment carries this release, the standby (or rolled back)
    release it held is gone: decommissioned. Read from the cluster after the deploy, so a
    release resumed after a crash (its Deployment applied before) retires it too."""
    try:
        now_on = steps.release_on(ctx, release.color)
    except KubeError as e:
        log.warning("release %s: cannot tell whether %s's standby was replaced: %s",
                    release.id, release.color, e)
        return
    if now_on != release.id:
        return
    for previous in ctx.store.in_states([S.STANDBY, S.ROLLED_BACK]):
        if (previous.app, previous.color) == (release.app, release.color):
            ctx.store.transition(previous.id, S.DECOMMISSIONED, actor=ACTOR, step="deploy",
                                 message=f"its Deployment {ctx.app.deployment(release.color)} "
                                 f"was replaced by {release.id} ({release.tag}); no rollback "
                                 "to it now")


def reject(ctx: Context, release: Release, why: str) -> Result:
    current = ctx.store.get(release.id) or release
    to = S.REJECTED if current.state is S.CHECKING else S.FAILED  # FAILED: a resumed release
    ctx.store.transition(release.id, to, actor=ACTOR, step="sanity_check", message=why,
                         error=why)
    return result(to.value, why)


def fail(ctx: Context, release: Release, step: str, error: Exception,
         live: Color | None) -> Result:
    """Record the failure with a snapshot; take the release's test route off the cluster.

    A release that failed before it applied its Deployment has nothing on the cluster: the
    colour's test route, if any, is an older release's, and is left alone."""
    reason = str(error) if isinstance(error, StepFailed | KubeError) else (
        f"unexpected {type(error).__name__}: {error}")
    if not isinstance(error, StepFailed | KubeError):
        log.exception("release %s: %s failed unexpectedly", release.id, step)
    before = after = None
    if not ctx.store.holds_colour(release):
        message = (f"{step} failed: {reason}. It had not applied its Deployment: nothing of it "
                   "was on the cluster, and nothing there was changed.")
    else:
        try:
            before = steps.route_state(ctx)
            if live is None and before["default"] is not None:
                # a default route edited by hand to another subset: nothing is touched
                live = Color.parse(before["default"])
            steps.remove_test_route(ctx, release, live)
            after = steps.route_state(ctx)
            cleanup = ("its test route was removed" if before["test"] != after["test"]
                       else "no test route of it was in place")
        except (KubeError, ValueError) as e:
            cleanup = f"cleaning up failed too ({e}); check the VirtualService by hand"
        message = (f"{step} failed: {reason}. Live traffic untouched; {cleanup}; its "
                   "Deployment, if created, is left for inspection (decommission deletes it).")
    ctx.store.transition(release.id, S.FAILED, actor=ACTOR, step=step, message=message,
                         route_before=before, route_after=after, error=f"{step}: {reason}")
    return result("failed", message)


# -- run_command ------------------------------------------------------------------------------


def run_command(app: str, action: str, release_id: str | None, color: str | None,
                actor: str) -> Result:
    """promote | rollback | decommission | abort, re-checked against the cluster first."""
    return command_job(Session.open(), app, action, release_id, color, actor)


def command_job(session: Session, app: str, action: str, release_id: str | None,
                color: str | None, actor: str) -> Result:
    handler = COMMANDS.get(action)
    release = session.store.get(release_id) if release_id else None
    if handler is None or app not in session.settings.apps:
        return result("failed", f"cannot {action} for app {app}: unknown action or app")
    if release_id and (release is None or release.app != app):
        return result("stale", f"{app} has no release {release_id}")
    with session.context(app, f"bluegreen/{release_id or app} ({action})") as ctx:
        snapshot.step_starts(ctx, release_id or app, action, look=False)
        try:
            return handler(ctx, release, color, actor)
        except Stale as e:
            return refuse(ctx, release, action, actor, "stale", f"{action} refused: {e}")
        except RedisError:
            raise
        except Exception as e:  # a command that cannot finish says why; rq sees no crash
            log.exception("%s of %s failed", action, release_id)
            return refuse(ctx, release, action, actor, "failed", f"{action} failed: {e}")


def refuse(ctx: Context, release: Release | None, action: str, actor: str, outcome: str,
           why: str) -> Result:
    message = f"{why}; nothing was changed" if outcome == "stale" else why
    if release is not None:
        ctx.store.note(release.id, actor=actor, step=action, message=message)
    return result(outcome, message)


def require(release: Release | None, action: str) -> Release:
    if release is None:
        raise Stale(f"{action} needs a release id")
    return release


def promote(ctx: Context, release: Release | None, actor: str) -> Result:
    """Switch default traffic to the release (re-checked), make it live, the old one standby."""
    release = require(release, "promote")
    before, after = steps.promote(ctx, release)
    # the one live before stands by, and this one is live: in one transaction
    ctx.store.transitions([
        *(Move(old.id, S.STANDBY, f"{release.tag} took default traffic; {old.color} stays up, "
               "idle, as the rollback target")
          for old in ctx.store.in_states([S.LIVE])
          if old.app == release.app and old.id != release.id),
        Move(release.id, S.LIVE, f"default traffic goes to {release.color} ({release.tag})"),
    ], actor=actor, step="promote", route_before=before, route_after=after)
    return result("done", f"{release.id} is live on {release.color}")


def rollback(ctx: Context, release: Release | None, actor: str) -> Result:
    """Route default traffic back to the standby release; the undone one is rolled back."""
    release = require(release, "rollback")
    target = steps.rollback_target(ctx, release)
    before, after = steps.switch_default(ctx, target)
    ctx.store.transitions([  # in one transaction: never a moment with no release live
        Move(release.id, S.ROLLED_BACK,
             f"default traffic went back to {target.color} ({target.tag})"),
        Move(target.id, S.LIVE, f"live again: {release.tag} was rolled back"),
    ], actor=actor, step="rollback", route_before=before, route_after=after)
    return result("done", f"rolled back {release.id}; {target.id} is live on {target.color}")


def decommission(ctx: Context, release: Release | None, color: str | None,
                 actor: str) -> Result:
    """Delete the idle colour's Deployment after checking it carries the expected release."""
    target = Color.parse(color) if color else require(release, "decommission").color
    before = steps.route_state(ctx)
    deleted = steps.decommission(ctx, target, release)
    what = f"Deployment {ctx.namespace}/{ctx.app.deployment(target)}"
    message = f"{what} deleted" if deleted else f"{what} was already gone"
    if release is not None and release.state in (S.STANDBY, S.ROLLED_BACK):
        ctx.store.transition(release.id, S.DECOMMISSIONED, actor=actor, step="decommission",
                             message=message, route_before=before,
                             route_after=routes_or_none(ctx))
    elif release is not None:
        ctx.store.note(release.id, actor=actor, step="decommission", message=message)
    return result("done", message)


def abort(ctx: Context, release: Release | None, actor: str) -> Result:
    """Drop a release that is not live: test route and Deployment gone, state aborted.

    It is queued (its job has not run), checking (its job met the abort before deploying,
    `abort_if_asked`) or awaiting promotion. One deploying or being tested is refused:
    its job is running (it meets the abort itself), or died and is resumed by recovery
    before the abort's job runs."""
    release = require(release, "abort")
    if release.state not in ABORTABLE:
        raise Stale(f"{release.id} is {release.state}: only a release that is queued, being "
                    "checked or awaiting promotion can be aborted")
    before = after = None
    if release.state is S.AWAITING_PROMOTION:
        before, after = steps.abort(ctx, release)
        message = f"aborted; {release.color}'s test route and Deployment removed"
    else:
        message = (f"aborted before it {'ran' if release.state is S.QUEUED else 'deployed'}; "
                   "nothing of it was on the cluster")
    ctx.store.transition(release.id, S.ABORTED, actor=actor, step="abort", message=message,
                         route_before=before, route_after=after)
    return result("done", f"{release.id} aborted")


Command = Callable[[Context, Release | None, str | None, str], Result]
COMMANDS: dict[str, Command] = {
    "promote": lambda ctx, release, color, actor: promote(ctx, release, actor),
    "rollback": lambda ctx, release, color, actor: rollback(ctx, release, actor),
    "decommission": decommission,
    "abort": lambda ctx, release, color, actor: abort(ctx, release, actor),
}
