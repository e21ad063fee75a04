"""SPEC §5.5: cluster operations of two releases on one queue never interleave.

Twenty tags for two apps sharing one queue are submitted at once, from as many threads
as a burst of webhooks would use; one real `bluegreen worker` then runs them. Every
API request a job makes carries the user agent `bluegreen/<release id>`, and the
sandbox logs them in the order it served them, so the log shows each release's
requests as one unbroken block. Only the newest tag of each app and colour touches the
cluster; the older ones are superseded without changing anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis as redis_lib
from conftest import Sandbox
from flows import Flow, S, app_body

APPS = {"myapp": app_body(),
        "shop": app_body(repository="acme/shop", smoke=[{"exec": ["true"]}])}


@pytest.fixture
def flow(sandbox: Sandbox, redis: redis_lib.Redis, redis_url: str,
         tmp_path: Path) -> Iterator[Flow]:
    world = Flow(sandbox, redis, redis_url, tmp_path, APPS)
    yield world
    world.stop_workers()


def release_of(entry: dict[str, object]) -> str | None:
    agent = str(entry.get("user_agent") or "")
    if not agent.startswith("bluegreen/"):
        return None
    return agent.removeprefix("bluegreen/").split(" ")[0]


def blocks(log: list[dict[str, object]], releases: set[str]) -> list[str]:
    """The releases whose requests the log shows, one entry per unbroken run of requests.

    Requests of anything else (the worker's idle snapshot sidecar, exec streams without a
    user agent, the test itself) are not a release's operations and are skipped.
    """
    runs: list[str] = []
    for entry in log:
        release = release_of(entry)
        if release in releases and (not runs or runs[-1] != release):
            runs.append(release)
    return runs


@pytest.mark.slow
def test_twenty_tags_for_two_apps_on_one_queue_never_interleave(flow: Flow) -> None:
    tags = [(app, f"v1.{i}-{'green' if i % 2 else 'blue'}")
            for i in range(10) for app in ("myapp", "shop")]
    since = flow.last_request()
    with ThreadPoolExecutor(len(tags)) as pool:
        ids = list(pool.map(lambda t: flow.release(t[1], repository=f"acme/{t[0]}"), tags))
    flow.start_worker()
    final = {rid: flow.wait(rid, S.AWAITING_PROMOTION, S.SUPERSEDED, timeout=120)
             for rid in ids}

    newest = {(r.app, r.color): r for r in sorted(final.values(), key=lambda r: r.created_at)}
    awaiting = {rid for rid, r in final.items() if r.state is S.AWAITING_PROMOTION}
    assert awaiting == {r.id for r in newest.values()} and len(awaiting) == 4

    log = flow.api_requests(since)
    runs = blocks(log, set(ids))
    assert len(runs) == len(set(runs)), f"interleaved: {runs}"
    writers = {release_of(r) for r in log if r["method"] in ("POST", "PUT", "PATCH", "DELETE")}
    assert writers & set(ids) == awaiting  # superseded releases changed nothing


def test_the_block_check_sees_interleaving() -> None:
    log = [{"user_agent": "bluegreen/a"}, {"user_agent": "invariant-monitor"},
           {"user_agent": "bluegreen/a (promote)"}, {"user_agent": "bluegreen/b"},
           {"user_agent": None}, {"user_agent": "bluegreen/a"}]
    runs = blocks(log, {"a", "b"})
    assert runs == ["a", "b", "a"] and len(runs) != len(set(runs))
