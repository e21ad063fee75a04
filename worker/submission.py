"""A delivery's tag pushes, deduplicated, recorded and queued in one atomic Redis call.

`plan(...)` makes, without any I/O, what a delivery brings: for each (push, app) pair
the keys that mark it as seen and the new release's facts, the values of its record
(`Release.to_hash`), its first audit entry (`AuditEntry.encoded`) and the values that
differ between rq jobs (`queueing.release_job_values`). `SUBMIT` is the Lua script
that writes from them, for one or several deliveries, in one round trip and
atomically (Redis runs a script alone), exactly what the store's `add_commands` and
rq's `enqueue_call` would write, in that order (`tests/test_submission.py` and
`tests/test_queueing.py` hold it to both):

1. checks every command it may run against the caller's ACL, and refuses the whole
   call before writing anything if one is denied (EXEC's abort did the same);
2. for each pair in order, either finds a seen key (one MGET of them) and answers the
   original release (its hash, and its place in the queue while it waits), or writes
   the release's record, indexes, audit entry and event, the dedupe marks, and rq's
   job (from rq's own `to_dict()` of a template job, made once: `_script()`), pushes
   the job onto its queue last, and answers that push's reply, the queue's new length
   (the new job's place: it went to the back);
3. counts each delivery once in the webhook metrics, as `queued` if anything of it
   was recorded and `duplicate` otherwise.

What is the same for every release (field names, key formats, rq's constant job
fields) is written into the script from the Python that defines it, rather than sent
with each delivery: a delivery's pair travels as ~25 arguments instead of the ~140 its
commands are, and the web process builds no commands (`docs/benchmarks.md`, change 20).

`answers(...)` turns a delivery's part of the reply into `Submitted` values. The sync
engine (`worker.api.Engine.submit_tags`, one delivery per call) and the web process's
asyncio intake (`webhook.groupcommit`, the deliveries waiting together per call) run the
same plan and the same script, and read the reply the same way; only the client differs.
"""

from __future__ import annotations

import hashlib
import itertools
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rq import Queue
from rq.job import Job

from worker import metrics, queueing
from worker.colors import Color
from worker.config import AppConfig, Settings, repository_key
from worker.releases import (
    AUDIT_KEY,
    EVENTS_KEY,
    EVENTS_MAXLEN,
    INDEX_KEYS,
    NEW_RECORD_FIELDS,
    RELEASE_KEY,
    Release,
    ReleaseState,
    intake_entry,
    new_release_id,
)

DEDUPE_TTL = 7 * 24 * 3600
SEEN_DELIVERY_KEY = "bluegreen:seen:delivery:{forge}:{digest}:{app}"
SEEN_TAG_KEY = "bluegreen:seen:tag:{app}:{digest}"
# A pair's arguments after its seen keys: the record's values, the audit entry, then
# the job's varying values.
PAIR_VALUES = len(NEW_RECORD_FIELDS) + 1 + len(queueing.RELEASE_JOB_VARYING)


def _lua_string(value: Any) -> str:
    """`value` as a Lua string literal of the bytes Redis would get for it as an argument
    (text as UTF-8, numbers as their repr, as redis-py and hiredis send them)."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = str.encode(value)  # an enum's value, not its name
    else:
        data = repr(value).encode()
    return '"' + "".join(f"\\{byte}" for byte in data) + '"'


def _lua_key(key_format: str) -> str:
    """A key format (`bluegreen:releases:app:{app}:{color}`) as the Lua expression that
    makes the key from the script's local variables of the same names."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(key_format):
        if literal:
            parts.append(_lua_string(literal))
        if name:
            parts.append(name)
    return " .. ".join(parts)


