"""GET /status: apps, queues and recent releases as JSON, and the optional status token.

In-process (Flask app on a real Redis): the document's shape before anything ran, a
queued release with its queue position and no worker, each release's audit trail
length (a note adds to it without a state change), releases known only from the
records (no snapshot yet), the live colour shown with the release its Deployment
carries and any disagreement with the records' live release said, bounded `?limit=`,
and the token (bearer or `?token=`, an operator token works too, never echoed), which
guards the release reads (`/api/releases[/<id>]`) alike, refusing before any lookup.
End to end (real gunicorn, `bluegreen worker` and the sandbox): a release cycle queued
→ awaiting promotion → live as the status shows it, a rejected release with its
reason, and drift made directly on the sandbox with the Kubernetes client flagged
after the worker's idle refresh.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import redis as redis_lib
import yaml
from flask import Flask
from flask.testing import FlaskClient
from stack import Stack, app_config, running, wait_until
from web import API_TOKEN, CONFIG_YAML, SECRET_ENV, http, push

from webhook import create_app
from worker import clusterview
from worker.api import Engine
from worker.config import parse_settings
from worker.releases import ReleaseState, ReleaseStore

STATUS_TOKEN = "status-token-1"


def make_app(redis: redis_lib.Redis, **env: str) -> Flask:
    settings = parse_settings(yaml.safe_load(CONFIG_YAML), {**SECRET_ENV, **env})
    return create_app(settings, redis)


@pytest.fixture
def client(redis: redis_lib.Redis) -> Iterator[FlaskClient]:
    with make_app(redis).test_client() as c:
        yield c


def test_before_anything_ran(client: FlaskClient) -> None:
    answer = client.get("/status")
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    doc = answer.get_json()
    assert doc["result"] == "ok" and isinstance(doc["generated_at"], float)
    assert sorted(doc["apps"]) == ["myapp", "website"]
    myapp = doc["apps"]["myapp"]
    assert myapp["live"] == {"color": None, "since": None, "release": None, "seen_on": "records",
                             "records_release": None, "conflict": None}
    assert myapp["snapshot"] is None and myapp["drift"] == [] and myapp["awaiting"] == []
    assert myapp["colors"]["blue"] == {"exists": None, "live": False}
    assert doc["queues"] == [{"queue": "deploy", "apps": ["myapp", "website"],
                              "worker": {"alive": False}, "running": None, "waiting": [],
                              "waiting_count": 0, "failed": []}]
    assert doc["releases"] == []


def test_a_queued_release_waits_in_its_queue(client: FlaskClient,
                                             redis: redis_lib.Redis) -> None:
    first, second = push(redis, "v1.0-green"), push(redis, "release-2-blue", "acme/website")
    doc = client.get("/status").get_json()
    (queue,) = doc["queues"]
    assert [(j["position"], j["release"], j["app"]) for j in queue["waiting"]] == [
        (1, first, "myapp"), (2, second, "website")]
    assert queue["waiting_count"] == 2 and queue["worker"]["alive"] is False
    assert [r["id"] for r in doc["releases"]] == [second, first]
    newest = doc["releases"][0]
    assert newest["state"] == "queued" and newest["actor"] == "github:dev"
    assert newest["audit_url"] == f"/api/releases/{second}" and newest["duration"] >= 0
    assert client.get("/status?limit=1").get_json()["releases"][0]["id"] == second


@pytest.mark.parametrize("limit", ["0", "201", "x", "-1"])
def test_limit_is_bounded(client: FlaskClient, limit: str) -> None:
    answer = client.get(f"/status?limit={limit}")
    assert answer.status_code == 400 and answer.get_json()["code"] == "bad_request"


@pytest.mark.parametrize("path", ["/status", "/", "/api/releases"])
def test_the_status_token_guards_the_status_and_the_board(redis: redis_lib.Redis,
                                                          path: str) -> None:
    client = make_app(redis, BLUEGREEN_STATUS_TOKEN=STATUS_TOKEN).test_client()
    refused = client.get(path)
    assert refused.status_code == 401 and refused.get_json()["code"] == "unauthorized"
    assert STATUS_TOKEN not in refused.get_data(as_text=True)
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(path, headers={"Authorization": f"Bearer {STATUS_TOKEN}"}
                      ).status_code == 200
    assert client.get(f"{path}?token={STATUS_TOKEN}").status_code == 200
    assert client.get(path, headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 200
    page = client.get(f"/?token={STATUS_TOKEN}").get_data(as_text=True)
    assert STATUS_TOKEN not in page  # the page's script reads it from the address bar
    assert client.get("/metrics").status_code == 200  # Prometheus scrapes without it


def test_the_status_token_guards_one_release_and_its_audit_trail(
        redis: redis_lib.Redis) -> None:
    release = push(redis, "v1.0-green")
    client = make_app(redis, BLUEGREEN_STATUS_TOKEN=STATUS_TOKEN).test_client()
    listing = client.get("/api/releases")
    for path in (f"/api/releases/{release}", "/api/releases/no-such-release"):
        refused = client.get(path)
        assert (refused.status_code, refused.get_json()) == (401, listing.get_json())
        assert refused.headers["WWW-Authenticate"] == listing.headers["WWW-Authenticate"]
        body = refused.get_data(as_text=True)
        assert refused.get_json()["result"] == "error"
        assert not [leak for leak in (STATUS_TOKEN, release, "v1.0-green", "no-such-release")
                    if leak in body]
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    for token in (STATUS_TOKEN, API_TOKEN):
        shown = client.get(f"/api/releases/{release}", headers={"Authorization": f"Bearer {token}"})
        assert shown.status_code == 200 and shown.get_json()["release"]["id"] == release
        assert [e["state_to"] for e in shown.get_json()["audit"]] == ["queued"]
    assert client.get(f"/api/releases/{release}?token={STATUS_TOKEN}").status_code == 200
    missing = client.get("/api/releases/no-such-release",
                         headers={"Authorization": f"Bearer {STATUS_TOKEN}"})
    assert (missing.status_code, missing.get_json()["code"]) == (404, "unknown_release")


def test_without_a_token_configured_everything_is_open(client: FlaskClient,
                                                       redis: redis_lib.Redis) -> None:
    release = push(redis, "v1.0-green")
    assert client.get("/").status_code == 200
    assert client.get("/status", headers={"Authorization": "Bearer anything"}).status_code == 200
    assert client.get("/api/releases").get_json()["releases"][0]["id"] == release
    shown = client.get(f"/api/releases/{release}")
    assert shown.status_code == 200 and shown.get_json()["release"]["id"] == release


def test_each_release_says_how_long_its_audit_trail_is(client: FlaskClient,
                                                       redis: redis_lib.Redis) -> None:
    release = push(redis, "v1.0-green")
    [listed] = client.get("/status").get_json()["releases"]
    assert listed["audit_entries"] == 1
    Engine(parse_settings(yaml.safe_load(CONFIG_YAML), {}), redis).submit_command(
        "myapp", "abort", release=release, actor="api:ops")  # a note: updated_at stays
    [again] = client.get("/status").get_json()["releases"]
    assert again["updated_at"] == listed["updated_at"] and again["audit_entries"] == 2


TO_LIVE = ("checking", "deploying", "testing", "awaiting_promotion", "live")


def walk(redis: redis_lib.Redis, release: str, *states: str) -> None:
    """Move a release along the state table, as the worker's steps would."""
    store = ReleaseStore(redis)
    for state in states:
        store.transition(release, ReleaseState(state), actor="worker", step="test", message=state)


