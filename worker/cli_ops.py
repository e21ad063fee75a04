"""Operator commands of `bluegreen` that go through the HTTP API, sharing its auth and audit.

`status`, `releases [APP]`, `show RELEASE`, `promote APP [RELEASE]`, `rollback APP`,
`decommission APP COLOR` and `abort APP [RELEASE]` talk to `BLUEGREEN_URL` with
`BLUEGREEN_API_TOKEN` over urllib (no extra runtime dependency). People get
tables, with control characters in what the server sends shown as `\\xNN` (`Answer`);
`--json` prints the API's own answer for scripts. Exit codes: 0 done or
queued; 1 refused, stale or not found; 2 usage; 3 the server cannot be reached;
every failure is one line on stderr. Without a release id a command acts on the one
release it can mean and says which; none or several → it says so and changes nothing.
Deciding and doing is the server's job; this module only asks.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from worker import statusview

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT = 15.0
NOT_LIVE_YET = ("queued", "checking", "deploying", "testing", "awaiting_promotion")

F = TypeVar("F", bound=Callable[..., Any])


class Refused(click.ClickException):
    """The server refused, the release is stale or unknown, or nothing matches: exit 1."""

    exit_code = 1


class BadUsage(click.ClickException):
    """A bad --url (or other input), said in one line like every other failure: exit 2."""

    exit_code = 2


class Unreachable(click.ClickException):
    """The server cannot be reached or did not answer with our JSON: exit 3."""

    exit_code = 3


@dataclass(frozen=True)
class Api:
    """A small client of the bluegreen HTTP API."""

    url: str
    token: str | None
    timeout: float = TIMEOUT

    def __post_init__(self) -> None:
        check_url(self.url)

    def get(self, path: str, **params: str | int | None) -> dict[str, Any]:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return self._call("GET", path + (f"?{query}" if query else ""), None)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", path, json.dumps(body).encode())

    def _call(self, method: str, path: str, body: bytes | None) -> dict[str, Any]:
        headers = {"Accept": "application/json", "User-Agent": "bluegreen-cli"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = _on_the_wire(f"Bearer {self.token}")
        try:
            request = urllib.request.Request(  # noqa: S310 - check_url allows http(s) only
                self.url.rstrip("/") + path, data=body, method=method, headers=headers)
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                return _decode(answer.read(), answer.status)
        except urllib.error.HTTPError as e:
            answer = _decode(e.read(), e.code)
            raise _refusal(e.code, answer) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise Unreachable(f"cannot reach {shown_url(self.url)}: {printable(str(reason))}"
                              ) from None
        except (http.client.InvalidURL, ValueError):  # what check_url missed; its text may
            # quote the password, so it is not repeated
            raise BadUsage(f"--url is not a valid address: {shown_url(self.url)!r}") from None
        except http.client.HTTPException as e:  # BadStatusLine and the like: not HTTP at all
            raise Unreachable(f"{shown_url(self.url)} did not answer as an HTTP server: "
                              f"{printable(str(e))}") from None


def _on_the_wire(text: str) -> str:
    """`text` as a header value that goes out as its UTF-8: http.client encodes header
    values as Latin-1, which cannot carry a token past U+00FF and would send others in
    a charset GitLab and curl do not use; the server reads either."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def check_url(url: str) -> None:
    """Refuse, in one line and with exit 2, an address urllib would choke on (its errors
    are tracebacks) or could never use: urllib sends no user part, it takes `user:pass@`
    for part of the host name. The address is shown with any password masked."""
    shown = shown_url(url)
    if not url.startswith(("http://", "https://")):
        raise BadUsage(f"--url must be an http:// or https:// address: {shown!r}")
    if shown != url:
        raise BadUsage(f"--url must not carry a user name or password (the API takes a "
                       f"bearer token: --token or BLUEGREEN_API_TOKEN): {shown!r}")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise BadUsage(f"--url must not contain spaces or control characters: {shown!r}")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - read for its check: a port that is no number 0-65535 raises
    except ValueError as e:  # its text quotes the port or nothing; no password is left here
        raise BadUsage(f"--url is not a valid address ({e}): {shown!r}") from None
    if not parts.hostname:
        raise BadUsage(f"--url names no host: {shown!r}")