def _script() -> str:
    """`SUBMIT`, with what every release shares written in from its definitions."""
    job, job_places = queueing.release_job_template()
    field = {name: i for i, name in enumerate(NEW_RECORD_FIELDS)}
    constants = {
        "RECORD_FIELDS": "{" + ", ".join(map(_lua_string, NEW_RECORD_FIELDS)) + "}",
        "JOB_TEMPLATE": "{" + ", ".join(map(_lua_string, job)) + "}",
        "JOB_VARYING": "{" + ", ".join(
            str(job_places[name] + 1) for name in queueing.RELEASE_JOB_VARYING) + "}",
        "ID": str(field["id"]), "APP": str(field["app"]), "COLOR": str(field["color"]),
        "STATE": str(field["state"]), "CREATED_AT": str(field["created_at"]),
        "ORIGIN": str(queueing.RELEASE_JOB_VARYING.index("origin")),
        "NVALUES": str(PAIR_VALUES),
        "RECORD_KEY": _lua_key(RELEASE_KEY), "AUDIT_KEY": _lua_key(AUDIT_KEY),
        "INDEX_KEYS": "{" + ", ".join(map(_lua_key, INDEX_KEYS)) + "}",
        "EVENTS_KEY": _lua_string(EVENTS_KEY), "EVENTS_MAXLEN": str(EVENTS_MAXLEN),
        "QUEUED": _lua_string(ReleaseState.QUEUED.value), "DEDUPE_TTL": str(DEDUPE_TTL),
        "QUEUES_KEY": _lua_string(Queue.redis_queues_keys),
        "QUEUE_PREFIX": _lua_string(Queue.redis_queue_namespace_prefix),
        "JOB_PREFIX": _lua_string(Job.redis_job_namespace_prefix),
    }
    if queueing.release_job_id("x") != "x":
        raise RuntimeError("the script names a release's job by the release's id")
    return string.Template(_SUBMIT).substitute(constants)


