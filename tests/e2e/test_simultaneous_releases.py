"""Simultaneous releases: ten tags for three apps on two queues, pushed all at once.

Every tag arrives three times, as a forge would send it: the delivery, a manual
redelivery (the same `X-GitHub-Delivery`) and the same push through a second hook (a
new delivery id, the same repository, tag and commit); a few also come as GitHub's
`create` event. All 33 requests are released together from as many threads into the
real gunicorn while the real worker is already taking jobs.

Checks: each tag gets exactly one 202 and becomes exactly one release, its copies are
answered `duplicate` naming that release, `create` is ignored; every release ends
awaiting promotion or superseded (the newest per app and colour awaits, the rest were
superseded by it); on each queue the sandbox's request log shows each release's
cluster operations (user agent `bluegreen/<release id>`) as one unbroken block; the
invariant monitor of each app saw nothing wrong. The apps' smoke checks are exec
checks: with three apps behind one ingress host, an HTTP check could reach another app.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import pytest
from stack import Stack, app_config, running, tag_push_body, wait_until
from web import Response, delivery, http, signed

pytestmark = pytest.mark.slow

EXEC_SMOKE = [{"exec": ["true"]}]
APPS = {
    "shop": app_config("acme/shop", queue="deploy", smoke=EXEC_SMOKE),
    "blog": app_config("acme/blog", queue="deploy", smoke=EXEC_SMOKE),
    "wiki": app_config("acme/wiki", queue="docs", smoke=EXEC_SMOKE,
                       tag_patterns={"blue": "^release-.*-blue$", "green": "^release-.*-green$"}),
}
TAGS = [("shop", "v1.0-blue"), ("shop", "v1.0-green"), ("shop", "v1.1-blue"),
        ("shop", "v1.1-green"), ("blog", "v1.0-blue"), ("blog", "v1.0-green"),
        ("blog", "v1.1-blue"), ("wiki", "release-1-blue"), ("wiki", "release-1-green"),
        ("wiki", "release-2-green")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running(tmp_path_factory.mktemp("simultaneous"), APPS) as started:
        yield started


def deliveries(app: str, tag: str, number: int) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(app, tag, body, headers) of each copy of one tag push the forge sends."""
    commit = f"{number + 1:040x}"
    body = signed(delivery("github", "push__tag_lightweight").with_body(
        tag_push_body(tag, f"acme/{app}", commit)))
    first = body.with_headers(X_GitHub_Delivery=f"hook-a-{number}")
    copies = [first, first, body.with_headers(X_GitHub_Delivery=f"hook-b-{number}")]
    if number % 3 == 0:  # GitHub also sends `create` for a new tag: never a second release
        create = signed(delivery("github", "create__tag").with_body(
            {"ref": tag, "ref_type": "tag", "repository": {"full_name": f"acme/{app}"}}))
        copies.append(create.with_headers(X_GitHub_Delivery=f"create-{number}"))
    return [(app, tag, d.body, d.headers) for d in copies]


def push_all_at_once(url: str) -> list[tuple[str, str, Response]]:
    requests = [r for number, (app, tag) in enumerate(TAGS) for r in deliveries(app, tag, number)]
    start = threading.Barrier(len(requests))

    def send(item: tuple[str, str, bytes, dict[str, str]]) -> tuple[str, str, Response]:
        app, tag, body, headers = item
        start.wait()
        return app, tag, http("POST", f"{url}/webhook", body, headers, timeout=30)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def blocks(log: list[dict[str, Any]], releases: set[str]) -> list[str]:
    """Release ids of the log's `bluegreen/<id>` requests among `releases`, one per run."""
    runs: list[str] = []
    for entry in log:
        agent = str(entry.get("user_agent") or "")
        release = agent.removeprefix("bluegreen/").split(" ")[0]
        if agent.startswith("bluegreen/") and release in releases and (
                not runs or runs[-1] != release):
            runs.append(release)
    return runs


def test_tags_pushed_together_become_one_release_each_and_never_interleave(
        stack: Stack, figures: Callable[[str], None]) -> None:
    since = stack.last_request()
    with ExitStack() as monitors:
        watching = [monitors.enter_context(stack.monitor(app, traffic=False)) for app in APPS]
        answers = push_all_at_once(stack.url)
        queued = check_answers(answers)
        final = settle(stack, queued)
    for monitor in watching:
        assert monitor.violations == []
    check_supersede(final)
    log = stack.api_requests(since)
    runs = {queue: blocks(log, {rid for rid, r in final.items()
                                if APPS[r["app"]]["queue"] == queue})
            for queue in ("deploy", "docs")}
    figures(f"simultaneous releases: {len(answers)} deliveries of {len(TAGS)} tags → "
            f"{dict(Counter(a.json['result'] for _, _, a in answers))}; final states "
            f"{dict(Counter(r['state'] for r in final.values()))}; cluster work per queue "
            f"in unbroken blocks: { {q: len(r) for q, r in runs.items()} }")
    for queue, blocks_of_queue in runs.items():
        assert blocks_of_queue, f"nothing of queue {queue} reached the cluster"
        assert len(blocks_of_queue) == len(set(blocks_of_queue)), (
            f"queue {queue} interleaved: {blocks_of_queue}")


def check_answers(answers: list[tuple[str, str, Response]]) -> dict[tuple[str, str], str]:
    """Exactly one 202 per tag, duplicates naming it, `create` ignored; {(app, tag): id}."""
    queued: dict[tuple[str, str], str] = {}
    named: dict[tuple[str, str], set[str]] = defaultdict(set)
    results = Counter()
    for app, tag, answer in answers:
        assert answer.status in (200, 202), (app, tag, answer.status, answer.body)
        body = answer.json
        results[body["result"]] += 1
        if body["result"] == "queued":
            assert (app, tag) not in queued, f"{app} {tag} was queued twice"
            queued[(app, tag)] = body["releases"][0]["id"]
        elif body["result"] == "duplicate":
            named[(app, tag)].add(body["release"])
    assert results == {"queued": 10, "duplicate": 20, "ignored": 4}, results
    assert set(queued) == set(TAGS)
    for key, ids in named.items():
        assert ids == {queued[key]}, (key, ids, queued[key])
    return queued


def settle(stack: Stack, queued: dict[tuple[str, str], str]) -> dict[str, dict[str, Any]]:
    """Wait until every release is awaiting or final; the records, checked one per tag."""
    def records() -> dict[str, dict[str, Any]]:
        return {r["id"]: r for app in APPS for r in stack.releases(app)}

    def settled() -> bool:
        return all(r["state"] in ("awaiting_promotion", "superseded")
                   for r in records().values())

    try:
        wait_until(settled, 60, "every release to settle", 0.2)
    except AssertionError as e:
        states = sorted((r["app"], r["tag"], r["state"]) for r in records().values())
        raise AssertionError(f"{e}: {states}") from None
    final = records()
    assert sorted((r["app"], r["tag"]) for r in final.values()) == sorted(TAGS)
    assert set(final) == set(queued.values())
    return final


def check_supersede(final: dict[str, dict[str, Any]]) -> None:
    """Per app and colour, the newest release awaits promotion and the older ones gave way."""
    by_slot: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in final.values():
        by_slot[(record["app"], record["color"])].append(record)
    for slot, records in by_slot.items():
        records.sort(key=lambda r: (r["created_at"], r["id"]))
        states = [r["state"] for r in records]
        assert states == ["superseded"] * (len(records) - 1) + ["awaiting_promotion"], (
            slot, [(r["tag"], r["state"]) for r in records])