def snapshot(redis: redis_lib.Redis, live: str, blue: str, green: str, taken_at: float) -> None:
    """The cluster as the worker last saw it: the default route and each colour's label."""
    colors = {c: {"deployment": f"myapp-{c}", "exists": True, "release": r, "is_ready": True}
              for c, r in (("blue", blue), ("green", green))}
    redis.set(clusterview.key("myapp"), clusterview.encode(
        {"app": "myapp", "taken_at": taken_at, "live": live, "live_since": taken_at,
         "colors": colors, "drift": []}))


def test_the_live_colour_is_shown_with_the_release_it_runs_and_a_disagreement_said(
        client: FlaskClient, redis: redis_lib.Redis) -> None:
    v2, v3 = push(redis, "v2.0-green"), push(redis, "v3.0-blue")
    walk(redis, v2, *TO_LIVE, "standby")
    walk(redis, v3, *TO_LIVE)
    snapshot(redis, "blue", v3, v2, time.time())  # the records and the cluster agree
    live = client.get("/status").get_json()["apps"]["myapp"]["live"]
    assert (live["color"], live["release"]["id"], live["records_release"]["id"],
            live["conflict"]) == ("blue", v3, v3, None)

    snapshot(redis, "green", v3, v2, time.time())  # someone switched the route by hand
    live = client.get("/status").get_json()["apps"]["myapp"]["live"]
    assert (live["color"], live["seen_on"]) == ("green", "cluster")
    assert live["release"]["id"] == v2 and live["release"]["tag"] == "v2.0-green"
    assert live["records_release"]["id"] == v3
    assert live["conflict"] == (
        f"the default route sends users to green, whose Deployment myapp-green carries "
        f"v2.0-green ({v2}), but the records say v3.0-blue ({v3}) is live on blue")

    snapshot(redis, "blue", "someone-elses", v2, time.time())  # or replaced the Deployment
    live = client.get("/status").get_json()["apps"]["myapp"]["live"]
    assert live["release"] is None and live["records_release"]["id"] == v3
    assert "myapp-blue carries release someone-elses, but the records say" in live["conflict"]

    snapshot(redis, "green", v3, v2, time.time() - 3600)  # taken before v3 went live
    live = client.get("/status").get_json()["apps"]["myapp"]["live"]
    assert (live["color"], live["release"]["id"], live["conflict"]) == ("green", v2, None)


