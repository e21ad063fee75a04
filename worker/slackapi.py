"""Our side of Slack's Web API: the client, its failures, and finding a message again.

`slack_client(settings)` makes the bot's `WebClient` (no sleeping retries of its own);
`call(client, method, ...)` makes one call and turns every way it can fail into a
`worker.chatretry.ChatFailure` that is safe to log (status and error code, never the
request), with `status` 0 when no answer came at all. `may_have_worked` says whether the
call may have done its work all the same: no answer, a 5xx, or an error of Slack's own
trouble (`UNSURE`: Slack documents `fatal_error` and `internal_error` as possibly coming
after part of the work succeeded).

`chat.postMessage` has no idempotency key, so a post that may have worked (its answer
was lost to a read timeout or a dropped connection, or was one of Slack's own troubles)
may be in the channel, and posting again would leave two messages, the first frozen
with whatever buttons it had. So each release message carries Slack message metadata,
`metadata(release, app)` (`event_type` `bluegreen_release`, the release id in
`event_payload`), and `find()` looks for it in the channel's recent history
(`conversations.history` with `include_all_metadata`, from a little before the first
post that may have worked). That method takes a channel id, never a name, and needs the
bot scope `channels:history` (`groups:history` in a private channel). The id of a
channel configured by name is kept per configured channel (`remember_channel`,
`channel_id`): the one Slack answers a post with, or, before any post to it has been
answered, the one Slack's list of channels gives (`lookup_channel`:
`conversations.list`, page by page, which needs `channels:read` for a public channel and
`groups:read` for a private one). A name that list does not have is remembered as
unlisted for `UNLISTED_FOR` (`remember_unlisted`, `is_unlisted`), so that every post
that may have worked does not read the whole list again. What to do when Slack cannot
be asked is the notifier's call (`worker.notify`).
"""

from __future__ import annotations

import http.client
import re
from typing import Any

from redis import Redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from worker import chatretry
from worker.chatretry import LOOKBACK, ChatFailure
from worker.config import Settings
from worker.redistext import as_text

SLACK_TIMEOUT = 5
PERMANENT = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked",
                       "token_expired", "channel_not_found", "not_in_channel", "is_archived",
                       "missing_scope", "no_permission", "invalid_blocks", "msg_too_long",
                       "restricted_action"})
# Slack's own trouble: `fatal_error` and `internal_error` are documented as possibly
# coming after some of the work succeeded; `service_unavailable` and `request_timeout`
# do not say it did not, so a post answered with one of them is looked for too.
UNSURE = frozenset({"fatal_error", "internal_error", "service_unavailable", "request_timeout"})
EVENT_TYPE = "bluegreen_release"
CHANNELS_KEY = "bluegreen:chat:slack:channels"   # hash: configured channel name -> its id
UNLISTED_KEY = "bluegreen:chat:slack:unlisted"   # hash: channel name -> until when unlisted
UNLISTED_FOR = 300.0  # s a name conversations.list did not have is taken as still not there
PAGE = 200         # messages per history page (Slack suggests at most 200)
PAGES = 5          # pages read at most: a channel this busy is not a deploys channel
CHANNEL_ID = re.compile(r"[CDG][A-Z0-9]{2,}")   # ids are upper case, names never are
# conversations.list is rate-limited to ~20 calls a minute (Tier 2): pages as large as it
# allows ("under 1000"), and at most this many of them per kind of channel.
LIST_PAGE = 999
LIST_PAGES = 20
# The kinds of channel a name is looked for among, and the scope each needs to be listed.
CHANNEL_KINDS = {"public_channel": "channels:read", "private_channel": "groups:read"}


def slack_client(settings: Settings) -> WebClient:
    """A Web API client without slack_sdk's own sleeping retries (the notifier schedules them)."""
    base = settings.slack_api_url if settings.slack_api_url.endswith("/") \
        else settings.slack_api_url + "/"
    return WebClient(token=settings.slack_bot_token, base_url=base, timeout=SLACK_TIMEOUT,
                     retry_handlers=[])


def call(client: WebClient, method: str, **kwargs: Any) -> dict[str, Any]:
    """One Web API call (`method` as slack_sdk names it); every failure is a `ChatFailure`."""
    try:
        response = getattr(client, method)(**kwargs)
    except SlackApiError as e:
        raise _api_failure(e) from None
    except (SlackClientError, OSError, http.client.HTTPException) as e:
        # URLError, timeouts, refused or dropped connections: no answer (status 0)
        raise ChatFailure(f"Slack is unreachable ({type(e).__name__})") from None
    data = response.data
    return data if isinstance(data, dict) else {}