def shown_url(url: str) -> str:
    """`url` fit to print: a password in it as `user:***@`, a lone user part (often a
    token) as `***@`. Everything up to the last `@` counts as the user part, so a raw
    `/` or `@` in a password is masked too."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not (sep and at):
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user + ':***' if colon else '***'}@{host}"


BEYOND_ASCII_TEXT = re.compile(r"[^ -~]")
"""What may not be printable: anything but printable ASCII (each one is then asked)."""


def printable(value: Any) -> Any:
    """`value` with each character in its strings, keys included, that a terminal would
    not show as itself escaped: C0 controls (newline and tab too: one record, one line),
    DEL, C1, and Unicode's invisible format characters, among them the bidirectional
    overrides (U+202E) that make text read in another order than it is. Each is shown
    as Python writes it: ESC as backslash-x1b, U+202E as backslash-u202e."""
    if isinstance(value, str):
        return BEYOND_ASCII_TEXT.sub(_escaped, value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(v) for v in value]
    return value


def _escaped(match: re.Match[str]) -> str:
    ch = match.group()
    if ch.isprintable():
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else (
        f"\\U{code:08x}")


class Answer(dict[str, Any]):
    """An answer of the API, fit for a terminal: every string in it `printable`, so a tag,
    message or error the server passes on cannot move the cursor, retitle the window or
    hide text. This is the one place the CLI cleans what it prints; `raw` is the answer
    as sent, which `--json` prints (JSON escapes control characters itself)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        super().__init__(printable(raw))
        self.raw = raw


def _decode(raw: bytes, status: int) -> Answer:
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise Unreachable(f"the server answered HTTP {status} without bluegreen's JSON")
    return Answer(answer)


def _refusal(status: int, answer: dict[str, Any]) -> click.ClickException:
    message = str(answer.get("message") or f"HTTP {status}")
    code = answer.get("code")
    text = f"{message} ({code})" if code else message
    if status >= 500:
        return Unreachable(f"server error: {text}")
    return Refused(text)


def api_options(command: F) -> F:
    """--url, --token and --json, shared by every operator command."""
    options = (
        click.option("--url", envvar="BLUEGREEN_URL", default=DEFAULT_URL, show_default=True,
                     help="bluegreen web address (env BLUEGREEN_URL)"),
        click.option("--token", envvar="BLUEGREEN_API_TOKEN", default=None, show_default=False,
                     help="API bearer token (env BLUEGREEN_API_TOKEN)"),
        click.option("--json", "as_json", is_flag=True, help="print the API's JSON answer"),
    )
    for option in reversed(options):
        command = option(command)
    return command


def emit_json(answer: dict[str, Any]) -> None:
    """The API's answer as it was sent (an `Answer`'s `raw`)."""
    click.echo(json.dumps(getattr(answer, "raw", answer), indent=2, sort_keys=True))


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """Rows as left-aligned columns under `headers`."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def ago(timestamp: object, now: float | None = None) -> str:
    """`12s ago`, `5m ago`, `3h ago`, `2d ago` for a Unix time; `-` when unknown."""
    if not isinstance(timestamp, int | float):
        return "-"
    seconds = max(0, int((time.time() if now is None else now) - timestamp))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def release_rows(releases: Iterable[dict[str, Any]]) -> list[list[object]]:
    return [[r.get("id"), r.get("app"), r.get("color"), r.get("tag"), r.get("state"),
             r.get("step") or "", ago(r.get("updated_at"))] for r in releases]


RELEASE_HEADERS = ("RELEASE", "APP", "COLOR", "TAG", "STATE", "STEP", "UPDATED")


def releases_of(api: Api, app: str, states: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The app's releases (newest first), optionally only those in `states`."""
    found: list[dict[str, Any]] = api.get("/api/releases", app=app, limit=200)["releases"]
    return [r for r in found if states is None or r.get("state") in states]


def the_one(candidates: list[dict[str, Any]], what: str) -> dict[str, Any]:
    """The single candidate, or exit 1 saying there is none or which there are."""
    if not candidates:
        raise Refused(f"no {what}; nothing changed")
    if len(candidates) > 1:
        ids = ", ".join(str(r.get("id")) for r in candidates)
        raise Refused(f"more than one {what}: {ids}; name one; nothing changed")
    return candidates[0]


def describe(release: dict[str, Any]) -> str:
    return f"{release.get('id')} ({release.get('tag')}, {release.get('color')})"


def send(api: Api, app: str, action: str, body: dict[str, Any], as_json: bool) -> None:
    """POST one command and report the queued job."""
    answer = api.post(f"/api/apps/{urllib.parse.quote(app, safe='')}/{action}", body)
    if as_json:
        emit_json(answer)
        return
    place = answer.get("position")
    where = f"position {place} in the queue" if place else "a worker has already taken it"
    click.echo(f"queued {action} of {answer.get('release')} (job {answer.get('job')}, {where})")


