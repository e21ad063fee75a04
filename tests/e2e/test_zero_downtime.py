"""Zero downtime: steady default traffic through the ingress while ten release cycles run.

Everything runs as separate processes (tests/e2e/stack.py); the test acts only as a
forge (signed tag pushes) and as operators: the HTTP API, and Slack (the worker posts
each release's message to a local fake Slack; the test clicks its Promote button and
types `/deploy rollback myapp`). A load generator sends GET /
without the test cookie at about 66 requests a second through the ingress for the whole run,
and the invariant monitor (tests/invariants.py) checks SPEC §5 on every snapshot.

What "correct" means for each default request, precisely: it must answer 200, and
from a colour that was live while it was in flight. The live colour is known from a
timeline of reads of the VirtualService's default route, taken every ~20 ms. A
request sent at s and answered at e was routed at some instant in [s, e]; the last
read that finished before s and the first read that started after e bracket that
instant, so the colour it came from must be one those reads, or any read between
them, saw (`load.allowed_colors`). Away from a switch that is exactly one colour;
a request in flight across a switch may come from the colour live just before or just
after it. Route switches are seconds apart, reads 20 ms, so no switch hides between
two reads. The counts are printed with the test's result.

The next tag goes into the colour that has just stopped being live, and its deploy
replaces that colour's pods (Recreate). Requests routed there just before the switch
are still in flight, so the engine waits the app's `drain_seconds` (default 2) after a
colour leaves default traffic before it replaces that colour's pods; the operator here
pushes the next tag at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from fakeslack import FakeSlack
from load import Load, Read, RouteTimeline, allowed_colors
from stack import SLACK_USER, Stack, app_config, running

APPS = {"myapp": app_config("acme/myapp", slack_users=[SLACK_USER])}
CYCLES = 10
RATE = 66.0  # aim above the 50 req/s floor, so a busy CI machine still clears it


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    slack = FakeSlack().start()
    try:
        with running(tmp_path_factory.mktemp("zero-downtime"), APPS, slack) as started:
            yield started
    finally:
        slack.stop()


def other(color: str) -> str:
    return "blue" if color == "green" else "green"


def go_live(stack: Stack, tag: str, color: str, *, by_chat: bool = False) -> str:
    """Push `tag`, check its smoke-tested test route, promote it (API or Slack button)."""
    rid = stack.release_id(tag)
    record = stack.wait(rid, "awaiting_promotion")
    assert any(a["step"] == "smoke_test" and "smoke tests passed" in a["message"]
               for a in record["audit"]), stack.story(rid)
    assert stack.served_by(cookie=True) == f"{color} {record['release']['version']}"
    if by_chat:
        answer = stack.click(rid, f"Promote {color}")
        assert answer.status == 200, answer.body
    else:
        stack.act("myapp", "promote", rid)
    stack.wait(rid, "live")
    return rid


def run_cycles(stack: Stack, live: tuple[str, str]) -> Counter[str]:
    """Ten cycles of deploy, smoke, promote; every third one rolled back. Counts of acts.

    Odd cycles promote through the API, even ones with the Promote button of the
    release's Slack message; rollbacks are `/deploy rollback myapp` in Slack.
    """
    acts: Counter[str] = Counter()
    for number in range(1, CYCLES + 1):
        color = other(live[1])
        rid = go_live(stack, f"v{number}.0-{color}", color, by_chat=number % 2 == 0)
        acts["promoted"] += 1
        acts["promoted from Slack" if number % 2 == 0 else "promoted by API"] += 1
        assert stack.state(live[0]) == "standby"
        if number % 3 == 0:
            answer = stack.slash("rollback myapp")
            assert answer.status == 200 and rid in answer.body.decode(), answer.body
            stack.wait(rid, "rolled_back")
            stack.wait(live[0], "live")
            acts["rolled back"] += 1
        else:
            live = (rid, color)
    return acts


@pytest.mark.slow
def test_no_default_request_fails_or_reaches_a_colour_that_was_not_live(
        stack: Stack, figures: Callable[[str], None]) -> None:
    first = go_live(stack, "v0.1-green", "green")
    assert stack.served_by() == "green v0.1"
    assert stack.sandbox is not None
    with stack.monitor("myapp", traffic=False) as monitor, \
            RouteTimeline(stack.sandbox.api, "myapp") as timeline, \
            Load(stack.sandbox.ingress, rate=RATE) as load:
        acts = run_cycles(stack, (first, "green"))
    hits = load.hits
    failed = [h for h in hits if h.status != 200]
    verdicts = [allowed_colors(timeline.reads, h.sent, h.answered) for h in hits]
    unjudged = sum(1 for v in verdicts if v is None)
    wrong = [(h, v) for h, v in zip(hits, verdicts, strict=True)
             if v is not None and h.color not in v]
    across = sum(1 for v in verdicts if v is not None and len(v) > 1)
    figures(f"zero downtime: {len(hits)} default requests in {load.stopped - load.started:.1f}"
            f" s ({load.achieved_rate:.1f}/s) over {CYCLES} cycles ({dict(acts)}); "
            f"{timeline.switches()} route switches seen in {len(timeline.reads)} reads; "
            f"{len(failed)} failed, {len(wrong)} from a colour not live, {across} in flight "
            f"across a switch, {unjudged} unjudged; answered by "
            f"{dict(sorted(Counter(f'{h.color} {h.version}' for h in hits).items()))}")
    assert load.achieved_rate >= 50
    assert failed == [], f"{len(failed)} failed, first: {failed[:3]}"
    assert wrong == [], f"{len(wrong)} from a colour that was not live, first: {wrong[:3]}"
    assert unjudged == 0
    assert timeline.switches() == acts["promoted"] + acts["rolled back"]
    assert monitor.violations == []


@pytest.mark.parametrize(("sent", "answered", "expected"), [
    (0.25, 0.28, {"green"}),            # between reads that agree: one right colour
    (0.45, 0.48, {"green", "blue"}),    # the switch happened between the bracketing reads
    (0.65, 0.70, {"blue"}),
    (0.05, 0.10, None),                 # before the first read ended: cannot be judged
    (0.85, 0.95, None),                 # after the last read started: cannot be judged
])
def test_allowed_colors_come_from_the_reads_that_bracket_a_request(
        sent: float, answered: float, expected: set[str] | None) -> None:
    reads = [Read(0.1, 0.12, "green"), Read(0.2, 0.22, "green"), Read(0.3, 0.32, "green"),
             Read(0.5, 0.52, "blue"), Read(0.6, 0.62, "blue"), Read(0.8, 0.82, "blue")]
    assert allowed_colors(reads, sent, answered) == expected
