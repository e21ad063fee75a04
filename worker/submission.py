"""A delivery's tag pushes, deduplicated, recorded and queued in one atomic Redis call.

`plan(...)` builds, without any I/O, what a delivery would write: for each (push, app)
pair the keys that mark it as seen, its queue, and the exact commands that record
the release and enqueue its rq job: the store's own (`releases.add_commands`, which
`ReleaseStore.add` runs too) and rq's job as `queueing.release_job_commands` builds
it with rq's `Job`. All of it travels as one msgpack value per delivery (Redis's Lua
unpacks it in C; ~150 separate arguments cost more to pack and to read than the
writes themselves). `SUBMIT` is the Lua script that, for one or several deliveries,
in one round trip and atomically (Redis runs a script alone):

1. checks every command it may run against the caller's ACL, and refuses the whole
   call before writing anything if one is denied (EXEC's abort did the same);
2. for each pair in order, either finds a seen key and answers the original release
   (its hash, and its place in the queue while it waits), or runs the pair's writes
   and answers the queue's length (the new job's place: it went to the back);
3. counts each delivery once in the webhook metrics, as `queued` if anything of it
   was recorded and `duplicate` otherwise.

`answers(...)` turns a delivery's part of the reply into `Submitted` values. The sync
engine (`worker.api.Engine.submit_tags`, one delivery per call) and the web process's
asyncio intake (`webhook.asgi`, the deliveries waiting together per call) run the same
plan and the same script, and read the reply the same way; only the client differs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]
from redis import Redis

from worker import metrics, queueing
from worker.colors import Color
from worker.config import AppConfig, Settings
from worker.releases import (
    RELEASE_KEY,
    Release,
    ReleaseState,
    add_commands,
    intake_entry,
    new_release_id,
)

DEDUPE_TTL = 7 * 24 * 3600
SEEN_DELIVERY_KEY = "bluegreen:seen:delivery:{forge}:{digest}:{app}"
SEEN_TAG_KEY = "bluegreen:seen:tag:{app}:{digest}"
RELEASE_PREFIX = RELEASE_KEY.format(id="")

SUBMIT = """
-- ARGV: the queued state's name, the release key prefix, then one msgpack payload per
-- delivery: {metrics key, queued field, duplicate field, pairs}, each pair being
-- {seen keys, queue key, commands}, each command a list of strings.
local queued_state, release_prefix = ARGV[1], ARGV[2]
local deliveries = {}
for d = 3, #ARGV do deliveries[d - 2] = cmsgpack.unpack(ARGV[d]) end
local function allowed(...)
  if not redis.acl_check_cmd(...) then
    error({err = 'NOPERM this user may not run ' .. select(1, ...) .. ' on ' ..
           tostring(select(2, ...)) .. '; nothing was written'})
  end
end
for _, delivery in ipairs(deliveries) do
  for _, pair in ipairs(delivery[4]) do
    for _, key in ipairs(pair[1]) do allowed('GET', key) end
    allowed('HGETALL', release_prefix .. 'x')
    allowed('LLEN', pair[2])
    allowed('LPOS', pair[2], 'x')
    for _, cmd in ipairs(pair[3]) do allowed(unpack(cmd)) end
  end
  if delivery[1] ~= '' then allowed('HINCRBY', delivery[1], delivery[2], '1') end
end
local replies = {}
for d, delivery in ipairs(deliveries) do
  local answers, created = {}, false
  for p, pair in ipairs(delivery[4]) do
    local original, record = false, {}
    for _, key in ipairs(pair[1]) do
      original = original or redis.call('GET', key)
    end
    if original then  -- an empty record: it is gone, and the push is new again
      record = redis.call('HGETALL', release_prefix .. original)
    end
    if #record > 0 then
      local place = false
      for f = 1, #record, 2 do
        if record[f] == 'state' and record[f + 1] == queued_state then
          place = redis.call('LPOS', pair[2], original)
        end
      end
      answers[p] = {0, original, record, place}
    else
      for _, cmd in ipairs(pair[3]) do redis.call(unpack(cmd)) end
      answers[p] = {1, redis.call('LLEN', pair[2])}
      created = true
    end
  end
  if delivery[1] ~= '' then
    redis.call('HINCRBY', delivery[1], created and delivery[2] or delivery[3], 1)
  end
  replies[d] = answers
end
return replies
"""


@dataclass(frozen=True)
class TagEvent:
    """A tag push as the web side parsed it from a forge's webhook."""

    forge: str
    delivery_id: str
    repository: str
    tag: str
    commit: str
    pusher: str


