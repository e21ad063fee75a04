"""GET /metrics: Prometheus text built from counters in Redis, the same from every process.

In-process (Flask app on a real Redis): the answer parses as Prometheus text; webhook
deliveries, chat actions and release results count up; step durations land in the
right histogram buckets; a release going live is counted once, by its promotion (a
rollback counts as the undone release's rolled_back, not as the previous release going
live again; its jobs run for real against the sandbox); queue length, oldest job age
(the longest-waiting job's, even when a rollback or abort jumped to the front), worker
heartbeat age and the live colour are read from Redis at scrape time; there is no
snapshot age before a first successful look at the cluster. End to end (two gunicorn
workers, `bluegreen worker`, the sandbox): a release cycle moves the counters, and every
scrape agrees whichever gunicorn worker answers it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
import yaml
from conftest import Sandbox
from flask.testing import FlaskClient
from flows import Flow
from proctools import free_port
from prometheus_client.parser import text_string_to_metric_families
from stack import app_config, running, wait_until
from web import CONFIG_YAML, SECRET_ENV, delivery, http, signed

from webhook import create_app
from worker import clusterview, metrics, queueing, snapshot
from worker.api import Engine, TagEvent
from worker.config import parse_settings
from worker.kube import Cluster
from worker.releases import ReleaseState, ReleaseStore

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SETTINGS = parse_settings(yaml.safe_load(CONFIG_YAML), SECRET_ENV)


def parse(text: str) -> Samples:
    """Every sample as {(name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def client(redis: redis_lib.Redis) -> Iterator[FlaskClient]:
    with create_app(SETTINGS, redis).test_client() as c:
        yield c


def scrape(client: FlaskClient) -> Samples:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    return parse(answer.get_data(as_text=True))


def test_webhook_deliveries_and_chat_actions_count_up(client: FlaskClient,
                                                      redis: redis_lib.Redis) -> None:
    d = signed(delivery("github", "push__tag_lightweight"))
    assert client.post("/webhook", data=d.body, headers=d.headers).status_code == 202
    assert client.post("/webhook", data=d.body, headers=d.headers).status_code == 200
    ping = signed(delivery("github", "ping__hook"))
    client.post("/webhook", data=ping.body, headers=ping.headers)
    client.post("/webhook", data=d.body, headers={**d.headers, "X-Hub-Signature-256": "x"})
    metrics.record_chat_action(redis, "queued")
    metrics.record_chat_action(redis, "queued")
    metrics.record_chat_action(redis, "refused")
    samples = scrape(client)
    deliveries = "bluegreen_webhook_deliveries_total"
    assert value(samples, deliveries, forge="github", result="queued") == 1
    assert value(samples, deliveries, forge="github", result="duplicate") == 1
    assert value(samples, deliveries, forge="github", result="ignored") == 1
    assert value(samples, deliveries, forge="github", result="error") == 1
    assert value(samples, "bluegreen_chat_actions_total", result="queued") == 2
    assert value(samples, "bluegreen_chat_actions_total", result="refused") == 1


def test_release_results_are_counted_once_per_transition(client: FlaskClient,
                                                         redis: redis_lib.Redis) -> None:
    engine, store = Engine(SETTINGS, redis), ReleaseStore(redis)
    ids = [engine.submit_tag(TagEvent(forge="github", delivery_id=f"d{i}",
                                      repository="acme/myapp", tag=f"v{i}.0-blue",
                                      commit=f"{i:040x}", pusher="dev"))[0].release.id
           for i in range(3)]
    store.transition(ids[0], ReleaseState.CHECKING, actor="w", step="s", message="m")
    store.transition(ids[0], ReleaseState.REJECTED, actor="w", step="s", message="m")
    store.transition(ids[1], ReleaseState.ABORTED, actor="w", step="s", message="m")
    store.set_step(ids[2], "deploy")  # not a result
    samples = scrape(client)
    releases = "bluegreen_releases_total"
    assert value(samples, releases, app="myapp", result="rejected") == 1
    assert value(samples, releases, app="myapp", result="aborted") == 1
    assert value(samples, releases, app="myapp", result="checking") is None
    assert value(samples, releases, app="myapp", result="live") is None


def test_a_rollback_is_counted_as_rolled_back_not_as_another_release_live(
        sandbox: Sandbox, redis: redis_lib.Redis, redis_url: str, tmp_path: Path) -> None:
    flow = Flow(sandbox, redis, redis_url, tmp_path)
    with create_app(flow.settings, redis).test_client() as client:
        v1 = flow.promoted("v1.0-green")
        v2 = flow.promoted("v2.0-blue")
        assert release_results(client) == {"live": 2, "rolled_back": None}
        flow.command("rollback", v2)
        flow.run_jobs()
        assert (flow.get(v1).state, flow.get(v2).state) == (ReleaseState.LIVE,
                                                            ReleaseState.ROLLED_BACK)
        assert release_results(client) == {"live": 2, "rolled_back": 1}


def release_results(client: FlaskClient) -> dict[str, float | None]:
    samples = scrape(client)
    return {result: value(samples, "bluegreen_releases_total", app="myapp", result=result)
            for result in ("live", "rolled_back")}


def test_step_durations_fill_histogram_buckets(client: FlaskClient,
                                               redis: redis_lib.Redis) -> None:
    for seconds in (0.4, 3.0, 45.0):
        metrics.observe_step(redis, "deploy", seconds)
    metrics.step_started(redis, app="myapp", release_id="r1", step="smoke_test", now=100.0)
    metrics.steps_ended(redis, app="myapp", now=107.5)
    samples = scrape(client)
    bucket = "bluegreen_step_duration_seconds_bucket"
    assert value(samples, bucket, step="deploy", le="1.0") == 1
    assert value(samples, bucket, step="deploy", le="5.0") == 2
    assert value(samples, bucket, step="deploy", le="60.0") == 3
    assert value(samples, bucket, step="deploy", le="+Inf") == 3
    assert value(samples, "bluegreen_step_duration_seconds_count", step="deploy") == 3
    assert value(samples, "bluegreen_step_duration_seconds_sum", step="deploy") == 48.4
    assert value(samples, bucket, step="smoke_test", le="5.0") == 0
    assert value(samples, bucket, step="smoke_test", le="10.0") == 1
    assert not redis.exists(metrics.OPEN_STEP_KEY.format(app="myapp"))


def test_gauges_are_read_at_scrape_time(client: FlaskClient, redis: redis_lib.Redis) -> None:
    samples = scrape(client)
    assert value(samples, "bluegreen_queue_length", queue="deploy") == 0
    assert value(samples, "bluegreen_queue_oldest_job_age_seconds", queue="deploy") == 0
    assert value(samples, "bluegreen_worker_alive", queue="deploy") == 0
    assert value(samples, "bluegreen_worker_heartbeat_age_seconds", queue="deploy") is None

    Engine(SETTINGS, redis).submit_tag(TagEvent(forge="github", delivery_id="d",
                                                repository="acme/myapp", tag="v1.0-blue",
                                                commit="a" * 40, pusher="dev"))
    redis.set(queueing.HEARTBEAT_KEY.format(queue="deploy"),
              json.dumps({"worker": "w", "at": time.time() - 4}))
    redis.set(clusterview.key("myapp"), clusterview.encode(
        {"app": "myapp", "taken_at": time.time() - 2, "live": "green",
         "drift": [{"kind": "route", "message": "m"}]}))
    time.sleep(1.1)
    samples = scrape(client)
    assert value(samples, "bluegreen_queue_length", queue="deploy") == 1
    assert value(samples, "bluegreen_queue_oldest_job_age_seconds", queue="deploy") >= 1
    assert value(samples, "bluegreen_worker_alive", queue="deploy") == 1
    assert 4 <= value(samples, "bluegreen_worker_heartbeat_age_seconds", queue="deploy") < 30
    assert value(samples, "bluegreen_live_color", app="myapp", color="green") == 1
    assert value(samples, "bluegreen_live_color", app="myapp", color="blue") == 0
    assert value(samples, "bluegreen_live_color", app="website", color="green") == 0
    assert value(samples, "bluegreen_drift", app="myapp") == 1
    assert 2 <= value(samples, "bluegreen_snapshot_age_seconds", app="myapp") < 30


def test_oldest_job_age_is_the_longest_waiting_not_a_queue_jumper(
        client: FlaskClient, redis: redis_lib.Redis) -> None:
    engine = Engine(SETTINGS, redis)
    engine.submit_tag(TagEvent(forge="github", delivery_id="d1", repository="acme/myapp",
                               tag="v1.0-blue", commit="a" * 40, pusher="dev"))
    time.sleep(1.1)
    [v2] = engine.submit_tag(TagEvent(forge="github", delivery_id="d2",
                                      repository="acme/myapp", tag="v2.0-green",
                                      commit="b" * 40, pusher="dev"))
    engine.submit_command("myapp", "abort", release=v2.release.id, actor="api:ops")
    assert redis.lindex(queueing.queue_key("deploy"), 0).decode().startswith(
        f"{v2.release.id}-abort-")  # the abort jumped the queue: the youngest job is first
    samples = scrape(client)
    assert value(samples, "bluegreen_queue_length", queue="deploy") == 3
    assert value(samples, "bluegreen_queue_oldest_job_age_seconds", queue="deploy") >= 1


def test_no_snapshot_age_until_the_cluster_was_read_once(client: FlaskClient,
                                                         redis: redis_lib.Redis,
                                                         tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"  # an API server nobody answers at
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    cluster = Cluster(kubeconfig=str(kubeconfig), attempts=1, request_timeout=2)
    try:
        snapshot.refresh(redis, cluster, ReleaseStore(redis), SETTINGS.apps["myapp"],
                         source="idle")
    finally:
        cluster.close()
    stored = clusterview.load(redis, "myapp")
    assert stored is not None and stored["error"] and stored["taken_at"] is None
    samples = scrape(client)
    assert value(samples, "bluegreen_snapshot_age_seconds", app="myapp") is None
    assert value(samples, "bluegreen_drift", app="myapp") == 0


def test_redis_down_is_a_503_not_a_500(redis_server: object, redis_url: str) -> None:
    unreachable = redis_lib.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    answer = create_app(SETTINGS, unreachable).test_client().get("/metrics")
    assert answer.status_code == 503 and answer.get_json()["code"] == "redis_unavailable"


# -- end to end ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_counters_move_as_releases_run(tmp_path: Path) -> None:
    with running(tmp_path, {"myapp": app_config("acme/myapp")}) as stack:
        before = parse(http("GET", f"{stack.url}/metrics").body.decode())
        assert value(before, "bluegreen_releases_total", app="myapp", result="live") is None
        v1 = stack.release_id("v1.0-green")
        stack.wait(v1, "awaiting_promotion")
        stack.act("myapp", "promote", v1)
        stack.wait(v1, "live")
        scrapes = [parse(http("GET", f"{stack.url}/metrics").body.decode()) for _ in range(6)]
        assert _only_gauges_differ(scrapes)  # whichever gunicorn worker answered
        after = wait_until(lambda: _when_live(stack.url), 30, "the live colour gauge")
        assert value(after, "bluegreen_releases_total", app="myapp", result="live") == 1
        assert value(after, "bluegreen_webhook_deliveries_total", forge="github",
                     result="queued") == 1
        for step in ("sanity_check", "deploy", "smoke_test", "promote"):
            assert value(after, "bluegreen_step_duration_seconds_count", step=step) == 1, step
        assert value(after, "bluegreen_worker_alive", queue="deploy") == 1
        assert value(after, "bluegreen_queue_length", queue="deploy") == 0


def _when_live(url: str) -> Samples | None:
    samples = parse(http("GET", f"{url}/metrics").body.decode())
    on = value(samples, "bluegreen_live_color", app="myapp", color="green") == 1
    return samples if on else None


def _only_gauges_differ(scrapes: list[Samples]) -> bool:
    """Ages and heartbeats tick between scrapes; counters must not differ."""
    def counters(s: Samples) -> Samples:
        return {k: v for k, v in s.items() if k[0].endswith(("_total", "_bucket", "_count"))}
    return all(counters(s) == counters(scrapes[0]) for s in scrapes[1:])
