"""`/deploy status [APP]`: what is live, waiting and queued, as a short chat answer.

Reads only what the engine exposes (`list_releases`, `queue_status`); the full view
with history is the status board and `GET /status`, built elsewhere.
"""

from __future__ import annotations

from webhook.context import Web
from worker.api import Release, ReleaseState

S = ReleaseState
IN_FLIGHT = (S.QUEUED, S.CHECKING, S.DEPLOYING, S.TESTING)


def status_text(web: Web, names: list[str]) -> str:
    """One paragraph per app (all apps, or the one named)."""
    unknown = [n for n in names if n not in web.settings.apps]
    if unknown:
        known = ", ".join(sorted(web.settings.apps))
        raise ValueError(f"No app named {unknown[0][:60]!r} (apps: {known}).")
    queues = {q["queue"]: q for q in web.engine.queue_status()}
    return "\n\n".join(_app_status(web, name, queues) for name in names or
                       sorted(web.settings.apps))


def _app_status(web: Web, name: str, queues: dict[str, dict[str, object]]) -> str:
    recent = web.engine.list_releases(app=name, limit=50)
    live = _first(recent, S.LIVE)
    standby = _first(recent, S.STANDBY)
    lines = [f"*{name}*: " + (f"live {_describe(live)}" if live else "nothing is live")]
    if standby is not None:
        lines.append(f"standby (the rollback target): {_describe(standby)}")
    lines += [f"awaiting promotion: {_describe(r)}" for r in recent
              if r.state is S.AWAITING_PROMOTION]
    lines += [f"{r.state.value.replace('_', ' ')}: {_describe(r)}" for r in recent
              if r.state in IN_FLIGHT]
    queue_name = web.settings.apps[name].queue
    queue = queues.get(queue_name) or {}
    worker = queue.get("worker")
    alive = isinstance(worker, dict) and bool(worker.get("alive"))
    lines.append(f"queue `{queue_name}`: {queue.get('waiting_count', 0)} waiting; worker "
                 + ("up" if alive else "*not running*"))
    return "\n".join(lines)


def _first(releases: list[Release], state: ReleaseState) -> Release | None:
    return next((r for r in releases if r.state is state), None)


def _describe(release: Release) -> str:
    return f"`{release.tag}` on {release.color} (`{release.id}`)"