def say(text: str, as_json: bool) -> None:
    """A note for people; kept off stdout in --json mode so scripts get pure JSON."""
    click.echo(text, err=as_json)


@click.command()
@api_options
@click.option("--watch", is_flag=True, help="redraw every --interval seconds until interrupted")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.2),
              help="seconds between redraws with --watch")
def status(url: str, token: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """Apps (live colour, Deployments, awaiting promotion, drift), queues, recent releases."""
    api = Api(url, token)
    statusview.run(lambda: api.get("/status"), as_json=as_json, watch=watch, interval=interval,
                   emit_json=emit_json)


@click.command()
@api_options
@click.argument("app", required=False)
@click.option("--state", default=None, help="only releases in this state")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
def releases(url: str, token: str | None, as_json: bool, app: str | None,
             state: str | None, limit: int) -> None:
    """Releases, newest first (of APP when given)."""
    answer = Api(url, token).get("/api/releases", app=app, state=state, limit=limit)
    if as_json:
        emit_json(answer)
    elif not answer["releases"]:
        click.echo("no releases")
    else:
        click.echo(table(release_rows(answer["releases"]), RELEASE_HEADERS))


@click.command()
@api_options
@click.argument("release")
def show(url: str, token: str | None, as_json: bool, release: str) -> None:
    """One release and its audit trail."""
    answer = Api(url, token).get(f"/api/releases/{urllib.parse.quote(release, safe='')}")
    if as_json:
        emit_json(answer)
        return
    record = answer["release"]
    for key in ("id", "app", "color", "tag", "version", "commit", "state", "step", "error",
                "forge", "delivery_id", "repository", "actor"):
        if record.get(key) not in (None, ""):
            click.echo(f"{key + ':':<13}{record[key]}")
    click.echo(f"{'updated:':<13}{ago(record.get('updated_at'))}")
    rows = [[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.get("at", 0))), e.get("actor"),
             e.get("step"), state_change(e), e.get("message")] for e in answer.get("audit", [])]
    click.echo("")
    click.echo(table(rows, ("TIME", "ACTOR", "STEP", "STATE", "MESSAGE")))


def state_change(entry: dict[str, Any]) -> str:
    """`queued -> checking` for a transition, `-> queued` for the first, "" for a note."""
    before, after = entry.get("state_from"), entry.get("state_to")
    if not after:
        return ""
    return f"{before} -> {after}" if before else f"-> {after}"


@click.command()
@api_options
@click.argument("app")
@click.argument("release", required=False)
def promote(url: str, token: str | None, as_json: bool, app: str, release: str | None) -> None:
    """Switch APP's default route to RELEASE (default: the one awaiting promotion)."""
    api = Api(url, token)
    if release is None:
        chosen = the_one(releases_of(api, app, ["awaiting_promotion"]),
                         f"release of {app} is awaiting promotion")
        release = str(chosen["id"])
        say(f"promoting {describe(chosen)}", as_json)
    send(api, app, "promote", {"release": release}, as_json)


@click.command()
@api_options
@click.argument("app")
def rollback(url: str, token: str | None, as_json: bool, app: str) -> None:
    """Route APP's default traffic back to the other colour, undoing the live release."""
    api = Api(url, token)
    chosen = the_one(releases_of(api, app, ["live"]), f"release of {app} is live")
    say(f"rolling back {describe(chosen)}", as_json)
    send(api, app, "rollback", {"release": chosen["id"]}, as_json)


@click.command()
@api_options
@click.argument("app")
@click.argument("color", type=click.Choice(["blue", "green"]))
def decommission(url: str, token: str | None, as_json: bool, app: str, color: str) -> None:
    """Delete APP's idle COLOR Deployment (never the live one)."""
    # The server knows which release that colour's Deployment carries; its answer names it.
    say(f"decommissioning {app}'s {color} colour", as_json)
    send(Api(url, token), app, "decommission", {"color": color}, as_json)


@click.command()
@api_options
@click.argument("app")
@click.argument("release", required=False)
def abort(url: str, token: str | None, as_json: bool, app: str, release: str | None) -> None:
    """Drop RELEASE of APP, which is not live yet (default: the one release on its way:
    queued, in progress or awaiting promotion)."""
    api = Api(url, token)
    if release is None:
        chosen = the_one(releases_of(api, app, NOT_LIVE_YET),
                         f"release of {app} is on its way to live (queued, in progress or "
                         "awaiting promotion)")
        release = str(chosen["id"])
        say(f"aborting {describe(chosen)}", as_json)
    send(api, app, "abort", {"release": release}, as_json)


COMMANDS: list[click.Command] = [status, releases, show, promote, rollback, decommission, abort]