_SUBMIT = """
-- ARGV: each delivery in turn: metrics key, queued field, duplicate field, number of
-- pairs; then each pair: number of seen keys, the seen keys, then $NVALUES values: the
-- new record's (as RECORD_FIELDS names them), its first audit entry, and the job's
-- varying values (JOB_VARYING: where each goes in JOB_TEMPLATE).
local RECORD_FIELDS, JOB_TEMPLATE, JOB_VARYING = $RECORD_FIELDS, $JOB_TEMPLATE, $JOB_VARYING
local function allowed(...)
  if not redis.acl_check_cmd(...) then
    error({err = 'NOPERM this user may not run ' .. select(1, ...) .. ' on ' ..
           tostring(select(2, ...)) .. '; nothing was written'})
  end
end
-- The layout, as places in ARGV, and each pair's keys, every command checked first.
local deliveries, i = {}, 1
while i <= #ARGV do
  local delivery = {metrics = ARGV[i], queued = ARGV[i + 1], duplicate = ARGV[i + 2],
                    pairs = {}}
  local npairs = tonumber(ARGV[i + 3])
  i = i + 4
  if delivery.metrics ~= '' then allowed('HINCRBY', delivery.metrics, delivery.queued, '1') end
  for p = 1, npairs do
    local nseen = tonumber(ARGV[i])
    -- where the pair's values start: the record's, then its audit entry, then the job's
    local v = i + nseen + 1
    local entry = v + #RECORD_FIELDS
    local job_values = entry + 1
    local id, app, color, state = ARGV[v + $ID], ARGV[v + $APP], ARGV[v + $COLOR], ARGV[v + $STATE]
    local queue = $QUEUE_PREFIX .. ARGV[job_values + $ORIGIN]
    local pair = {seen = i + 1, last_seen = i + nseen, values = v, entry = entry,
                  job_values = job_values, id = id, app = app, state = state, queue = queue,
                  record = $RECORD_KEY, audit = $AUDIT_KEY, indexes = $INDEX_KEYS,
                  job = $JOB_PREFIX .. id}
    allowed('MGET', unpack(ARGV, pair.seen, pair.last_seen))
    allowed('HGETALL', pair.record)
    allowed('LPOS', queue, id)
    allowed('HSET', pair.record, 'id', id)
    for _, key in ipairs(pair.indexes) do allowed('ZADD', key, '0', id) end
    allowed('RPUSH', pair.audit, id)
    allowed('XADD', $EVENTS_KEY, '*', 'release', id)
    for s = pair.seen, pair.last_seen do allowed('SET', ARGV[s], id) end
    allowed('SADD', $QUEUES_KEY, queue)
    allowed('HSET', pair.job, 'id', id)
    allowed('RPUSH', queue, id)
    delivery.pairs[p] = pair
    i = job_values + #JOB_VARYING
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
      local id = original
      record = redis.call('HGETALL', $RECORD_KEY)
    end
    if #record > 0 then
      local place = false
      for f = 1, #record, 2 do
        if record[f] == 'state' and record[f + 1] == $QUEUED then
          place = redis.call('LPOS', pair.queue, original)
        end
      end
      answers[p] = {0, original, record, place}
    else
      local v, fields = pair.values, {}
      for f, name in ipairs(RECORD_FIELDS) do
        fields[2 * f - 1], fields[2 * f] = name, ARGV[v + f - 1]
      end
      local at = ARGV[v + $CREATED_AT]
      redis.call('HSET', pair.record, unpack(fields))
      for _, key in ipairs(pair.indexes) do redis.call('ZADD', key, at, pair.id) end
      redis.call('RPUSH', pair.audit, ARGV[pair.entry])
      redis.call('XADD', $EVENTS_KEY, 'MAXLEN', '~', $EVENTS_MAXLEN, '*', 'release', pair.id,
                 'app', pair.app, 'state', pair.state, 'step', '', 'at', at)
      for s = pair.seen, pair.last_seen do
        redis.call('SET', ARGV[s], pair.id, 'EX', $DEDUPE_TTL)
      end
      redis.call('SADD', $QUEUES_KEY, pair.queue)
      local job = {unpack(JOB_TEMPLATE)}
      for k, place in ipairs(JOB_VARYING) do job[place] = ARGV[pair.job_values + k - 1] end
      redis.call('HSET', pair.job, unpack(job))
      answers[p] = {1, redis.call('RPUSH', pair.queue, pair.id)}
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

SUBMIT = _script()


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
            release = _new_release(event, app, read, clock())
            record = release.to_hash()
            if tuple(record) != NEW_RECORD_FIELDS:  # the script names the values by place
                raise ValueError(f"a new release's record has the fields {list(record)}")
            entry = intake_entry(release, (
                f"tag {event.tag} ({event.commit[:12]}) pushed to {event.repository} by "
                f"{event.pusher}; {event.forge} delivery {event.delivery_id}"))
            args += [len(seen), *seen, *record.values(), entry.encoded(),
                     *queueing.release_job_values(
                         app, release_id=release.id,
                         description=f"release {event.tag} of {app.name} into {release.color}")]
            candidates.append(release)
    if not candidates:
        return None
    args[3] = len(candidates)  # the number of (push, app) pairs
    return Plan(args=args, candidates=candidates)


def script_args(plans: Sequence[Plan]) -> list[Any]:
    """`SUBMIT`'s arguments for several deliveries (their answers come back in order)."""
    return list(itertools.chain.from_iterable(p.args for p in plans))


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
        repository_key(event.repository), event.tag, event.commit))]
    if event.delivery_id:
        # One delivery may carry several tags (Bitbucket): it is seen once per tag.
        keys.insert(0, SEEN_DELIVERY_KEY.format(forge=event.forge, app=app.name,
                                                digest=_digest(event.delivery_id, event.tag)))
    return keys


def _new_release(event: TagEvent, app: AppConfig, read: tuple[Color, str],
                 now: float) -> Release:
    """A new release for `app` of the tag `read` as (colour, version)."""
    color, version = read
    return Release(
        id=new_release_id(app.name, event.tag), app=app.name, color=color, tag=event.tag,
        version=version, commit=event.commit, forge=event.forge,
        delivery_id=event.delivery_id, repository=event.repository,
        state=ReleaseState.QUEUED, created_at=now, updated_at=now,
        actor=f"{event.forge}:{event.pusher}")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
