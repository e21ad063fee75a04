"""The engine's own commands of `bluegreen`: `worker` (serve queues), `plan` (dry run)
and `prune` (forget old releases).

`bluegreen worker [--queue Q ...] [--burst]` checks the configuration and the
templates, then hands over to `worker.runner`. `bluegreen plan APP TAG` renders what
a release of TAG would apply and lists its steps, reading neither Redis nor the
cluster. `bluegreen prune [--older-than 90d] [--app APP ...] [--dry-run]` removes from
Redis the releases that ended before then (`worker.retention`). Configuration errors
and bad arguments are one line on stderr, exit code 2; Redis unreachable, exit 1.
Operator commands that go through the HTTP API are `worker.cli_ops`.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import time
from typing import NoReturn

import click
import yaml
from redis import Redis, RedisError

from worker import manifests, retention, runner
from worker.cli_ops import printable
from worker.colors import Color
from worker.config import (
    AppConfig,
    ConfigError,
    Settings,
    SmokeCheck,
    load_settings,
    parse_duration,
)
from worker.releases import Release, ReleaseStore, new_release_id

EXIT_USAGE = 2


def fail(message: str) -> NoReturn:
    """One line on stderr, exit code 2."""
    click.echo(f"bluegreen: {message}", err=True)
    sys.exit(EXIT_USAGE)


def checked_settings() -> Settings:
    """The configuration, with every app's templates rendered once; exits 2 when invalid."""
    try:
        settings = load_settings()
        for app in settings.apps.values():
            manifests.check_templates(app)
    except (ConfigError, manifests.TemplateError) as e:
        fail(f"invalid configuration: {e}")
    return settings


@click.command("worker")
@click.option("--queue", "queues", multiple=True, metavar="QUEUE",
              help="Queue to serve (repeatable). Default: every configured queue.")
