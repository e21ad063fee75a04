"""The release state machine, walked whole, and the store that applies it in Redis.

Covers: every pair of states (allowed iff the table says so), reachability of
every state from `queued`, terminal states without exits, what `advance()` stamps
and clears, and `ReleaseStore.transition` moving the record, its state index and
its audit trail together (and refusing what the table forbids, changing nothing).
"""

from __future__ import annotations

import itertools
from collections import deque

import pytest
import redis as redis_lib

from worker.colors import Color
from worker.machine import (
    RUNNING,
    TRANSITIONS,
    IllegalTransition,
    ReleaseState,
    advance,
    can_advance,
)
from worker.releases import STATE_KEY, Move, Release, ReleaseNotFound, ReleaseStore

S = ReleaseState
TERMINAL = {S.REJECTED, S.FAILED, S.SUPERSEDED, S.ABORTED, S.DECOMMISSIONED}
HAPPY_PATH = [S.QUEUED, S.CHECKING, S.DEPLOYING, S.TESTING, S.AWAITING_PROMOTION, S.LIVE]


def make_release(**overrides: object) -> Release:
    fields: dict[str, object] = dict(
        id="myapp-v2-0-green-0000abcd", app="myapp", color=Color.GREEN, tag="v2.0-green",
        version="v2.0", commit="c" * 40, forge="github", delivery_id="d-1",
        repository="acme/myapp", state=S.QUEUED, created_at=100.0, updated_at=100.0,
        actor="github:alice")
    fields.update(overrides)
    return Release(**fields)  # type: ignore[arg-type]


def test_the_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(ReleaseState)
    assert all(to in ReleaseState for targets in TRANSITIONS.values() for to in targets)


@pytest.mark.parametrize(("current", "to"), list(itertools.product(ReleaseState, repeat=2)))
def test_every_pair_is_allowed_exactly_when_the_table_says(current: S, to: S) -> None:
    release = make_release(state=current)
    if to in TRANSITIONS[current]:
        moved = advance(release, to, now=200.0)
        assert moved.state is to and moved.updated_at == 200.0
        assert release.state is current  # values are never mutated
    else:
        with pytest.raises(IllegalTransition) as raised:
            advance(release, to, now=200.0)
        assert f"is {current.value} and cannot become {to.value}" in str(raised.value)


def test_the_happy_path_and_a_sample_of_forbidden_moves() -> None:
    for current, to in itertools.pairwise(HAPPY_PATH):
        assert can_advance(current, to)
    forbidden = [(S.QUEUED, S.LIVE), (S.QUEUED, S.DEPLOYING), (S.TESTING, S.LIVE),
                 (S.LIVE, S.DECOMMISSIONED), (S.FAILED, S.QUEUED), (S.REJECTED, S.DEPLOYING),
                 (S.ROLLED_BACK, S.LIVE), (S.AWAITING_PROMOTION, S.ROLLED_BACK),
                 (S.DECOMMISSIONED, S.LIVE), (S.LIVE, S.LIVE)]
    for current, to in forbidden:
        assert not can_advance(current, to), (current, to)


