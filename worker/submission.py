"""A delivery's tag pushes, deduplicated, recorded and queued in one atomic Redis call.

`plan(...)` builds, without any I/O, what a delivery would write: for each (push, app)
pair the keys that mark it as seen, its queue, and the exact commands that record
the release and enqueue its rq job: the store's own (`releases.add_commands`, which
`ReleaseStore.add` runs too) and rq's job as `queueing.release_job_commands` builds
it with rq's `Job`. All of it travels as flat arguments, each delivery's laid out as
the script reads them (counts before lists), so the script finds every command in
ARGV without building tables of them: that cost Redis less than one msgpack value
per delivery did (unpacking it was a third of the script's time). `SUBMIT` is the
Lua script that, for one or several deliveries, in one round trip and atomically
(Redis runs a script alone):

1. checks every command it may run against the caller's ACL, and refuses the whole
   call before writing anything if one is denied (EXEC's abort did the same);
2. for each pair in order, either finds a seen key (one MGET of them) and answers the
   original release (its hash, and its place in the queue while it waits), or runs
   the pair's writes, the last of which pushes its job onto the queue, and answers
   that push's reply, the queue's new length (the new job's place: it went to the back);
3. counts each delivery once in the webhook metrics, as `queued` if anything of it
   was recorded and `duplicate` otherwise.

`answers(...)` turns a delivery's part of the reply into `Submitted` values. The sync
engine (`worker.api.Engine.submit_tags`, one delivery per call) and the web process's
asyncio intake (`webhook.asgi`, the deliveries waiting together per call) run the same
plan and the same script, and read the reply the same way; only the client differs.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
-- ARGV: the queued state's name, the release key prefix, then each delivery in turn:
-- metrics key, queued field, duplicate field, number of pairs; then each pair: number
-- of seen keys, the seen keys, queue key, number of commands; then each command: its
-- number of arguments, then the arguments. A pair's last command pushes its job onto
-- the queue: RPUSH's reply, the queue's new length, is the new release's place.
local queued_state, release_prefix = ARGV[1], ARGV[2]
local function allowed(...)
  if not redis.acl_check_cmd(...) then
    error({err = 'NOPERM this user may not run ' .. select(1, ...) .. ' on ' ..
           tostring(select(2, ...)) .. '; nothing was written'})
  end
end
-- The layout, as places in ARGV, with every command checked against the ACL first.
local deliveries, i = {}, 3
while i <= #ARGV do
  local delivery = {metrics = ARGV[i], queued = ARGV[i + 1], duplicate = ARGV[i + 2],
                    pairs = {}}
  local npairs = tonumber(ARGV[i + 3])
  i = i + 4
  if delivery.metrics ~= '' then allowed('HINCRBY', delivery.metrics, delivery.queued, '1') end
  for p = 1, npairs do
    local nseen = tonumber(ARGV[i])
    local pair = {seen = i + 1, last_seen = i + nseen, queue = ARGV[i + nseen + 1],
                  ncommands = tonumber(ARGV[i + nseen + 2])}
    allowed('MGET', unpack(ARGV, pair.seen, pair.last_seen))
    allowed('HGETALL', release_prefix .. 'x')
    allowed('LPOS', pair.queue, 'x')
    i = i + nseen + 3
    pair.commands = i
    for _ = 1, pair.ncommands do
      local argc = tonumber(ARGV[i])
      allowed(unpack(ARGV, i + 1, i + argc))
      i = i + argc + 1
    end
    delivery.pairs[p] = pair
  end
  deliveries[#deliveries + 1] = delivery
end
local replies = {}
for d, delivery in ipairs(deliveries) do
  local answers, created = {}, false
  for p, pair in ipairs(delivery.pairs) do
    local original, record = false, {}
    for _, value in ipairs(redis.call('MGET', unpack(ARGV, pair.seen, pair.last_seen))) do
      original = original or value
    end
    if original then  -- an empty record: it is gone, and the push is new again
      record = redis.call('HGETALL', release_prefix .. original)
    end
    if #record > 0 then
      local place = false
      for f = 1, #record, 2 do
        if record[f] == 'state' and record[f + 1] == queued_state then
          place = redis.call('LPOS', pair.queue, original)
        end
      end
      answers[p] = {0, original, record, place}
    else
      local c, length = pair.commands, false
      for _ = 1, pair.ncommands do
        local argc = tonumber(ARGV[c])
        length = redis.call(unpack(ARGV, c + 1, c + argc))
        c = c + argc + 1
      end
      answers[p] = {1, length}
      created = true
    end
  end
  if delivery.metrics ~= '' then
    redis.call('HINCRBY', delivery.metrics, created and delivery.queued or delivery.duplicate, 1)
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

    args: list[Any]  # this delivery's arguments to the script, in its layout
    candidates: list[Release]  # one per (push, app) pair, in the script's order


def plan(settings: Settings, events: Sequence[TagEvent], *,
         clock: Callable[[], float], count_as: str | None = None) -> Plan | None:
    """The script's arguments for `events` (None when no configured app takes any of them).

    `count_as` names the forge to count the delivery under in the webhook metrics
    (None: not counted, e.g. for a tag submitted by a test or a benchmark)."""
    if count_as is None:
        args: list[Any] = ["", "", "", 0]
    else:
        args = [metrics.WEBHOOKS_KEY, metrics.webhook_field(count_as, "queued"),
                metrics.webhook_field(count_as, "duplicate"), 0]
    candidates: list[Release] = []
    for event in events:
        for app in settings.apps_for_repository(event.repository):
            read = app.read_tag(event.tag)
            if read is None:
                continue
            seen = seen_keys(event, app)
            release, commands = _writes(event, app, read, seen, clock())
            args += [len(seen), *seen, queueing.queue_key(app.queue), len(commands)]
            for command in commands:
                args.append(len(command))
                args += command
            candidates.append(release)
    if not candidates:
        return None
    args[3] = len(candidates)  # the number of (push, app) pairs
    return Plan(args=args, candidates=candidates)


def script_args(plans: Sequence[Plan]) -> list[Any]:
    """`SUBMIT`'s arguments for several deliveries (their answers come back in order)."""
    return [ReleaseState.QUEUED.value, RELEASE_PREFIX, *itertools.chain.from_iterable(
        p.args for p in plans)]


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
        place = answer[3]  # None unless the original still waits in the queue
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


def _writes(event: TagEvent, app: AppConfig, read: tuple[Color, str], seen: list[str],
            now: float) -> tuple[Release, list[tuple[Any, ...]]]:
    """A new release for `app` of the tag `read` as (colour, version), and the commands
    that record and enqueue it: the store's (`releases.add_commands`), the dedupe marks,
    and rq's job (`queueing.release_job_commands`), in the order one MULTI/EXEC would
    run them. rq's job comes last, its push onto the queue last of all: the script
    answers that push's reply (the queue's length) as the new release's place."""
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
        app, release_id=release.id,
        description=f"release {event.tag} of {app.name} into {color}")
    return release, commands


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