def _api_failure(error: SlackApiError) -> ChatFailure:
    """Slack's answer as a failure: status and error code only (never the request)."""
    response = error.response
    data = response.data if isinstance(response.data, dict) else {}
    code = str(data.get("error") or "")[:80]
    status = response.status_code
    if status == 429 or code == "ratelimited":
        retry_after = chatretry.retry_after_seconds(response.headers.get("Retry-After")
                                                    or response.headers.get("retry-after"))
        return ChatFailure(f"Slack rate-limited us (retry after {retry_after:g} s)",
                           retry_after=retry_after, error="ratelimited", status=status)
    if code.startswith("Received"):  # slack_sdk's note on a body that is not JSON
        code = ""
    what = f"HTTP {status}" + (f", {code}" if code else "")
    return ChatFailure(f"Slack answered {what}", permanent=code in PERMANENT, error=code,
                       status=status, unsure=code in UNSURE)


# -- finding a release's message again --------------------------------------------------------


def metadata(release_id: str, app: str) -> dict[str, Any]:
    """The metadata that marks a release's message, for `chat.postMessage`."""
    return {"event_type": EVENT_TYPE, "event_payload": {"release": release_id, "app": app}}


def is_marked(message: dict[str, Any], release_id: str) -> bool:
    """Whether a message from `conversations.history` is the one about `release_id`."""
    meta = message.get("metadata")
    if not isinstance(meta, dict) or meta.get("event_type") != EVENT_TYPE:
        return False
    payload = meta.get("event_payload")
    return isinstance(payload, dict) and payload.get("release") == release_id


def channel_id(redis: Redis, channel: str) -> str | None:
    """The id of a configured channel: itself if it is one, else what Slack answered a
    post to it with (None before the first post to it got an answer)."""
    if CHANNEL_ID.fullmatch(channel):
        return channel
    found = redis.hget(CHANNELS_KEY, channel)
    return as_text(found) if found is not None else None


def remember_channel(redis: Redis, channel: str, answered: str) -> None:
    """Keep the id Slack answered a post to `channel` with, if `channel` is a name."""
    if answered and answered != channel and not CHANNEL_ID.fullmatch(channel):
        redis.hset(CHANNELS_KEY, channel, answered)


def is_unlisted(redis: Redis, channel: str, *, now: float) -> bool:
    """Whether Slack's list of channels did not have `channel` less than `UNLISTED_FOR` ago."""
    until = redis.hget(UNLISTED_KEY, channel)
    return until is not None and float(as_text(until)) > now


def remember_unlisted(redis: Redis, channel: str, *, now: float) -> None:
    """Keep that Slack's list of channels does not have `channel`, for `UNLISTED_FOR`."""
    redis.hset(UNLISTED_KEY, channel, f"{now + UNLISTED_FOR:.6f}")


def lookup_channel(client: WebClient, name: str) -> str | None:
    """The id of the channel called `name` (`#deploys` or `deploys`) as Slack lists it
    to the bot: its public channels and the private ones it is in, archived ones left
    out; None if the list does not have it. Both kinds are listed at once; if the token
    may not list one (`missing_scope`), each kind it may list is read alone, and if the
    channel is not found that way the failure raised (permanent) names what is missing."""
    wanted = name.removeprefix("#").lower()
    try:
        return _listed(client, ",".join(CHANNEL_KINDS), wanted)
    except ChatFailure as failure:
        if failure.error != "missing_scope":
            raise
        refused = failure
    missing = []
    for kind, scope in CHANNEL_KINDS.items():
        try:
            found = _listed(client, kind, wanted)
        except ChatFailure as failure:
            if failure.error != "missing_scope":
                raise
            missing.append(scope)
            continue
        if found is not None:
            return found
    if missing:
        raise ChatFailure(f"Slack answered missing_scope: the bot token lacks "
                          f"{' and '.join(missing)}", permanent=True, error="missing_scope",
                          status=refused.status)
    return None


def _listed(client: WebClient, kind: str, wanted: str) -> str | None:
    """The id of the channel of `kind` named `wanted`, read page by page (a page may hold
    none of them and still not be the last: Slack filters a page after taking it)."""
    cursor: str | None = None
    for _ in range(LIST_PAGES):
        answer = call(client, "conversations_list", types=kind, exclude_archived=True,
                      limit=LIST_PAGE, cursor=cursor)
        for channel in answer.get("channels") or []:
            if isinstance(channel, dict) and channel.get("name") == wanted \
                    and isinstance(channel.get("id"), str):
                return str(channel["id"])
        cursor = str((answer.get("response_metadata") or {}).get("next_cursor") or "") or None
        if cursor is None:
            break
    return None


def find(client: WebClient, channel: str, release_id: str, *, since: float) -> str | None:
    """The `ts` of the message marked with `release_id` in `channel` (an id), posted since
    a little before `since`; the oldest if there are several, None if there is none."""
    found: list[str] = []
    cursor: str | None = None
    for _ in range(PAGES):
        answer = call(client, "conversations_history", channel=channel,
                      oldest=f"{since - LOOKBACK:.6f}", limit=PAGE, include_all_metadata=True,
                      cursor=cursor)
        found += [m["ts"] for m in answer.get("messages") or []
                  if isinstance(m, dict) and isinstance(m.get("ts"), str)
                  and is_marked(m, release_id)]
        cursor = str((answer.get("response_metadata") or {}).get("next_cursor") or "") or None
        if not answer.get("has_more") or cursor is None:
            break
    return min(found, key=float) if found else None