def test_every_state_is_reachable_from_queued() -> None:
    seen, todo = {S.QUEUED}, deque([S.QUEUED])
    while todo:
        for nxt in TRANSITIONS[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(ReleaseState)


def test_terminal_states_have_no_exits() -> None:
    assert {s for s in ReleaseState if s.is_terminal} == TERMINAL
    assert all(not TRANSITIONS[s] for s in TERMINAL)
    # every non-terminal state can still end: some terminal state is reachable from it
    for state in set(ReleaseState) - TERMINAL:
        assert _reachable(state) & TERMINAL, state


def test_only_one_live_release_needs_standby() -> None:
    # the previous live release goes to standby on promotion and may come back by rollback
    assert TRANSITIONS[S.LIVE] == {S.STANDBY, S.ROLLED_BACK}
    assert TRANSITIONS[S.STANDBY] == {S.LIVE, S.DECOMMISSIONED}


def test_advance_keeps_the_step_only_while_running() -> None:
    release = make_release(state=S.CHECKING, step="sanity check")
    assert advance(release, S.DEPLOYING, now=1.0).step == "sanity check"
    assert advance(release, S.REJECTED, now=1.0).step is None
    assert RUNNING == {S.CHECKING, S.DEPLOYING, S.TESTING}


def test_the_store_walks_a_release_to_live(redis: redis_lib.Redis) -> None:
    clock = iter(range(1000, 2000))
    store = ReleaseStore(redis, clock=lambda: float(next(clock)))
    release = make_release()
    store.add(release, message="tag pushed")
    for state in HAPPY_PATH[1:]:
        store.transition(release.id, state, actor="worker", step=state.value,
                         message=f"now {state.value}",
                         route_before={"default": "blue"}, route_after={"default": "green"})
    stored = store.get(release.id)
    assert stored is not None and stored.state is S.LIVE and stored.updated_at == 1004.0
    trail = store.audit(release.id)
    assert [(e.state_from, e.state_to) for e in trail] == [(None, "queued")] + [
        (a.value, b.value) for a, b in itertools.pairwise(HAPPY_PATH)]
    assert trail[-1].route_after == {"default": "green"} and trail[-1].actor == "worker"
    members = {s: redis.zrange(STATE_KEY.format(state=s.value), 0, -1) for s in ReleaseState}
    assert {s for s, ids in members.items() if ids} == {S.LIVE}


def test_audit_entries_read_back_as_written(redis: redis_lib.Redis) -> None:
    """Entries are written by orjson and read by `json.loads`: every value a route or a
    message can hold comes back the same."""
    store = ReleaseStore(redis, clock=lambda: 1764150000.123456)
    release = make_release()
    store.add(release, message="tag pushed by zoë — 中文 \"quoted\" \\ \n line")
    route = {"default": "green", "test": {"cookie": "test=true", "weights": [0, 100]},
             "hosts": ["myapp.example"], "timeout": 1.5, "retries": None}
    store.note(release.id, actor="slack:U1 «op»", step="note", message="\u2028 ☃",
               route_before=route, route_after={**route, "default": "blue"})
    first, second = store.audit(release.id)
    assert first.message == "tag pushed by zoë — 中文 \"quoted\" \\ \n line"
    assert first.at == release.created_at and first.route_before is None
    assert (second.at, second.actor, second.message) == (1764150000.123456, "slack:U1 «op»",
                                                         "\u2028 ☃")
    assert second.route_before == route
    assert second.route_after == {**route, "default": "blue"}


def test_the_store_refuses_an_illegal_move_and_changes_nothing(redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    release = make_release()
    store.add(release, message="tag pushed")
    with pytest.raises(IllegalTransition):
        store.transition(release.id, S.LIVE, actor="worker", step="promote", message="no")
    assert store.get(release.id) == release
    assert len(store.audit(release.id)) == 1
    with pytest.raises(ReleaseNotFound):
        store.transition("nope", S.CHECKING, actor="worker", step="x", message="x")


def test_moves_made_together_all_land_or_none_does(redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    live = make_release(id="myapp-v1-0-blue-0000abcd", color=Color.BLUE, state=S.LIVE)
    standby = make_release(state=S.STANDBY)
    for release in (live, standby):
        store.add(release, message="as it was")
    # the second move is illegal: the first, legal alone, must not be written either
    with pytest.raises(IllegalTransition):
        store.transitions([Move(live.id, S.ROLLED_BACK, "undone"),
                           Move(standby.id, S.ROLLED_BACK, "no")],
                          actor="bob", step="rollback")
    assert (store.get(live.id), store.get(standby.id)) == (live, standby)
    assert [len(store.audit(r.id)) for r in (live, standby)] == [1, 1]
    undone, again = store.transitions([Move(live.id, S.ROLLED_BACK, "undone"),
                                       Move(standby.id, S.LIVE, "live again")],
                                      actor="bob", step="rollback")
    assert (undone.state, again.state, undone.updated_at) == (
        S.ROLLED_BACK, S.LIVE, again.updated_at)
    assert [store.audit(r.id)[-1].message for r in (live, standby)] == ["undone", "live again"]
    assert store.in_states([S.LIVE]) == [again]


def test_the_store_records_errors_steps_and_notes(redis: redis_lib.Redis) -> None:
    store = ReleaseStore(redis)
    release = make_release()
    store.add(release, message="tag pushed")
    store.transition(release.id, S.CHECKING, actor="worker", step="sanity", message="checking")
    assert store.set_step(release.id, "sanity check").step == "sanity check"
    failed = store.transition(release.id, S.FAILED, actor="worker", step="sanity",
                              message="cluster unreachable", error="no route to host")
    assert failed.error == "no route to host" and failed.step is None
    assert store.get(release.id) == failed
    store.note(release.id, actor="bob", step="abort", message="abort requested by bob")
    assert store.audit(release.id)[-1].message == "abort requested by bob"
    assert store.in_states([S.FAILED]) == [failed]


def _reachable(start: S) -> set[S]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
