"""The blue-green steps, each a short list of `Cluster` calls, in the seed's order.

Owns what is applied and in which order, and the checks that keep SPEC §5 true:
`sanity_check` (the target colour is not live), `deploy` (Service, Deployment, rollout
wait, Gateway, routes, post-deploy hooks), `smoke_test` (HTTP through the ingress with
the test cookie, exec checks), and the operator actions `promote`, `rollback`,
`decommission` and `abort`, each of which re-reads the cluster first and raises
`Stale` when its release no longer matches what is there.

Routes change make-before-break (`apply_routes`): the DestinationRule is first widened
to every subset either the old or the new VirtualService uses, then the VirtualService is
applied, then the DestinationRule is narrowed to its final form; so the VirtualService
never names a subset the DestinationRule lacks (SPEC §5.4). Every step is idempotent:
running it again after a crash converges on the same cluster state.

A failed release's Deployment is left in place for inspection (its pods' logs and
events say why); it gets no traffic once the test route is gone, the next release into
that colour replaces it, and `decommission` deletes it. State transitions and the audit
trail are `worker.jobs`'; the objects themselves come from `worker.manifests`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.appconfig import AppConfig
from worker.colors import Color
from worker.kube import Cluster, KubeError, Manifest, default_route_subset, default_traffic_subsets
from worker.machine import ReleaseState
from worker.manifests import (
    ROUTE_FILE,
    TemplateError,
    deploy_manifests,
    render_file,
    route_manifests,
    variables,
)
from worker.releases import Release, ReleaseStore
from worker.smoke import SmokeFailed, check_http

Route = dict[str, Any]
SMOKE_RETRY_SECONDS = 10.0
POST_DEPLOY = "post_deploy"
# When a colour last stopped taking default traffic (a promote or rollback moved it).
LEFT_KEY = "bluegreen:app:{app}:left-default:{color}"
LEFT_TTL = 24 * 3600


class StepFailed(Exception):
    """A step could not complete; the message says what to look at."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


class Rejected(Exception):
    """The sanity check refused the release before anything was applied."""


class Stale(Exception):
    """A command's release no longer matches the cluster (or the records); nothing changed."""


@dataclass(frozen=True)
class Context:
    """What a step works with: the app, the cluster, the records, where the ingress is."""

    app: AppConfig
    cluster: Cluster
    store: ReleaseStore
    ingress_url: str | None = None

    @property
    def namespace(self) -> str:
        return self.app.namespace

    @property
    def routes(self) -> str:
        return self.app.virtual_service

    def progress(self, release: Release, step: str) -> None:
        """Show which step is running (only while the release is in a running state)."""
        if release.state.is_running:
            self.store.set_step(release.id, step)


# -- reading the cluster --------------------------------------------------------------------


def cookie_route_subset(virtual_service: Mapping[str, Any] | None) -> str | None:
    """The subset of the first route with a `match` (the cookie route), if any."""
    for route in ((virtual_service or {}).get("spec") or {}).get("http") or []:
        if route.get("match"):
            destinations = route.get("route") or [{}]
            return (destinations[0].get("destination") or {}).get("subset")
    return None


def referenced_subsets(virtual_service: Mapping[str, Any] | None) -> set[str]:
    routes = ((virtual_service or {}).get("spec") or {}).get("http") or []
    return {str(d["destination"]["subset"]) for r in routes for d in r.get("route") or []
            if (d.get("destination") or {}).get("subset")}


