"""A local stand-in for Slack: the Web API methods we call, and `response_url` endpoints.

`FakeSlack` is a real HTTP server on a free port (slack_sdk's `WebClient` is pointed
at `fake.api_url`, as `SLACK_API_URL` does in production). It keeps the messages
posted with `chat.postMessage` and edited with `chat.update` as Slack would (a channel
name becomes an id, each message gets a `ts`; message `metadata` — `event_type` and
`event_payload` — is kept, and `chat.update` without `metadata` leaves it as it was),
answers `conversations.history` for a channel id (newest first; `oldest`, `latest`,
`inclusive`, `limit`, `cursor`; metadata only with `include_all_metadata`; without the
`channels:history` scope in `fake.scopes`, `missing_scope`), records every call, and
records what is POSTed to `fake.response_url(name)`.

The workspace's channels (`fake.channels`, by id, in the order Slack lists them) are
`#deploys` (`CDEPLOYS`, public, the bot in it), those a test adds (`add_channel`,
`add_channels`), and any a message is posted to by a name it does not know (a public
channel the bot is in). `conversations.list`
answers as Slack does: `types` (default `public_channel`; each type needs its scope,
`channels:read`, `groups:read`, `mpim:read`, `im:read`, else `missing_scope` naming
the one `needed`), `exclude_archived`, `limit` (default 100, under 1000, else
`invalid_limit`) and an opaque `cursor`; a page is the next `limit` channels of the
workspace with the filters applied after, so it may hold fewer, or none, and still
name a `next_cursor` (empty after the last). A bot sees every public channel and the
private ones it is a member of. It checks the bot token like
Slack does (`invalid_auth`). Faults for the next N API calls: `fail_next(n)` answers
500, `rate_limit_next(n, retry_after)` answers 429 with `Retry-After`;
`answer_late_next(method, delay)` does the next call of `method` (the message is
posted) and answers it only `delay` seconds later, as a slow Slack does;
`fail_next_call(method, status, error, done=...)` answers the next call of `method`
with that status and `{"ok": false, "error": error}`, having done it first when
`done` (the message is posted: Slack's `fatal_error` and `internal_error` may come
after partial success). Signing a request *to* our endpoints, as Slack does, is
`sign(secret, body)`.

A `response_url` is Slack's answer channel for one request. The one of a button click
belongs to the message clicked: `response_url(name, message=(channel, ts))` makes it
so, and then a POST with `replace_original: true` replaces that message's text and
blocks (its channel, ts and metadata stay) and one with `delete_original: true`
deletes it; any other POST (an ephemeral or in-channel reply), or one to a
`response_url` tied to no message, is only recorded. Every POST is recorded in
`responses` when Slack has taken it: `hold_responses(name)` keeps POSTs to that
`response_url` unapplied and unanswered until `let_responses_through(name)`, as a
reply held up on its way (a busy sender, a slow Slack) reaches Slack late.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from jsonserver import JsonServer

BOT_TOKEN = "xoxb-test-bot-token-123"
SIGNING_SECRET = "slack-signing-secret-1"
BOT_ID, APP_ID = "B0BLUEGREEN", "A0BLUEGREEN"
SCOPES = frozenset({"chat:write", "commands", "channels:history", "groups:history",
                    "channels:read", "groups:read"})
TYPE_SCOPES = {"public_channel": "channels:read", "private_channel": "groups:read",
               "mpim": "mpim:read", "im": "im:read"}


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack adds to a request it sends us."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


@dataclass
class Call:
    """One Web API call as the fake received it."""

    method: str
    body: dict[str, Any]
    at: float
    status: int
    authorization: str | None
    error: str = ""  # the error Slack answered, if it did not do it


@dataclass
class FakeSlack(JsonServer):
    """See the module docstring."""

    token: str = BOT_TOKEN
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    responses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    faults: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    late: dict[str, deque[float]] = field(default_factory=dict)
    failing: dict[str, deque[tuple[int, str, bool]]] = field(default_factory=dict)
    clicked: dict[str, tuple[str, str]] = field(default_factory=dict)  # response_url → message
    held: dict[str, threading.Event] = field(default_factory=dict)
    scopes: set[str] = field(default_factory=lambda: set(SCOPES))
    channels: dict[str, dict[str, Any]] = field(default_factory=lambda: {  # id → the channel
        "CDEPLOYS": {"id": "CDEPLOYS", "name": "deploys", "is_private": False,
                     "is_archived": False, "is_member": True}})
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    _ts: int = 0

    # -- life ----------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, name: str = "r1", *, message: tuple[str, str] | None = None) -> str:
        """The `response_url` Slack sends with a request; `message` = (channel, ts) ties it to
        the message a click was on, which `replace_original` and `delete_original` act on."""
        if message is not None:
            with self.lock:
                self.clicked[name] = message
        return f"{self.url}/actions/T0/{name}/secret-{name}"

    def stop(self) -> None:
        with self.lock:
            held = list(self.held.values())
        for gate in held:  # let held replies finish, so no request hangs past the test
            gate.set()
        super().stop()

    # -- faults --------------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 500) -> None:
        with self.lock:
            self.faults.extend([(status, {})] * count)

    def rate_limit_next(self, count: int, retry_after: int = 1) -> None:
        with self.lock:
            self.faults.extend([(429, {"Retry-After": str(retry_after)})] * count)

    def answer_late_next(self, method: str, delay: float) -> None:
        with self.lock:
            self.late.setdefault(method, deque()).append(delay)

    def fail_next_call(self, method: str, status: int = 500, error: str = "fatal_error", *,
                       done: bool = False) -> None:
        """Answer the next call of `method` with `status` and `error`; `done`: do it first."""
        with self.lock:
            self.failing.setdefault(method, deque()).append((status, error, done))

    def hold_responses(self, name: str) -> None:
        """Take POSTs to `response_url(name)` but neither apply nor answer them (yet)."""
        with self.lock:
            self.held[name] = threading.Event()

    def let_responses_through(self, name: str) -> None:
        """Apply and answer the held POSTs to `response_url(name)`, and any later ones."""
        with self.lock:
            gate = self.held.pop(name, None)
        if gate is not None:
            gate.set()

    def add_channel(self, name: str, *, private: bool = False, archived: bool = False,
                    member: bool = True, channel_id: str | None = None) -> str:
        """A channel of the workspace (listed after those already there); its id."""
        prefix = "G" if private else "C"
        with self.lock:
            found = channel_id or f"{prefix}{len(self.channels) + 1:08d}X"
            self.channels[found] = {"id": found, "name": name, "is_private": private,
                                    "is_archived": archived, "is_member": member}
        return found

    def add_channels(self, count: int, prefix: str = "chan") -> None:
        """`count` channels the bot does not care about: public ones, with every third
        archived and every fifth private (the bot in none of those)."""
        for i in range(count):
            self.add_channel(f"{prefix}-{i}", private=i % 5 == 0, archived=i % 3 == 0,
                             member=False)

    def delete_all_messages(self) -> None:
        with self.lock:
            self.messages.clear()

    # -- what tests look at ----------------------------------------------------------------------

    def api_calls(self, *methods: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if not methods or c.method in methods]

    def message_for(self, release_id: str) -> dict[str, Any] | None:
        """The current message about `release_id`, which shows it as `id` (None if none)."""
        found = self.messages_for(release_id)
        return found[-1] if found else None

    def messages_for(self, release_id: str) -> list[dict[str, Any]]:
        """Every message about `release_id` (shown as `id`), oldest first."""
        quoted = json.dumps(f"`{release_id}`")[1:-1]  # not the ids in other messages' buttons
        with self.lock:
            return [m for m in self.messages.values() if quoted in json.dumps(m["blocks"])]

    def responses_to(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for path, body in self.responses if f"/{name}/" in path]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0,
                 what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"fake Slack: timed out waiting for {what or predicate}; "
                             f"calls: {[(c.method, c.status) for c in self.api_calls()]}")

    # -- serving -------------------------------------------------------------------------------

    def respond(self, method: str, path: str, headers: dict[str, str],
                raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
        return self.handle(path, headers, raw)

    def handle(self, path: str, headers: dict[str, str], raw: bytes
               ) -> tuple[int, dict[str, str], dict[str, Any]]:
        if path.startswith("/actions/"):
            return self._reply(path, json.loads(raw or b"{}"))
        method, _, query = path.removeprefix("/api/").partition("?")
        body = {**dict(urllib.parse.parse_qsl(query)), **_body(headers, raw)}
        with self.lock:
            planned = self.failing.get(method)
            fail_status, error, done = planned.popleft() if planned else (0, "", True)
            if done:
                status, extra, answer = self._answer(method, headers, body)
            if fail_status and (not done or answer.get("ok")):
                status, extra, answer = fail_status, {}, {"ok": False, "error": error}
            self.calls.append(Call(method, body, time.time(), status,
                                   headers.get("Authorization"), str(answer.get("error") or "")))
            delays = self.late.get(method)
            delay = delays.popleft() if delays else 0.0
        time.sleep(delay)  # done already; only the answer is late
        return status, extra, answer

    def _reply(self, path: str, body: dict[str, Any]
               ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """A POST to a `response_url` (/actions/<team>/<name>/<secret>), once it is let through."""
        name = path.split("/")[3]
        with self.lock:
            gate = self.held.get(name)
        if gate is not None:
            gate.wait(60)
        with self.lock:
            self.responses.append((path, body))
            message = self.messages.get(self.clicked.get(name, ("", "")))
            if message is not None and _flag(body.get("delete_original")):
                del self.messages[(message["channel"], message["ts"])]
            elif message is not None and _flag(body.get("replace_original")):
                message.update(text=body.get("text"), blocks=body.get("blocks") or [])
        return 200, {}, {"ok": True}

    def _answer(self, method: str, headers: dict[str, str], body: dict[str, Any]
                ) -> tuple[int, dict[str, str], dict[str, Any]]:
        if self.faults:
            status, extra = self.faults.popleft()
            error = "ratelimited" if status == 429 else "fatal_error"
            return status, extra, {"ok": False, "error": error}
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        if method == "chat.postMessage":
            return 200, {}, self._post(body)
        if method == "chat.update":
            return 200, {}, self._update(body)
        if method == "conversations.history":
            return 200, {}, self._history(body)
        if method == "conversations.list":
            return 200, {}, self._list(body)
        return 200, {}, {"ok": False, "error": "unknown_method"}

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(str(body.get("channel") or ""))
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        metadata = _metadata(body)
        if metadata is None:
            return {"ok": False, "error": "invalid_metadata_format"}
        self._ts += 1
        ts = f"{int(time.time())}.{self._ts:06d}"
        message = {"channel": channel, "ts": ts, "text": body.get("text"),
                   "blocks": body.get("blocks") or [], "edits": 0, "metadata": metadata}
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _update(self, body: dict[str, Any]) -> dict[str, Any]:
        key = (str(body.get("channel")), str(body.get("ts")))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        metadata = _metadata(body) if "metadata" in body else self.messages[key]["metadata"]
        if metadata is None:
            return {"ok": False, "error": "invalid_metadata_format"}
        message = self.messages[key]
        message.update(text=body.get("text"), blocks=body.get("blocks") or [],
                       edits=message["edits"] + 1, metadata=metadata)
        return {"ok": True, "channel": key[0], "ts": key[1]}

    def _history(self, body: dict[str, Any]) -> dict[str, Any]:
        """conversations.history of a public channel, as Slack pages it (newest first)."""
        if "channels:history" not in self.scopes:
            return {"ok": False, "error": "missing_scope", "needed": "channels:history",
                    "provided": ",".join(sorted(self.scopes))}
        channel = str(body.get("channel") or "")
        if not re.fullmatch(r"[CDG][A-Z0-9]+", channel):  # an id, never a name
            return {"ok": False, "error": "channel_not_found"}
        oldest, latest = float(body.get("oldest") or 0), float(body.get("latest") or time.time())
        inclusive = _flag(body.get("inclusive"))

        def in_window(ts: float) -> bool:
            return oldest < ts < latest or (inclusive and ts in (oldest, latest))
        shown = sorted((m for (c, _), m in self.messages.items()
                        if c == channel and in_window(float(m["ts"]))),
                       key=lambda m: float(m["ts"]), reverse=True)
        try:
            start = _offset(str(body.get("cursor") or ""))
        except ValueError:
            return {"ok": False, "error": "invalid_cursor"}
        limit = min(int(body.get("limit") or 100), 999)
        page = shown[start:start + limit]
        with_metadata = _flag(body.get("include_all_metadata"))
        has_more = start + limit < len(shown)
        return {"ok": True, "has_more": has_more, "pin_count": 0,
                "messages": [_as_history(m, with_metadata) for m in page],
                "response_metadata": {"next_cursor": _cursor(start + limit) if has_more else ""}}

    def _list(self, body: dict[str, Any]) -> dict[str, Any]:
        """conversations.list, as Slack pages it (see the module docstring)."""
        types = [t for t in str(body.get("types") or "public_channel").split(",") if t]
        if any(t not in TYPE_SCOPES for t in types):
            return {"ok": False, "error": "invalid_types"}
        for kind in types:
            if TYPE_SCOPES[kind] not in self.scopes:
                return {"ok": False, "error": "missing_scope", "needed": TYPE_SCOPES[kind],
                        "provided": ",".join(sorted(self.scopes))}
        try:
            limit = int(body.get("limit") or 100)
            start = _offset(str(body.get("cursor") or ""))
        except ValueError:
            return {"ok": False, "error": "invalid_cursor"}
        if not 1 <= limit < 1000:
            return {"ok": False, "error": "invalid_limit"}
        everything = list(self.channels.values())
        window = everything[start:start + limit]  # the filters apply after the page's limit
        shown = [c for c in window
                 if ("private_channel" if c["is_private"] else "public_channel") in types
                 and (c["is_member"] or not c["is_private"])
                 and not (c["is_archived"] and _flag(body.get("exclude_archived")))]
        more = start + limit < len(everything)
        return {"ok": True, "channels": [_as_listed(c) for c in shown],
                "response_metadata": {"next_cursor": _cursor(start + limit) if more else ""}}

    def _channel_id(self, channel: str) -> str:
        """The id of a channel given by id or name: a name the workspace does not have yet
        becomes a public channel the bot is in (`#deploys` → `CDEPLOYS`)."""
        if re.fullmatch(r"[CDG][A-Z0-9]+", channel):
            return channel
        name = channel.removeprefix("#")
        for known in self.channels.values():
            if known["name"] == name:
                return str(known["id"])
        made = "C" + re.sub(r"[^A-Za-z0-9]", "", name).upper()
        self.channels[made] = {"id": made, "name": name, "is_private": False,
                               "is_archived": False, "is_member": True}
        return made


def _as_listed(channel: dict[str, Any]) -> dict[str, Any]:
    """A channel as conversations.list shows it (a few of its many fields)."""
    return {"id": channel["id"], "name": channel["name"], "name_normalized": channel["name"],
            "is_channel": not channel["is_private"], "is_group": False, "is_im": False,
            "is_mpim": False, "is_private": channel["is_private"],
            "is_archived": channel["is_archived"], "is_member": channel["is_member"]}


def _cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _offset(cursor: str) -> int:
    """Where a cursor starts (0 for none); ValueError for one Slack did not give."""
    if not cursor:
        return 0
    try:
        kind, _, offset = base64.b64decode(cursor, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as e:
        raise ValueError(cursor) from e
    if kind != "offset" or not offset.isdigit():
        raise ValueError(cursor)
    return int(offset)


def _body(headers: dict[str, str], raw: bytes) -> dict[str, Any]:
    kind = headers.get("Content-Type", "")
    if "json" in kind:
        parsed: dict[str, Any] = json.loads(raw or b"{}")
        return parsed
    form = dict(urllib.parse.parse_qsl(raw.decode()))
    if isinstance(form.get("blocks"), str):
        form["blocks"] = json.loads(form["blocks"])
    return form


def _metadata(body: dict[str, Any]) -> dict[str, Any] | None:
    """A message's metadata as Slack keeps it ({} for none); None if it is malformed."""
    metadata = body.get("metadata") or {}
    if isinstance(metadata, str):  # a form-encoded call sends it as JSON text
        metadata = json.loads(metadata or "{}")
    if metadata == {}:
        return {}
    if not (isinstance(metadata, dict) and isinstance(metadata.get("event_type"), str)
            and isinstance(metadata.get("event_payload"), dict)):
        return None
    return {"event_type": metadata["event_type"], "event_payload": metadata["event_payload"]}


