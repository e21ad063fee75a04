"""The status picture in a terminal: `bluegreen status [--watch]` renders `GET /status` here.

Owns turning the status document (see README, "Watching releases") into text: per
app the live colour and since when, both colours' Deployments, the release awaiting
promotion and any drift; per queue the worker, the running job, waiting and failed
jobs; then recent releases. Colours are shown in colour when the output is a
terminal. `run()` prints once, or redraws every `interval` seconds until
interrupted, saying so (and retrying) while the server cannot be reached. Fetching
is the caller's (`worker.cli_ops`); this module never talks to the network itself.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

Doc = dict[str, Any]
FG = {"blue": "blue", "green": "green"}
BAD = {"failed", "rejected"}


class Painter:
    """click.style when colour is wanted, plain text otherwise."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, **style: Any) -> str:
        return click.style(text, **style) if self.color else text

    def colour(self, name: str | None, text: str | None = None, *, bold: bool = False,
               reverse: bool = False) -> str:
        return self(text or name or "-", fg=FG.get(name or ""), bold=bold, reverse=reverse)


def ago(timestamp: object, now: float) -> str:
    """`just now`, `12s ago`, `5m ago`, `3h ago`, `2d ago`; `never` when unknown."""
    if not isinstance(timestamp, int | float):
        return "never"
    return "just now" if now - timestamp < 2 else f"{span(now - timestamp)} ago"