def subsets_of(rule: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return list(((rule or {}).get("spec") or {}).get("subsets") or [])


def route_state(ctx: Context) -> Route:
    """The routes and Deployments of the app, for the audit trail and failure snapshots."""
    vs = ctx.cluster.get_virtual_service(namespace=ctx.namespace, name=ctx.routes)
    dr = ctx.cluster.get_destination_rule(namespace=ctx.namespace, name=ctx.routes)
    deployments = {}
    for color in Color:
        info = ctx.cluster.get_deployment(namespace=ctx.namespace, name=ctx.app.deployment(color))
        deployments[color.value] = None if info is None else {
            "release": info.release_id, "image": info.image, "ready": info.is_ready,
            "rollout": info.summary()}
    return {"default": default_route_subset(vs) if vs else None,
            "test": cookie_route_subset(vs),
            "subsets": sorted(str(s.get("name")) for s in subsets_of(dr)),
            "deployments": deployments}


# -- applying ---------------------------------------------------------------------------------


def in_namespace(ctx: Context, manifests: list[Manifest]) -> list[Manifest]:
    """The manifests with the app's namespace where the template set none."""
    placed = []
    for manifest in manifests:
        meta = dict(manifest.get("metadata") or {})
        meta.setdefault("namespace", ctx.namespace)
        placed.append({**manifest, "metadata": meta})
    return placed


def apply_routes(ctx: Context, manifests: list[Manifest]) -> None:
    """Apply routing objects make-before-break: widen DestinationRules, switch, narrow."""
    manifests = in_namespace(ctx, manifests)
    rules = [m for m in manifests if m.get("kind") == "DestinationRule"]
    services = [m for m in manifests if m.get("kind") == "VirtualService"]
    for other in (m for m in manifests if m not in rules and m not in services):
        ctx.cluster.apply(manifest=other)
    widened = [_widened(ctx, rule) for rule in rules]
    for rule in widened:
        ctx.cluster.apply(manifest=rule)
    used: set[str] = set()
    for service in services:
        used |= referenced_subsets(ctx.cluster.apply(manifest=service))
    for rule, wide in zip(rules, widened, strict=True):
        final = {str(s.get("name")) for s in subsets_of(rule)}
        if len(subsets_of(wide)) != len(final) and used <= final:
            ctx.cluster.apply(manifest=rule)


def _widened(ctx: Context, rule: Manifest) -> Manifest:
    """`rule` plus the subsets the live DestinationRule has and `rule` lacks."""
    meta = rule.get("metadata") or {}
    current = ctx.cluster.get_destination_rule(namespace=str(meta["namespace"]),
                                               name=str(meta.get("name")))
    names = {s.get("name") for s in subsets_of(rule)}
    extra = [s for s in subsets_of(current) if s.get("name") not in names]
    if not extra:
        return rule
    return {**rule, "spec": {**(rule.get("spec") or {}), "subsets": subsets_of(rule) + extra}}


def remove_test_route(ctx: Context, release: Release, live: Color | None) -> None:
    """Drop the test route to `release`'s colour: default-only on `live`, or no routes at all."""
    vs = ctx.cluster.get_virtual_service(namespace=ctx.namespace, name=ctx.routes)
    if vs is None or cookie_route_subset(vs) != release.color.value:
        return  # nothing of this release is routed
    if live is None:
        ctx.cluster.delete(manifest_kind="VirtualService", namespace=ctx.namespace,
                           name=ctx.routes)
        ctx.cluster.delete(manifest_kind="DestinationRule", namespace=ctx.namespace,
                           name=ctx.routes)
        return
    values = variables(ctx.app, tag=release.tag, commit=release.commit, release_id=release.id,
                       color_test=live.other(), color_active=live)
    apply_routes(ctx, render_file(ctx.app, ROUTE_FILE, values))


# -- the automatic steps --------------------------------------------------------------------


def sanity_check(ctx: Context, release: Release) -> Color | None:
    """Refuse a release into the live colour; returns the live colour (None: nothing live)."""
    ctx.progress(release, "sanity_check")
    traffic = ctx.cluster.default_traffic(namespace=ctx.namespace, name=ctx.routes)
    live = traffic.live
    if live is release.color:
        raise Rejected(
            f"{release.tag} asks for {live}, which is live: VirtualService "
            f"{ctx.namespace}/{ctx.routes} sends default traffic there, and deploying would "
            f"replace what users are using. Tag the idle colour ({live.other()}) instead.")
    if traffic.takes(release.color):  # (a colour beside the live one: a split by hand)
        raise Rejected(
            f"{release.tag} asks for {release.color}, which takes part of the default traffic: "
            f"VirtualService {ctx.namespace}/{ctx.routes} splits it between "
            f"{' and '.join(sorted(traffic.subsets))} (set by hand), and deploying would "
            "replace what those users are using. Route all default traffic to one colour "
            "first.")
    return live


def deploy(ctx: Context, release: Release, live: Color | None,
           taking: Callable[[], None] = lambda: None) -> None:
    """Service, Deployment (rollout wait), Gateway, test route, post-deploy hooks.

    `taking` runs just before the Deployment is applied: from there on the colour holds
    this release (and no longer what it held), even if a later part fails."""
    try:
        files = {name: in_namespace(ctx, objs)
                 for name, objs in deploy_manifests(ctx.app, release, live=live).items()}
    except TemplateError as e:
        raise StepFailed("deploy", f"cannot render the manifests: {e}") from e
    ctx.progress(release, "deploy: service")
    for manifest in files["service.yml"]:
        ctx.cluster.apply(manifest=manifest)
    drain(ctx, release)
    ctx.progress(release, "deploy: deployment")
    if ctx.cluster.default_traffic(namespace=ctx.namespace, name=ctx.routes).takes(
            release.color):
        raise StepFailed("deploy", f"{release.color} became live before its Deployment was "
                         "applied; nothing was deployed into the live colour")
    taking()
    for manifest in files["deployment.yml"]:
        _apply_deployment(ctx, release, manifest)
    ctx.progress(release, "deploy: rollout")
    wait_rollout(ctx, release)
    ctx.progress(release, "deploy: gateway")
    for manifest in files["gateway.yml"]:
        ctx.cluster.apply(manifest=manifest)
    ctx.progress(release, "deploy: test route")
    apply_routes(ctx, files["route-test.yml"])
    run_hooks(ctx, release, POST_DEPLOY)


def drain(ctx: Context, release: Release) -> None:
    """Wait until the colour has been out of default traffic for the app's drain time.

    Requests routed just before a switch are still in flight on the colour that
    left, and Istio's proxies take a moment to all see a route change: replacing that
    colour's pods at once (strategy Recreate) would cut those requests off.
    """
    raw = ctx.store.redis.get(LEFT_KEY.format(app=release.app, color=release.color.value))
    wait = float(raw) + ctx.app.drain_seconds - time.time() if raw else 0.0
    if wait > 0:
        ctx.progress(release, "deploy: draining")
        time.sleep(min(wait, ctx.app.drain_seconds))


def _left_default(ctx: Context, color: str | None, now: str | None) -> None:
    """Remember when `color` stopped taking default traffic (see `drain`)."""
    if color is not None and color != now:
        ctx.store.redis.set(LEFT_KEY.format(app=ctx.app.name, color=color), time.time(),
                            ex=LEFT_TTL)


def _apply_deployment(ctx: Context, release: Release, manifest: Manifest) -> None:
    """Apply a manifest of deployment.yml (`deploy` re-checked first that its colour is not
    live, SPEC §5.1); the Deployment must carry the release's id."""
    applied = ctx.cluster.apply(manifest=manifest)
    labels = (applied.get("metadata") or {}).get("labels") or {}
    if manifest.get("kind") == "Deployment" and labels.get("release") != release.id:
        raise StepFailed("deploy", f"deployment.yml must label the Deployment "
                         "`release: $RELEASE_ID` (promotion checks it), but it carries "
                         f"{labels.get('release')!r}")


def wait_rollout(ctx: Context, release: Release) -> None:
    name = ctx.app.deployment(release.color)
    try:
        ctx.cluster.wait_ready(namespace=ctx.namespace, name=name,
                               timeout=ctx.app.rollout_timeout)
    except KubeError as e:
        raise StepFailed("deploy", f"rollout of {name} did not complete: {e}") from e


def run_hooks(ctx: Context, release: Release, hook: str) -> None:
    """Run each command of the hook in a ready pod of the release; a non-zero exit fails."""
    for command in ctx.app.hooks.get(hook, ()):
        shown = " ".join(command)
        ctx.progress(release, f"deploy: hook {shown}")
        result = ctx.cluster.exec_in_pod(namespace=ctx.namespace,
                                         selector=pod_selector(ctx, release),
                                         command=list(command), timeout=ctx.app.hook_timeout)
        if result.exit_code != 0:
            output = (result.stderr or result.stdout).strip()[-300:] or "no output"
            raise StepFailed("deploy", f"{hook} hook `{shown}` exited with {result.exit_code} "
                             f"in pod {result.pod}: {output}")


def pod_selector(ctx: Context, release: Release) -> str:
    return f"{ctx.app.selector(release.color)},release={release.id}"


def smoke_test(ctx: Context, release: Release) -> None:
    """Each check: HTTP through the ingress with the test cookie, or a command in a pod."""
    url = ctx.ingress_url or ctx.cluster.ingress_url()
    for check in ctx.app.smoke:
        if check.path is not None:
            if not url:
                raise StepFailed("smoke_test", "no ingress URL: set BLUEGREEN_INGRESS_URL or "
                                 "give istio-system/istio-ingressgateway a load balancer IP")
            ctx.progress(release, f"smoke_test: GET {check.path}")
            try:
                check_http(url, path=check.path, status=check.status, expect_json=check.json,
                           host=ctx.app.host,
                           within=min(SMOKE_RETRY_SECONDS, ctx.app.smoke_timeout))
            except SmokeFailed as e:
                raise StepFailed("smoke_test", str(e)) from e
        if check.exec:
            _exec_check(ctx, release, list(check.exec), check.status)


def _exec_check(ctx: Context, release: Release, command: list[str], expected: int) -> None:
    shown = " ".join(command)
    ctx.progress(release, f"smoke_test: exec {shown}")
    result = ctx.cluster.exec_in_pod(namespace=ctx.namespace, selector=pod_selector(ctx, release),
                                     command=command, timeout=ctx.app.smoke_timeout)
    if result.exit_code != expected:
        output = (result.stderr or result.stdout).strip()[-300:] or "no output"
        raise StepFailed("smoke_test", f"smoke check `{shown}` exited with {result.exit_code} "
                         f"(expected {expected}) in pod {result.pod}: {output}")


def release_on(ctx: Context, color: Color) -> str | None:
    """The release id the colour's Deployment carries (None: no Deployment)."""
    info = ctx.cluster.get_deployment(namespace=ctx.namespace, name=ctx.app.deployment(color))
    return None if info is None else info.release_id


# -- the operator actions ---------------------------------------------------------------------


def check_deployed(ctx: Context, release: Release) -> None:
    """The release's Deployment exists, carries its id and is ready (SPEC §5.2), or Stale."""
    name = ctx.app.deployment(release.color)
    info = ctx.cluster.get_deployment(namespace=ctx.namespace, name=name)
    if info is None:
        raise Stale(f"Deployment {ctx.namespace}/{name} does not exist (decommissioned?)")
    if info.release_id != release.id:
        raise Stale(f"Deployment {ctx.namespace}/{name} carries release {info.release_id}, "
                    f"not {release.id}")
    if not info.is_ready:
        raise Stale(f"Deployment {ctx.namespace}/{name} is not ready ({info.summary()}); "
                    "default traffic must not go there")


def switch_default(ctx: Context, release: Release) -> tuple[Route, Route]:
    """Send default traffic to `release`'s colour (route.yml), read it back and verify."""
    before = route_state(ctx)
    if before["default"] != release.color.value or before["test"] is not None:
        apply_routes(ctx, route_manifests(ctx.app, release))
    try:
        after = route_state(ctx)
    except KubeError as e:
        raise StepFailed("switch", f"the route to {release.color} was applied, but reading it "
                         f"back failed ({e}): users may already reach {release.color}; ask "
                         "again to re-check the cluster and record it") from e
    _left_default(ctx, before["default"], after["default"])
    if after["default"] != release.color.value or release.color.value not in after["subsets"]:
        raise StepFailed("switch", f"after applying route.yml the default route goes to "
                         f"{after['default']} with subsets {after['subsets']}, not to "
                         f"{release.color}; check route.yml")
    return before, after


def promote(ctx: Context, release: Release) -> tuple[Route, Route]:
    """Re-check everything, then switch the default route to the release's colour.

    A newer release deployed into the colour since has superseded this one (the state
    check), and the Deployment says what the colour runs (`check_deployed`): the records
    are not asked a third time."""
    if release.state is not ReleaseState.AWAITING_PROMOTION:
        raise Stale(f"{release.id} is {release.state}, not awaiting promotion")
    check_deployed(ctx, release)
    return switch_default(ctx, release)


def rollback_target(ctx: Context, release: Release) -> Release:
    """The standby release on the other colour that was live before `release`, re-checked."""
    if release.state is not ReleaseState.LIVE:
        raise Stale(f"{release.id} is {release.state}, not live: there is nothing to undo")
    standby = [r for r in ctx.store.in_states([ReleaseState.STANDBY])
               if r.app == release.app and r.color is release.color.other()]
    if not standby:
        raise Stale(f"nothing to roll back to: no release is standing by on "
                    f"{release.color.other()} (never deployed, replaced or decommissioned)")
    target = max(standby, key=lambda r: r.updated_at)
    live = ctx.cluster.live_color(namespace=ctx.namespace, name=ctx.routes)
    if live is not target.color:  # (already on the target: an earlier attempt switched)
        if live is not release.color:
            raise Stale(f"{release.id} is not what users get: the default route goes to {live}")
        check_deployed(ctx, release)
    check_deployed(ctx, target)
    return target


def decommission(ctx: Context, color: Color, expected: Release | None) -> bool:
    """Delete the idle colour's Deployment (never the live one); False when already gone."""
    vs = ctx.cluster.get_virtual_service(namespace=ctx.namespace, name=ctx.routes)
    if vs is not None and color.value in default_traffic_subsets(vs):
        raise Stale(f"{color} is live (it takes default traffic): only the idle colour can be "
                    "decommissioned")
    if cookie_route_subset(vs) == color.value:
        raise Stale(f"the test route goes to {color}: a release awaits promotion there; "
                    "abort it instead")
    if expected is not None and expected.state is ReleaseState.AWAITING_PROMOTION:
        raise Stale(f"{expected.id} awaits promotion; abort it instead")
    name = ctx.app.deployment(color)
    info = ctx.cluster.get_deployment(namespace=ctx.namespace, name=name)
    if info is None:
        return False
    if expected is not None and info.release_id != expected.id:
        raise Stale(f"Deployment {ctx.namespace}/{name} carries release {info.release_id}, "
                    f"not {expected.id}")
    return ctx.cluster.delete_deployment(namespace=ctx.namespace, name=name)


def abort(ctx: Context, release: Release) -> tuple[Route, Route]:
    """Take back a release that is not live: its test route, then its Deployment."""
    traffic = ctx.cluster.default_traffic(namespace=ctx.namespace, name=ctx.routes)
    live = traffic.live
    name = ctx.app.deployment(release.color)
    info = ctx.cluster.get_deployment(namespace=ctx.namespace, name=name)
    carries = info is not None and info.release_id == release.id
    if traffic.takes(release.color) and carries:
        raise Stale(f"{release.id} is live: roll it back instead of aborting it")
    before = route_state(ctx)
    remove_test_route(ctx, release, live)
    if carries:
        ctx.cluster.delete_deployment(namespace=ctx.namespace, name=name)
    return before, route_state(ctx)