# -- end to end ---------------------------------------------------------------------------------


def status(stack: Stack) -> dict[str, Any]:
    answer = http("GET", f"{stack.url}/status")
    assert answer.status == 200, answer.body
    doc: dict[str, Any] = answer.json
    return doc


def release_in(doc: dict[str, Any], release_id: str) -> dict[str, Any]:
    return next(r for r in doc["releases"] if r["id"] == release_id)


def switch_default_route_by_hand(stack: Stack, subset: str) -> None:
    """What someone with kubectl might do: point the default route elsewhere."""
    assert stack.sandbox is not None
    api = kubernetes.config.new_client_from_config(config_file=stack.sandbox.kubeconfig)
    where = ("networking.istio.io", "v1", "default", "virtualservices", "myapp-blue-green")
    try:
        objects = kubernetes.client.CustomObjectsApi(api)
        vs = objects.get_namespaced_custom_object(*where)  # as `kubectl edit` would
        vs["spec"]["http"][-1]["route"][0]["destination"]["subset"] = subset
        objects.replace_namespaced_custom_object(*where, vs)
    finally:
        api.close()


@pytest.mark.slow
def test_status_across_a_release_cycle_and_drift(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLUEGREEN_SNAPSHOT_INTERVAL", "1")
    with running(tmp_path, {"myapp": app_config("acme/myapp")}) as stack:
        stack.stop_worker()
        v1 = stack.release_id("v1.0-green")
        doc = status(stack)
        assert release_in(doc, v1)["state"] == "queued"
        assert doc["queues"][0]["waiting"][0]["release"] == v1
        assert doc["queues"][0]["worker"] == {"alive": False}

        stack.start_worker()
        stack.wait(v1, "awaiting_promotion")
        app = wait_until(lambda: _app_when(stack, lambda a: a["colors"]["green"].get("exists")),
                         30, "the snapshot to show green")
        assert [r["id"] for r in app["awaiting"]] == [v1]
        assert app["live"]["color"] is None and app["drift"] == []
        green = app["colors"]["green"]
        assert (green["release"], green["version"], green["ready"], green["desired"],
                green["image"], green["live"]) == (v1, "v1.0", 1, 1, "sandbox.local/app:v1.0",
                                                   False)
        assert app["snapshot"]["age"] < 30 and app["snapshot"]["error"] is None
        assert status(stack)["queues"][0]["worker"]["alive"] is True

        stack.act("myapp", "promote", v1)
        stack.wait(v1, "live")
        app = wait_until(lambda: _app_when(stack, lambda a: a["live"]["color"] == "green"),
                         30, "green to show as live")
        assert app["live"]["release"]["id"] == v1 and app["live"]["seen_on"] == "cluster"
        assert app["live"]["since"] == stack.release(v1)["release"]["updated_at"]
        assert (app["colors"]["green"]["live"], app["colors"]["blue"]["live"]) == (True, False)
        assert app["awaiting"] == [] and app["drift"] == []
        entry = release_in(status(stack), v1)
        assert entry["state"] == "live" and entry["actor"] == "github:octocat"

        bad = stack.release_id("v1.1-green")  # into the live colour: the sanity check refuses
        stack.wait(bad, "rejected")
        assert "live" in release_in(status(stack), bad)["error"]

        switch_default_route_by_hand(stack, "blue")
        app = wait_until(lambda: _app_when(stack, lambda a: a["drift"]), 30, "drift")
        assert app["live"]["color"] == "blue" and app["live"]["release"] is None
        assert app["live"]["records_release"]["id"] == v1
        assert app["live"]["conflict"] == (
            "the default route sends users to blue, which has no Deployment, but the records "
            f"say v1.0-green ({v1}) is live on green")
        assert [d["kind"] for d in app["drift"]] == ["route"]
        assert app["drift"][0]["message"] == (
            "VirtualService default/myapp-blue-green sends default traffic to blue, but the "
            f"live release v1.0-green ({v1}) is on green")


def _app_when(stack: Stack, condition: Any) -> dict[str, Any] | None:
    app: dict[str, Any] = status(stack)["apps"]["myapp"]
    return app if condition(app) else None