def span(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    whole = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def describe(release: Doc) -> str:
    return f"{release.get('id')} ({release.get('tag')}, {release.get('color')})"


def render(doc: Doc, *, now: float | None = None, color: bool = False) -> str:
    """The whole picture as text."""
    now = time.time() if now is None else now
    paint = Painter(color)
    lines = [paint("APPS", bold=True)]
    for name, app in sorted((doc.get("apps") or {}).items()):
        lines += app_lines(name, app, now, paint)
    lines += [paint("QUEUES", bold=True)]  # each app's lines end with a blank one
    for queue in doc.get("queues") or []:
        lines += queue_lines(queue, now, paint)
    lines += ["", paint("RECENT RELEASES", bold=True), release_table(
        doc.get("releases") or [], now, paint)]
    return "\n".join(lines)


def app_lines(name: str, app: Doc, now: float, paint: Painter) -> list[str]:
    live = app.get("live") or {}
    snap = app.get("snapshot")
    seen = (f"cluster seen {ago(snap.get('taken_at'), now)}" if snap else "cluster not seen yet")
    if snap and snap.get("error"):
        seen += paint(f" (last look failed: {snap['error']})", fg="red")
    head = f"{paint(name, bold=True)}  queue {app.get('queue')}  {seen}"
    if live.get("color"):
        who = f": {describe(live['release'])}" if live.get("release") else ""
        state = (paint(f" LIVE {live['color'].upper()} ", fg="white", bold=True,
                       bg=FG.get(live["color"])) + f" since {ago(live.get('since'), now)}{who}")
    else:
        state = paint("nothing is live", dim=True)
    lines = [head, f"  {state}"]
    if live.get("conflict"):
        lines.append("  " + paint(f"CLUSTER AND RECORDS DISAGREE: {live['conflict']}", fg="red",
                                  bold=True))
    for colour in ("blue", "green"):
        lines.append("  " + color_line(colour, (app.get("colors") or {}).get(colour) or {},
                                       paint))
    for release in app.get("awaiting") or []:
        lines.append("  " + paint(f"awaiting promotion: {describe(release)}, ready "
                                  f"{ago(release.get('updated_at'), now)}", fg="yellow"))
    for drift in app.get("drift") or []:
        lines.append("  " + paint(f"DRIFT: {drift.get('message')}", fg="red", bold=True))
    return [*lines, ""]


def color_line(name: str, info: Doc, paint: Painter) -> str:
    label = paint.colour(name, f"{name:<5}", bold=bool(info.get("live")))
    marker = paint("LIVE", bold=True) if info.get("live") else "idle"
    if not info.get("exists"):
        return f"{label} {marker:<4}  " + ("no Deployment" if info.get("exists") is False
                                           else "not seen yet")
    pods = f"{info.get('ready')}/{info.get('desired')} ready"
    pods = pods if info.get("is_ready") else paint(pods, fg="yellow")
    return (f"{label} {marker:<4}  {info.get('version') or '?':<10} {pods}  "
            f"{info.get('release') or '-'}  {info.get('image') or '?'}")


def queue_lines(queue: Doc, now: float, paint: Painter) -> list[str]:
    worker = queue.get("worker") or {}
    alive = (paint("worker alive", fg="green") + f", beat {ago(worker.get('at'), now)}"
             if worker.get("alive") else paint("NO WORKER", fg="red", bold=True))
    lines = [f"{paint(str(queue.get('queue')), bold=True)} ({', '.join(queue.get('apps') or [])})"
             f"  {alive}"]
    running = queue.get("running")
    if running:
        step = f" step {running['step']}" if running.get("step") else ""
        lines.append(f"  running: {job(running)}{step} for "
                     f"{span(now - running['started_at']) if running.get('started_at') else '-'}")
    for waiting in queue.get("waiting") or []:
        lines.append(f"  {waiting.get('position')}. {job(waiting)}, waiting "
                     f"{span(now - waiting['enqueued_at']) if waiting.get('enqueued_at') else ''}")
    for failed in queue.get("failed") or []:
        lines.append(paint(f"  failed {ago(failed.get('ended_at'), now)}: {job(failed)}: "
                           f"{failed.get('error') or 'no reason recorded'}", fg="red"))
    if not running and not queue.get("waiting"):
        lines.append("  idle, nothing waiting")
    return lines


def job(summary: Doc) -> str:
    what = summary.get("action") or "job"
    app = f" ({summary['app']})" if summary.get("app") else ""
    return f"{what} {summary.get('release') or summary.get('job_id')}{app}"


def release_table(releases: Sequence[Doc], now: float, paint: Painter) -> str:
    if not releases:
        return "no releases yet"
    headers = ("RELEASE", "TAG", "APP", "COLOR", "STATE", "ACTOR", "TOOK", "UPDATED")
    rows = [[r.get("id"), r.get("tag"), r.get("app"), r.get("color"),
             str(r.get("state")) + (f" ({r['step']})" if r.get("step") else ""),
             r.get("actor"), span(r.get("duration")), ago(r.get("updated_at"), now)]
            for r in releases]
    text = _columns(rows, headers)
    lines = text.splitlines()
    out = [lines[0]]
    for release, line in zip(releases, lines[1:], strict=True):
        out.append(paint(line, fg="red") if release.get("state") in BAD else line)
        if release.get("state") in BAD and release.get("error"):
            out.append(paint(f"    why: {release['error']}", fg="red"))
    return "\n".join(out)


def _columns(rows: Iterable[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [list(headers), *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def run(fetch: Callable[[], Doc], *, as_json: bool, watch: bool, interval: float,
        emit_json: Callable[[Doc], None]) -> None:
    """Print the status once, or redraw it every `interval` seconds until interrupted."""
    color = sys.stdout.isatty()
    if not watch:
        doc = fetch()
        if as_json:
            emit_json(doc)
        else:
            click.echo(render(doc, color=color))
        return
    while True:
        shown: Doc | None = None
        try:
            shown = fetch()
            text = render(shown, color=color)
        except click.ClickException as e:  # unreachable or refused: say so, keep trying
            text = Painter(color)(f"{e.format_message()}; retrying every {interval:g}s",
                                  fg="red")
        if as_json and shown is not None:
            emit_json(shown)
        else:
            click.clear()
            stamp = time.strftime("%H:%M:%S")
            click.echo(f"bluegreen status, every {interval:g}s (Ctrl-C to stop) · {stamp}\n")
            click.echo(text)
        time.sleep(max(0.2, interval))