@dataclass(frozen=True)
class Submitted:
    """The answer for one matching app: the release, whether it was already known, its place."""

    release: Release
    duplicate: bool
    position: int | None  # 1 = next to run; None when not waiting in the queue


@dataclass(frozen=True)
class Plan:
    """What one delivery would write: the script's arguments and the candidate releases."""

    payload: bytes  # this delivery's argument to the script, msgpack-encoded
    candidates: list[Release]  # one per (push, app) pair, in the script's order


def plan(redis: Redis, settings: Settings, events: Sequence[TagEvent], *,
         clock: Callable[[], float], count_as: str | None = None) -> Plan | None:
    """The script's arguments for `events` (None when no configured app takes any of them).

    `count_as` names the forge to count the delivery under in the webhook metrics
    (None: not counted, e.g. for a tag submitted by a test or a benchmark)."""
    pairs: list[Any] = []
    candidates: list[Release] = []
    for event in events:
        for app in settings.apps_for_repository(event.repository):
            read = app.read_tag(event.tag)
            if read is None:
                continue
            seen = seen_keys(event, app)
            release, commands = _writes(redis, event, app, read, seen, clock())
            # Numbers travel as msgpack numbers; Lua hands them to Redis as "%.17g"
            # text, which parses back to the same integer or double.
            pairs.append([seen, queueing.queue_key(app.queue), commands])
            candidates.append(release)
    if not candidates:
        return None
    if count_as is None:
        head = ["", "", ""]
    else:
        head = [metrics.WEBHOOKS_KEY, metrics.webhook_field(count_as, "queued"),
                metrics.webhook_field(count_as, "duplicate")]
    # use_bin_type=False: the msgpack of Redis's Lua (cmsgpack) predates the bin types
    return Plan(payload=msgpack.packb([*head, pairs], use_bin_type=False),
                candidates=candidates)

def script_args(plans: Sequence[Plan]) -> list[Any]:
    """`SUBMIT`'s arguments for several deliveries (their answers come back in order)."""
    return [ReleaseState.QUEUED.value, RELEASE_PREFIX, *(p.payload for p in plans)]


def answers(plan: Plan, reply: list[Any]) -> list[Submitted]:
    """The script's reply for `plan`'s delivery as one `Submitted` per (push, app) pair."""
    submitted = []
    for candidate, answer in zip(plan.candidates, reply, strict=True):
        if int(answer[0]) == 1:
            submitted.append(Submitted(release=candidate, duplicate=False,
                                       position=int(answer[1])))
            continue
        flat = answer[2]
        original = Release.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))
        place = answer[3] if len(answer) > 3 else None
        position = int(place) + 1 if isinstance(place, int) else None
        submitted.append(Submitted(release=original, duplicate=True, position=position))
    return submitted


def seen_keys(event: TagEvent, app: AppConfig) -> list[str]:
    """Keys that mark this delivery, and this repository+tag+commit, as seen for `app`."""
    keys = [SEEN_TAG_KEY.format(app=app.name, digest=_digest(
        event.repository.casefold(), event.tag, event.commit))]
    if event.delivery_id:
        # One delivery may carry several tags (Bitbucket): it is seen once per tag.
        keys.insert(0, SEEN_DELIVERY_KEY.format(forge=event.forge, app=app.name,
                                                digest=_digest(event.delivery_id, event.tag)))
    return keys


def _writes(redis: Redis, event: TagEvent, app: AppConfig, read: tuple[Color, str],
            seen: list[str], now: float) -> tuple[Release, list[tuple[Any, ...]]]:
    """A new release for `app` of the tag `read` as (colour, version), and the commands
    that record and enqueue it: the store's (`releases.add_commands`), the dedupe marks,
    and rq's job (`queueing.release_job_commands`), in the order one MULTI/EXEC would
    run them."""
    color, version = read
    release = Release(
        id=new_release_id(app.name, event.tag), app=app.name, color=color, tag=event.tag,
        version=version, commit=event.commit, forge=event.forge,
        delivery_id=event.delivery_id, repository=event.repository,
        state=ReleaseState.QUEUED, created_at=now, updated_at=now,
        actor=f"{event.forge}:{event.pusher}")
    entry = intake_entry(release, (
        f"tag {event.tag} ({event.commit[:12]}) pushed to {event.repository} by "
        f"{event.pusher}; {event.forge} delivery {event.delivery_id}"))
    commands = add_commands(release, entry)
    commands += [("SET", key, release.id, "EX", DEDUPE_TTL) for key in seen]
    commands += queueing.release_job_commands(
        redis, app, release_id=release.id,
        description=f"release {event.tag} of {app.name} into {color}")
    return release, commands


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