@click.option("--burst", is_flag=True, help="Run the queued jobs, then exit.")
def worker_command(queues: tuple[str, ...], burst: bool) -> None:
    """Run the rq worker: one job at a time per queue, under the queue's lock."""
    settings = checked_settings()
    known = settings.queue_names()
    unknown = sorted(set(queues) - set(known))
    if unknown:
        fail(f"unknown queue {unknown[0]!r} (configured queues: {', '.join(known)})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sys.exit(runner.run(settings, list(queues) or known, burst=burst))


@click.command("plan")
@click.argument("app")
@click.argument("tag")
@click.option("--commit", default="0" * 40, show_default=True, help="Commit the tag points at.")
@click.option("--live", type=click.Choice(["blue", "green", "none"]), default=None,
              help="Colour to assume live (default: the other colour; none = first release).")
def plan_command(app: str, tag: str, commit: str, live: str | None) -> None:
    """Print the manifests a release of TAG would apply and the steps it would run."""
    settings = checked_settings()
    config = settings.apps.get(app)
    if config is None:
        fail(f"unknown app {app!r} (apps: {', '.join(sorted(settings.apps))})")
    color = config.color_for_tag(tag)
    if color is None:
        patterns = ", ".join(f"{c}: {p.pattern}" for c, p in config.tag_patterns.items())
        fail(f"tag {tag!r} names no colour of {app} (patterns {patterns})")
    active = color.other() if live is None else None if live == "none" else Color(live)
    if active is color:
        fail(f"{color} is assumed live: the sanity check would reject {tag}")
    release_id = new_release_id(config.name, tag).rsplit("-", 1)[0] + "-plan"  # stable output
    try:
        click.echo(render_plan(config, tag=tag, commit=commit, release_id=release_id,
                               color=color, active=active))
    except manifests.TemplateError as e:
        fail(str(e))


def render_plan(app: AppConfig, *, tag: str, commit: str, release_id: str, color: Color,
                active: Color | None) -> str:
    """The plan as YAML: steps as comments, then every file's documents."""
    values = manifests.variables(app, tag=tag, commit=commit, release_id=release_id,
                                 color_test=color, color_active=active)
    lines = [f"# plan: release {tag} of {app.name} into {color} "
             f"(version {values['VERSION']}, image {values['IMAGE']}, release {release_id})",
             "# live colour assumed: " + (str(active) if active else "none (first release)"),
             "# nothing was read or changed: not Redis, not the cluster", "#", "# steps:"]
    lines += [f"#  {i}. {step}" for i, step in enumerate(plan_steps(app, color, active), 1)]
    parts = ["\n".join(lines)]
    for name in manifests.TEMPLATE_FILES:
        file_values = values if name != manifests.ROUTE_FILE else {
            **values, "COLOR_ACTIVE": color.value}
        documents = manifests.render_file(app, name, file_values, default_route=(
            active is not None or name != manifests.TEST_ROUTE_FILE))
        when = "on promotion" if name == manifests.ROUTE_FILE else "on deploy"
        for document in documents:
            parts.append(f"--- # {name} (applied {when})\n"
                         + yaml.safe_dump(document, sort_keys=False).rstrip())
    return "\n".join(parts)


def plan_steps(app: AppConfig, color: Color, active: Color | None) -> list[str]:
    """The ordered steps of a release, as a person would describe them."""
    vs = f"VirtualService {app.namespace}/{app.virtual_service}"
    steps = [f"sanity check: refuse if the default route of {vs} goes to {color}",
             "deploy: apply service.yml, deployment.yml "
             f"(Deployment {app.deployment(color)}, labelled with the release id)",
             f"deploy: wait up to {app.rollout_timeout:g} s for the rollout",
             "deploy: apply gateway.yml, then route-test.yml (DestinationRule before "
             "VirtualService): Cookie test=true goes to " + str(color) + ", other traffic "
             + (f"stays on {active}" if active else "has no route until promotion")]
    steps += [f"post-deploy hook: run {' '.join(cmd)} in a ready {color} pod"
              for cmd in app.hooks.get("post_deploy", ())]
    steps += [f"smoke test: {_describe_check(check)}" for check in app.smoke]
    if app.auto_promote:
        steps.append(f"promote (auto_promote): apply route.yml, all traffic to {color}")
    else:
        steps.append(f"await promotion; promote applies route.yml, all traffic to {color}")
    return steps


def _describe_check(check: SmokeCheck) -> str:
    if check.exec is not None:
        return f"run {' '.join(check.exec)} in a ready pod, expect exit code {check.status}"
    body = f" and JSON containing {json.dumps(dict(check.json))}" if check.json else ""
    return (f"GET {check.path} through the ingress with Cookie test=true, "
            f"expect {check.status}{body}")


@click.command("prune")
@click.option("--older-than", "age", default="90d", show_default=True, metavar="DURATION",
              help="Remove releases that ended longer ago than this (90d, 36h, 45m).")
@click.option("--app", "apps", multiple=True, metavar="APP",
              help="Only this app's releases (repeatable). Default: every app's.")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
def prune_command(age: str, apps: tuple[str, ...], dry_run: bool) -> None:
    """Remove from Redis the releases that ended long ago (records, audit trails).

    Releases that are live, standby, rolled back or on their way are never removed, nor
    the ones the engine still reads: the release that holds a colour, and the newest
    release of each colour."""
    try:
        seconds = parse_duration(age)
    except ValueError as e:
        fail(f"--older-than: {e}")
    try:
        settings = load_settings()
    except ConfigError as e:
        fail(f"invalid configuration: {e}")
    before = time.time() - seconds
    store = ReleaseStore(Redis.from_url(settings.redis_url))

    def progress(done: int, total: int) -> None:
        if total > retention.PAGE:
            click.echo(f"looked at {done:,} of {total:,} ended releases", err=True)

    try:
        outcome = retention.prune(store, before=before, apps=set(apps) or None,
                                  dry_run=dry_run, progress=progress)
    except RedisError as e:
        click.echo(f"bluegreen: Redis is unavailable, nothing more was removed: {e}", err=True)
        sys.exit(1)
    click.echo(describe_pruning(outcome, before=before, age=age, dry_run=dry_run))


def describe_pruning(outcome: retention.Outcome, *, before: float, age: str,
                     dry_run: bool) -> str:
    """What `prune` did (or would do), for a person: one line per release when dry."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(before))
    by_state = collections.Counter(str(r.state) for r in outcome.removed)
    states = ", ".join(f"{n:,} {state}" for state, n in sorted(by_state.items()))
    lines = [f"{'would remove' if dry_run else 'removed'} {len(outcome.removed):,} "
             f"release{'s' if len(outcome.removed) != 1 else ''} that ended before {when} "
             f"({age} ago){': ' + states if states else ''}"]
    if dry_run:
        lines += [f"  {_line(r)}" for r in outcome.removed]
    for why, releases in sorted(outcome.kept.items()):
        lines.append(f"kept {len(releases):,} as old that the engine still reads ({why}):")
        lines += [f"  {_line(r)}" for r in releases]
    if outcome.changed:
        lines.append(f"left {len(outcome.changed):,} that changed while pruning: "
                     + ", ".join(outcome.changed))
    return "\n".join(lines)


def _line(release: Release) -> str:
    ended = time.strftime("%Y-%m-%d %H:%M", time.gmtime(release.updated_at))
    return str(printable(f"{release.id}  {release.tag}  {release.state}  ended {ended}"))


COMMANDS: list[click.Command] = [worker_command, plan_command, prune_command]