def _as_history(message: dict[str, Any], with_metadata: bool) -> dict[str, Any]:
    """A stored message as conversations.history shows a bot's message."""
    shown = {"type": "message", "user": "U0BLUEGREEN", "bot_id": BOT_ID, "app_id": APP_ID,
             "text": message["text"], "ts": message["ts"], "blocks": message["blocks"]}
    if with_metadata and message["metadata"]:
        shown["metadata"] = message["metadata"]
    return shown


def _flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true")


def button_texts(message: dict[str, Any] | None) -> list[str]:
    """The labels of a message's buttons, in order."""
    if message is None:
        return []
    return [element["text"]["text"] for block in message["blocks"] if block["type"] == "actions"
            for element in block["elements"]]


def button(message: dict[str, Any] | None, label: str) -> dict[str, Any]:
    """The button labelled `label` (its action_id and value)."""
    for block in (message or {}).get("blocks", []):
        for element in block.get("elements", []) if block["type"] == "actions" else []:
            if element["text"]["text"] == label:
                return dict(element)
    raise AssertionError(f"no button {label!r}; buttons: {button_texts(message)}")


def message_text(message: dict[str, Any] | None) -> str:
    """Everything a person can read in the message (blocks and fallback), as one string."""
    return json.dumps(message or {}, ensure_ascii=False)
