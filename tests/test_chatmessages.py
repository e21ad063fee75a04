"""worker.chatmessages: the release message as Block Kit, as a person would read it. Pure.

Covers: which buttons each state shows (one row per state, and the live message's
Rollback/Decommission depending on the other colour); what each button's value
carries and how a forged or broken value is refused; failed and rejected releases
say which step and why; a pending command hides the buttons until the worker answers
it; history is who did what when, without the notifier's own notes; text from tags,
errors and users cannot inject Slack markup; Slack's size limits hold.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from worker.chatmessages import (
    ButtonValue,
    Message,
    buttons,
    pending_request,
    render,
)
from worker.colors import Color
from worker.commands import Action
from worker.machine import ReleaseState
from worker.releases import AuditEntry, Release

S = ReleaseState
T0 = 1_700_000_000.0


def release(tag: str = "v2.0-green", state: ReleaseState = S.AWAITING_PROMOTION,
            **overrides: Any) -> Release:
    color = Color(tag.rsplit("-", 1)[1])
    base = Release(id=f"myapp-{tag.replace('.', '-')}-0000abcd", app="myapp", color=color,
                   tag=tag, version=tag.rsplit("-", 1)[0], commit="0123456789abcdef" * 2 + "0" * 8,
                   forge="github", delivery_id="d-1", repository="acme/myapp", state=state,
                   created_at=T0, updated_at=T0, actor="github:dev")
    return replace(base, **overrides)


def entry(message: str, *, step: str = "deploy", actor: str = "worker", at: float = T0,
          state_to: ReleaseState | None = None) -> AuditEntry:
    return AuditEntry(at=at, actor=actor, step=step, state_from=None,
                      state_to=state_to.value if state_to else None, route_before=None,
                      route_after=None, message=message)


def labels(message: Message) -> list[str]:
    return [b["text"]["text"] for b in message.buttons()]


def text(message: Message) -> str:
    return json.dumps(message.blocks, ensure_ascii=False) + message.text


BUTTONS_BY_STATE = {
    S.QUEUED: ["Abort"], S.CHECKING: [], S.DEPLOYING: [], S.TESTING: [],
    S.AWAITING_PROMOTION: ["Promote green", "Abort"], S.LIVE: [], S.STANDBY: [],
    S.REJECTED: [], S.FAILED: [], S.SUPERSEDED: [], S.ABORTED: [], S.ROLLED_BACK: [],
    S.DECOMMISSIONED: [],
}


@pytest.mark.parametrize("state", list(S))
def test_each_state_shows_only_the_buttons_that_apply(state: ReleaseState) -> None:
    assert [b.text for b in buttons(release(state=state), None)] == BUTTONS_BY_STATE[state]


@pytest.mark.parametrize(("other_state", "expected"), [
    (S.STANDBY, ["Rollback", "Decommission blue"]),
    (S.ROLLED_BACK, ["Decommission blue"]),
    (S.AWAITING_PROMOTION, []),       # the standby was replaced: nothing to roll back to
    (S.DECOMMISSIONED, []),
    (S.FAILED, []),
])
def test_live_buttons_follow_the_other_colour(other_state: ReleaseState,
                                              expected: list[str]) -> None:
    live = release(state=S.LIVE)
    other = release("v1.0-blue", other_state)
    message = render(live, [], other=other)
    assert labels(message) == expected
    values = [ButtonValue.parse(b["value"]) for b in message.buttons()]
    assert all(v.app == "myapp" for v in values)
    if "Rollback" in expected:
        assert values[0] == ButtonValue("myapp", Action.ROLLBACK, live.id)
    if expected:
        assert values[-1] == ButtonValue("myapp", Action.DECOMMISSION, other.id, Color.BLUE)


def test_button_values_carry_app_action_and_release() -> None:
    awaiting = release()
    promote, abort = render(awaiting, []).buttons()
    assert promote["action_id"] == "bluegreen:promote" and promote["style"] == "primary"
    assert json.loads(promote["value"]) == {"app": "myapp", "action": "promote",
                                            "release": awaiting.id}
    assert abort["action_id"] == "bluegreen:abort" and "confirm" in abort
    assert ButtonValue.parse(abort["value"]) == ButtonValue("myapp", Action.ABORT, awaiting.id)


@pytest.mark.parametrize(("raw", "why"), [
    ("not json", "not made by bluegreen"),
    (None, "not made by bluegreen"),
    ('{"app": "myapp", "action": "promote"}', "not made by bluegreen"),
    ('{"app": "myapp", "action": "promote", "release": 7}', "not made by bluegreen"),
    ('{"app": "myapp", "action": "explode", "release": "r"}', "unknown action 'explode'"),
    ('{"app": "myapp", "action": "decommission", "release": "r", "color": "red"}', "red"),
])
def test_broken_or_forged_button_values_are_refused(raw: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        ButtonValue.parse(raw)


def test_a_failure_says_which_step_failed_and_why() -> None:
    failed = release(state=S.FAILED, error="deploy: rollout of myapp-green timed out after 20 s")
    audit = [entry("deploy failed: rollout timed out. Live traffic untouched", step="deploy",
                   state_to=S.FAILED)]
    message = render(failed, audit)
    assert "*deploy* failed: deploy: rollout of myapp-green timed out after 20 s" in text(message)
    assert message.text == ("myapp v2.0-green → green: failed: deploy: rollout of myapp-green "
                            "timed out after 20 s")
    assert labels(message) == []


def test_a_rejection_names_the_sanity_check() -> None:
    rejected = release(state=S.REJECTED, error="green is the live colour")
    audit = [entry("green is the live colour", step="sanity_check", state_to=S.REJECTED)]
    assert "*sanity_check* failed: green is the live colour" in text(render(rejected, audit))


def test_queued_shows_its_position_and_running_shows_its_step() -> None:
    assert "position 3 in the queue" in text(render(release(state=S.QUEUED), [], position=3))
    deploying = release(state=S.DEPLOYING, step="deploy")
    assert "Deploying green (step `deploy`)…" in text(render(deploying, []))


def test_a_pending_command_hides_the_buttons_until_it_is_answered() -> None:
    awaiting = release()
    asked = entry("promote requested by slack:U1 (alice)", step="promote",
                  actor="slack:U1 (alice)", at=T0 + 10)
    message = render(awaiting, [asked], now=T0 + 20)
    assert labels(message) == [] and "promoting…* requested by <@U1>" in text(message)
    assert message.text.endswith("(promoting…)")
    chat_note = entry("Slack message not updated", step="chat", at=T0 + 11)
    assert pending_request([asked, chat_note]) == asked
    refused = entry("promote refused: stale; nothing was changed", step="promote", at=T0 + 12)
    assert pending_request([asked, refused]) is None
    superseded = entry("superseded by r2", step="supersede", state_to=S.SUPERSEDED, at=T0 + 12)
    assert pending_request([asked, superseded]) is None
    assert pending_request([asked], now=T0 + 10 + 3601) is None
    assert labels(render(awaiting, [asked], now=T0 + 3700)) == ["Promote green", "Abort"]


def test_a_live_message_shows_a_pending_decommission_of_its_standby() -> None:
    live, standby = release(state=S.LIVE), release("v1.0-blue", S.STANDBY)
    asked = entry("decommission requested by slack:U1 (alice)", step="decommission",
                  actor="slack:U1 (alice)")
    message = render(live, [], other=standby, other_audit=[asked])
    assert labels(message) == [] and "decommissioning…" in text(message)


def test_history_is_who_did_what_when_without_the_notifiers_notes() -> None:
    audit = [entry(f"step {i}", at=T0 + i) for i in range(8)]
    audit.append(entry("Slack message caught up", step="chat", at=T0 + 9))
    audit.append(entry("default traffic goes to green", step="promote", actor="slack:U9 (bo)",
                       state_to=S.LIVE, at=T0 + 10))
    history = render(release(state=S.LIVE), audit).blocks[-1]["elements"][0]["text"]
    lines = history.splitlines()
    assert len(lines) == 6 and "Slack message" not in history
    assert lines[-1] == ("<!date^1700000010^{date_short_pretty} {time_secs}|2023-11-14 22:13:30 "
                         "UTC> <@U9>: default traffic goes to green")
    assert lines[0].endswith("`worker`: step 3")


def test_final_states_say_who_did_it_and_when() -> None:
    aborted = release(state=S.ABORTED)
    audit = [entry("aborted; green's test route and Deployment removed", step="abort",
                   actor="api:1a2b3c4d", state_to=S.ABORTED, at=T0 + 5)]
    status = render(aborted, audit).blocks[2]["elements"][0]["text"]
    assert status.startswith("aborted; green's test route and Deployment removed — "
                             "`api:1a2b3c4d` <!date^1700000005^")


def test_text_from_outside_cannot_inject_slack_markup() -> None:
    evil = release("v1<!channel>&x-green", state=S.FAILED, error="<@U0ADMIN> <http://x|click>")
    body = text(render(evil, [entry("boom <!here>", state_to=S.FAILED)]))
    assert "<!channel>" not in body and "<@U0ADMIN>" not in body and "<!here>" not in body
    assert "&lt;!channel&gt;&amp;x" in body


def test_bidirectional_controls_show_as_marks_not_obeyed() -> None:
    # Git allows U+202E in a tag: obeyed, "v1.0-\u202enimda-green" reads "v1.0-neerg-admin".
    tricky = release("v1.0-\u202enimda-green", state=S.FAILED, error="x\u2067y")
    message = render(tricky, [entry("note \u200f", state_to=S.FAILED)])
    body = text(message) + message.text
    assert not any(ch in body for ch in "\u202e\u2067\u200f"), body
    assert "v1.0-&lt;U+202E&gt;nimda-green" in body and "x&lt;U+2067&gt;y" in body


def test_slacks_size_limits_hold_for_huge_errors() -> None:
    huge = release(state=S.FAILED, error="x" * 50_000, tag="v" + "9" * 200 + "-green")
    audit = [entry("y" * 50_000, state_to=S.FAILED)] * 30
    message = render(huge, audit, other=release("v1-blue", S.STANDBY))
    assert len(message.blocks) <= 50
    for block in message.blocks:
        for part in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if part and "text" in part and isinstance(part["text"], str):
                assert len(part["text"]) <= 3000
    assert all(len(b["value"]) <= 2000 for b in message.buttons())


def test_the_digest_changes_exactly_when_the_message_does() -> None:
    awaiting = release()
    assert render(awaiting, []).digest() == render(awaiting, []).digest()
    assert render(awaiting, []).digest() != render(replace(awaiting, state=S.LIVE), []).digest()
