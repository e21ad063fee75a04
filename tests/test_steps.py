"""worker.steps and worker.smoke: route reading, make-before-break, smoke checks, each step.

Pure parts: which subsets a VirtualService uses, where its cookie route goes, how an
HTTP smoke check judges an answer (against a real local HTTP server). Against the
sandbox: route changes never leave a subset undefined, the sanity check refuses the
live colour, deploy/promote/rollback/decommission/abort re-check the cluster and raise
`Stale` when it no longer matches.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from conftest import Sandbox
from flows import Flow, S, app_body, environ, wait_until
from rq import Queue
from rq.registry import FailedJobRegistry

from worker.colors import Color
from worker.commands import StaleCommand
from worker.jobs import Session, command_job, fail, release_job
from worker.machine import ReleaseState
from worker.manifests import deploy_manifests
from worker.recovery import recover
from worker.smoke import SmokeFailed, check_http, contains, fetch
from worker.steps import (
    Context,
    StepFailed,
    cookie_route_subset,
    in_namespace,
    referenced_subsets,
    route_state,
)

COOKIE_ROUTE = {"name": "myapp-test",
                "match": [{"headers": {"cookie": {"regex": "^(.*?;)?(test=true)(;.*)?$"}}}],
                "route": [{"destination": {"host": "myapp", "subset": "green"}}]}
DEFAULT_ROUTE = {"name": "myapp-default",
                 "route": [{"destination": {"host": "myapp", "subset": "blue"}}]}


def test_cookie_route_and_referenced_subsets() -> None:
    vs = {"spec": {"http": [COOKIE_ROUTE, DEFAULT_ROUTE]}}
    assert cookie_route_subset(vs) == "green"
    assert referenced_subsets(vs) == {"green", "blue"}
    steady = {"spec": {"http": [DEFAULT_ROUTE]}}
    assert cookie_route_subset(steady) is None
    assert referenced_subsets(steady) == {"blue"}
    assert cookie_route_subset(None) is None and referenced_subsets(None) == set()


@pytest.mark.parametrize(("actual", "expected", "ok"), [
    ({"ready": True, "version": "v1"}, {"ready": True}, True),
    ({"ready": False}, {"ready": True}, False),
    ({"ready": 1}, {"ready": True}, False),  # 1 is not true
    ({}, {"ready": True}, False),
    ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}, True),
    ([1], {"a": 1}, False),
])
def test_json_answer_must_contain_the_expected_subset(actual: object, expected: dict[str, object],
                                                      ok: bool) -> None:
    assert contains(actual, expected) is ok


class _App(BaseHTTPRequestHandler):
    """Answers /ready 200 only with the test cookie; counts requests to /flaky."""

    flaky_left = 2

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        cookie = self.headers.get("Cookie") or ""
        if self.path == "/flaky" and _App.flaky_left > 0:
            _App.flaky_left -= 1
            status, body = 503, {"ready": False}
        elif self.path in ("/ready", "/flaky"):
            status, body = (200, {"ready": True}) if "test=true" in cookie else (
                404, {"error": "no route"})
        else:
            status, body = 404, {"error": "not found"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def local_app() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_smoke_check_sends_the_test_cookie(local_app: str) -> None:
    answer = check_http(local_app, path="/ready", status=200, expect_json={"ready": True},
                        within=1)
    assert answer.status == 200


def test_smoke_check_retries_until_the_route_answers(local_app: str) -> None:
    _App.flaky_left = 2
    assert check_http(local_app, path="/flaky", expect_json={"ready": True}, within=5,
                      interval=0.05).status == 200


def test_smoke_check_failure_shows_what_came_back(local_app: str) -> None:
    with pytest.raises(SmokeFailed) as caught:
        check_http(local_app, path="/nope", status=200, expect_json={"ready": True},
                   within=0.3, interval=0.1)
    message = str(caught.value)
    assert "/nope" in message and "expected 200" in message
    assert 'got 404: {"error": "not found"}' in message


def test_smoke_check_without_an_answer(local_app: str) -> None:
    with pytest.raises(SmokeFailed, match="no answer"):
        check_http("http://127.0.0.1:9", path="/ready", within=0.2, interval=0.1)


# -- steps and jobs against the sandbox, jobs run in-process by a burst rq worker -------------


@pytest.fixture
def make_flow(sandbox: Sandbox, redis: redis_lib.Redis, redis_url: str,
              tmp_path: Path) -> Callable[..., Flow]:
    """A Flow for the app `myapp` configured with `app_body(**overrides)`."""
    def make(**overrides: Any) -> Flow:
        return Flow(sandbox, redis, redis_url, tmp_path, {"myapp": app_body(**overrides)})
    return make


@pytest.fixture
def flow(make_flow: Callable[..., Flow]) -> Flow:
    return make_flow()


def live(flow: Flow, tag: str) -> str:
    """Release `tag` and promote it; its release id."""
    rid = flow.release(tag)
    flow.run_jobs()
    assert flow.get(rid).state is S.AWAITING_PROMOTION, flow.store.audit(rid)[-1].message
    flow.command("promote", rid)
    flow.run_jobs()
    assert flow.get(rid).state is S.LIVE, flow.store.audit(rid)[-1].message
    return rid


def routes_now(flow: Flow) -> dict[str, Any]:
    cluster = flow.cluster()
    try:
        return route_state(Context(flow.settings.apps["myapp"], cluster, flow.store))
    finally:
        cluster.close()


def test_first_release_is_tested_by_cookie_then_promoted(flow: Flow) -> None:
    rid = flow.release("v1.0-green")
    flow.run_jobs()
    release = flow.get(rid)
    assert release.state is S.AWAITING_PROMOTION and release.step is None
    assert flow.ingress("/")[0] == 404  # nothing is live: no default route at all
    assert flow.served_by(cookie=True) == "green v1.0", flow.ingress("/", cookie=True)
    steps_seen = [a.step for a in flow.store.audit(rid)]
    assert steps_seen[:5] == ["intake", "sanity_check", "deploy", "deployment", "smoke_test"]
    flow.command("promote", rid)
    flow.run_jobs()
    assert flow.get(rid).state is S.LIVE
    assert flow.served_by() == flow.served_by(cookie=True) == "green v1.0"
    entry = flow.store.audit(rid)[-1]
    assert entry.route_before is not None and entry.route_after is not None
    assert (entry.route_before["default"], entry.route_before["test"]) == (None, "green")
    assert (entry.route_after["default"], entry.route_after["test"]) == ("green", None)


def test_promote_rollback_decommission(flow: Flow) -> None:
    v1 = live(flow, "v1.0-green")
    v2 = flow.release("v2.0-blue")
    flow.run_jobs()
    assert (flow.served_by(), flow.served_by(cookie=True)) == ("green v1.0", "blue v2.0")
    flow.command("promote", v2)
    flow.run_jobs()
    assert (flow.get(v1).state, flow.get(v2).state) == (S.STANDBY, S.LIVE)
    assert flow.served_by() == flow.served_by(cookie=True) == "blue v2.0"
    flow.command("rollback", v2)
    flow.run_jobs()
    assert (flow.get(v1).state, flow.get(v2).state) == (S.LIVE, S.ROLLED_BACK)
    assert flow.served_by() == "green v1.0"
    flow.command("decommission", v2, color=Color.BLUE)
    flow.run_jobs()
    assert flow.get(v2).state is S.DECOMMISSIONED
    assert routes_now(flow)["deployments"]["blue"] is None
    assert flow.served_by() == "green v1.0"


def test_a_tag_rejected_for_the_live_colour_does_not_hide_what_that_colour_holds(
        flow: Flow) -> None:
    v1 = live(flow, "v1.0-green")
    mistaken = flow.release("v1.1-green")  # green is live: the sanity check refuses it
    flow.run_jobs()
    assert flow.get(mistaken).state is S.REJECTED
    v2 = flow.release("v2.0-blue")
    flow.run_jobs()
    flow.command("promote", v2)
    flow.run_jobs()
    assert (flow.get(v1).state, flow.get(v2).state) == (S.STANDBY, S.LIVE)
    # green still holds v1.0 (the rollback target); the rejected tag never touched it
    assert routes_now(flow)["deployments"]["green"] is not None
    assert flow.command("decommission", v1, color=Color.GREEN).release.id == v1  # named
    assert flow.command("decommission", color=Color.GREEN).release.id == v1  # by colour
    flow.run_jobs()
    assert flow.get(v1).state is S.DECOMMISSIONED
    assert routes_now(flow)["deployments"]["green"] is None
    assert flow.served_by() == "blue v2.0"


def test_the_colour_that_left_default_traffic_drains_before_its_pods_are_replaced(
        make_flow: Callable[..., Flow]) -> None:
    flow = make_flow(drain_seconds=2)
    live(flow, "v1.0-green")
    v2 = flow.release("v2.0-blue")
    flow.run_jobs()
    since = flow.last_request()
    flow.command("promote", v2)
    flow.run_jobs()  # green leaves default traffic
    v3 = flow.release("v3.0-green")
    flow.run_jobs()
    assert flow.get(v3).state is S.AWAITING_PROMOTION
    log = flow.api_requests(since)
    switched = max(r["time"] for r in log if r["method"] == "PATCH"
                   and "virtualservices/myapp-blue-green" in r["path"] and v2 in r["user_agent"])
    replaced = min(r["time"] for r in log if r["method"] == "PATCH"
                   and r["path"].endswith("deployments/myapp-green") and v3 in r["user_agent"])
    assert replaced - switched >= 2.0 - 0.05  # in-flight requests to green had time to finish


def test_apps_sharing_the_ingress_are_told_apart_by_host(
        sandbox: Sandbox, redis: redis_lib.Redis, redis_url: str, tmp_path: Path) -> None:
    """Each app's routes answer for its own host; smoke tests ask for that host."""
    flow = Flow(sandbox, redis, redis_url, tmp_path, {
        "shop": app_body(repository="acme/shop", host="shop.example.com"),
        "blog": app_body(repository="acme/blog", host="blog.example.com",
                         smoke=[{"path": "/", "json": {"version": "v7.0"}}])})
    shop = flow.release("v1.0-green", repository="acme/shop")
    blog = flow.release("v7.0-blue", repository="acme/blog")
    flow.run_jobs()
    assert flow.get(shop).state is S.AWAITING_PROMOTION, flow.store.audit(shop)[-1].message
    assert flow.get(blog).state is S.AWAITING_PROMOTION, flow.store.audit(blog)[-1].message
    for host, expected in (("shop.example.com", "v1.0"), ("blog.example.com", "v7.0")):
        answer = fetch(sandbox.ingress + "/", host=host)
        assert answer.status == 200 and json.loads(answer.body)["version"] == expected, host
    assert fetch(sandbox.ingress + "/", host="other.example.com").status == 404


def test_tag_for_the_live_colour_is_rejected(flow: Flow) -> None:
    v1 = live(flow, "v1.0-green")
    before = routes_now(flow)
    rid = flow.release("v1.1-green")
    flow.run_jobs()
    release = flow.get(rid)
    assert release.state is S.REJECTED
    assert release.error is not None and "green, which is live" in release.error
    assert routes_now(flow) == before
    assert flow.get(v1).state is S.LIVE and flow.served_by() == "green v1.0"


def test_failed_smoke_test_removes_test_route_leaves_live_alone(
        make_flow: Callable[..., Flow]) -> None:
    flow = make_flow(smoke=[{"path": "/", "json": {"version": "v1.0"}}], smoke_timeout=2)
    live(flow, "v1.0-green")
    rid = flow.release("v2.0-blue")
    flow.run_jobs()
    release = flow.get(rid)
    assert release.state is S.FAILED
    assert release.error is not None and release.error.startswith("smoke_test: GET ")
    assert '"version": "v2.0"' in release.error  # what came back is shown
    routes = routes_now(flow)
    assert (routes["default"], routes["test"]) == ("green", None)
    assert routes["deployments"]["blue"]["release"] == rid  # left for inspection
    assert flow.served_by() == flow.served_by(cookie=True) == "green v1.0"
    failed = flow.store.audit(rid)[-1]
    assert failed.route_before is not None and failed.route_before["test"] == "blue"
    assert failed.route_after is not None and failed.route_after["test"] is None


def test_rollout_that_never_gets_ready_fails(make_flow: Callable[..., Flow]) -> None:
    flow = make_flow(rollout_timeout=3)
    live(flow, "v1.0-green")
    rid = flow.release("v2.0-never-ready-blue")
    flow.run_jobs()
    release = flow.get(rid)
    assert release.state is S.FAILED
    assert release.error is not None and "not ready after 3s (0/1 ready" in release.error
    assert flow.served_by() == flow.served_by(cookie=True) == "green v1.0"


def test_hook_that_exits_non_zero_fails_the_release(make_flow: Callable[..., Flow]) -> None:
    flow = make_flow(hooks={"post_deploy": [
    ["true"], ["sh", "-c", "echo migrating; echo 'no database' >&2; exit 4"]]})
    rid = flow.release("v1.0-green")
    flow.run_jobs()
    release = flow.get(rid)
    assert release.state is S.FAILED
    assert release.error is not None and "exited with 4" in release.error
    assert "no database" in release.error
    assert routes_now(flow)["test"] is None  # nothing was live: the routes are gone
    assert flow.ingress("/", cookie=True)[0] == 404


def test_auto_promote_goes_live_after_hooks_and_smoke_tests(make_flow: Callable[..., Flow]) -> None:
    flow = make_flow(auto_promote=True, hooks={"post_deploy": [["true"]]},
                                     smoke=[{"path": "/ready", "json": {"ready": True}},
                                            {"exec": ["sh", "-c", "test -n \"$PORT\""]}])
    rid = flow.release("v1.0-green")
    flow.run_jobs()
    assert flow.get(rid).state is S.LIVE
    assert flow.served_by() == "green v1.0"


def test_a_release_failing_its_sanity_check_leaves_the_one_awaiting_on_its_colour(
        flow: Flow) -> None:
    older = flow.release("v1.0-green")
    flow.run_jobs()
    newer = flow.release("v1.1-green")
    # The cluster refuses the routes' reads twice: the step's snapshot (which only logs
    # it), then the sanity check, which cannot tell the live colour and fails
    flow.fault(path="/virtualservices/myapp-blue-green$", method="GET", status=403, count=2)
    flow.run_jobs()
    failed = flow.get(newer)
    assert failed.state is S.FAILED and failed.error is not None
    assert failed.error.startswith("sanity_check:"), failed.error
    assert "nothing of it was on the cluster" in flow.store.audit(newer)[-1].message
    # v1.0-green was not superseded by a release that never deployed, and keeps its route
    assert flow.get(older).state is S.AWAITING_PROMOTION
    assert flow.served_by(cookie=True) == "green v1.0"
    flow.command("promote", older)
    flow.run_jobs()
    assert flow.get(older).state is S.LIVE
    assert flow.served_by() == "green v1.0"


def test_a_release_resumed_with_an_abort_waiting_is_aborted_once_it_awaits(
        flow: Flow) -> None:
    live(flow, "v1.0-green")
    v2 = flow.release("v2.0-blue")
    for state in (S.CHECKING, S.DEPLOYING):  # a worker took it this far and died
        flow.store.transition(v2, state, actor="worker", step="deploy", message="")
    Queue("deploy", connection=flow.redis).remove(v2)
    flow.command("abort", v2, actor="api:ops")
    with environ(flow.env):
        recover("deploy")
    assert flow.get(v2).state is S.ABORTED, [a.message for a in flow.store.audit(v2)]
    assert routes_now(flow)["deployments"]["blue"] is None  # what it applied is gone
    assert Queue("deploy", connection=flow.redis).count == 0


def test_an_abort_that_cannot_be_done_at_once_stops_the_release_and_is_tried_again(
        make_flow: Callable[..., Flow]) -> None:
    flow = make_flow(auto_promote=True)
    v1 = flow.release("v1.0-green")
    flow.run_jobs()
    v2 = flow.release("v2.0-blue")
    flow.fault(path="/deployments/myapp-blue$", method="PATCH", latency=1.5, count=1)
    flow.fault(path="/deployments/myapp-blue$", method="DELETE", status=403, count=1)
    abort_while_running(flow, v2, S.DEPLOYING)  # the job's abort fails once, its own works
    assert (flow.get(v1).state, flow.get(v2).state) == (S.LIVE, S.ABORTED)
    failed = FailedJobRegistry(queue=Queue("deploy", connection=flow.redis))
    assert failed.get_job_ids() == []  # the release's job stopped, it did not crash
    assert flow.store.audit(v2)[-1].actor == "api:ops"
    assert routes_now(flow)["deployments"]["blue"] is None
    assert flow.served_by() == "green v1.0"  # never promoted


def test_a_deploy_failing_before_its_deployment_leaves_the_colour_to_what_it_held(
        flow: Flow) -> None:
    waiting = flow.release("v1.0-green")
    flow.run_jobs()
    flow.fault(path="/services/myapp$", method="PATCH", status=403, count=1)
    refused = flow.release("v1.1-green")  # its Service write is refused: it fails at once
    flow.run_jobs()
    assert (flow.get(waiting).state, flow.get(refused).state) == (
        S.AWAITING_PROMOTION, S.FAILED)
    assert "had not applied its Deployment" in flow.store.audit(refused)[-1].message
    assert flow.served_by(cookie=True) == "green v1.0"  # its test route stands
    flow.command("promote", waiting)
    flow.run_jobs()
    assert flow.get(waiting).state is S.LIVE
    # the same on a standby colour: decommission still finds what green holds
    live(flow, "v2.0-blue")
    flow.fault(path="/services/myapp$", method="PATCH", status=403, count=1)
    failed = flow.release("v2.1-green")
    flow.run_jobs()
    assert (flow.get(waiting).state, flow.get(failed).state) == (S.STANDBY, S.FAILED)
    assert flow.command("decommission", color=Color.GREEN).release.id == waiting
    flow.run_jobs()
    assert flow.get(waiting).state is S.DECOMMISSIONED
    assert routes_now(flow)["deployments"]["green"] is None


def test_a_release_resumed_after_its_deployment_was_applied_retires_the_standby(
        flow: Flow) -> None:
    v1 = live(flow, "v1.0-green")
    live(flow, "v2.0-blue")
    v3 = flow.release("v3.0-green")
    # a worker took v3 this far, applied its Deployment over v1's, and died
    for state in (S.CHECKING, S.DEPLOYING):
        flow.store.transition(v3, state, actor="worker", step="deploy", message="")
    Queue("deploy", connection=flow.redis).remove(v3)
    cluster = flow.cluster()
    try:
        app = flow.settings.apps["myapp"]
        for manifest in in_namespace(Context(app, cluster, flow.store), deploy_manifests(
                app, flow.get(v3), live=Color.BLUE)["deployment.yml"]):
            cluster.apply(manifest=manifest)
    finally:
        cluster.close()
    with environ(flow.env):
        recover("deploy")
    assert flow.get(v3).state is S.AWAITING_PROMOTION
    assert routes_now(flow)["deployments"]["green"]["release"] == v3
    assert flow.get(v1).state is S.DECOMMISSIONED  # no rollback to a Deployment that is gone
    with pytest.raises(StaleCommand):
        flow.command("decommission", v1, color=Color.GREEN)


def test_a_failure_while_the_default_route_goes_to_an_unknown_subset_touches_no_route(
        flow: Flow) -> None:
    first = flow.release("v1.0-green")  # nothing live yet: only its cookie route
    flow.run_jobs()
    cluster = flow.cluster()
    try:
        vs = cluster.get_virtual_service(namespace="default", name="myapp-blue-green")
        assert vs is not None and len(vs["spec"]["http"]) == 1
        vs["spec"]["http"].append({"name": "by-hand", "route": [  # a default route, by hand
            {"destination": {"host": "myapp", "subset": "purple"}}]})
        cluster.apply(manifest={"apiVersion": vs["apiVersion"], "kind": "VirtualService",
                                "metadata": {"name": "myapp-blue-green", "namespace": "default"},
                                "spec": vs["spec"]})
        # the release then fails (say, its smoke test), as run_steps would report it: nothing
        # was live at its sanity check
        ctx = Context(flow.settings.apps["myapp"], cluster, flow.store)
        outcome = fail(ctx, flow.get(first), "smoke_test",
                       StepFailed("smoke_test", "no answer"), None)
        after = cluster.get_virtual_service(namespace="default", name="myapp-blue-green")
    finally:
        cluster.close()
    assert outcome["result"] == "failed"
    assert "not a colour: 'purple'" in outcome["message"]
    assert "check the VirtualService by hand" in outcome["message"]
    assert flow.get(first).state is S.FAILED
    assert after is not None and after["spec"] == vs["spec"]  # the routes as they were


def test_promote_is_refused_when_the_colours_deployment_carries_another_release(
        flow: Flow) -> None:
    rid = flow.release("v1.0-green")
    flow.run_jobs()
    cluster = flow.cluster()
    try:  # by hand, or a release the records do not know: the label says what runs there
        cluster.apply(manifest={"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
            "name": "myapp-green", "namespace": "default", "labels": {"release": "by-hand"}}},
            field_manager="by-hand")
    finally:
        cluster.close()
    flow.command("promote", rid)
    flow.run_jobs()
    assert flow.get(rid).state is S.AWAITING_PROMOTION
    note = flow.store.audit(rid)[-1]
    assert "promote refused" in note.message and f"carries release by-hand, not {rid}" \
        in note.message
    assert flow.ingress("/")[0] == 404  # nothing went live


def test_a_default_route_split_by_hand_keeps_both_colours_safe(flow: Flow) -> None:
    standby = live(flow, "v1.0-green")
    live(flow, "v2.0-blue")
    cluster = flow.cluster()
    try:  # someone sends a tenth of the users back to green, by hand
        vs = cluster.get_virtual_service(namespace="default", name="myapp-blue-green")
        assert vs is not None
        vs["spec"]["http"][-1]["route"] = [
            {"destination": {"host": "myapp", "subset": "blue"}, "weight": 90},
            {"destination": {"host": "myapp", "subset": "green"}, "weight": 10}]
        cluster.apply(manifest={"apiVersion": vs["apiVersion"], "kind": "VirtualService",
                                "metadata": {"name": "myapp-blue-green", "namespace": "default"},
                                "spec": vs["spec"]}, field_manager="by-hand")
    finally:
        cluster.close()
    refused = flow.release("v3.0-green")
    flow.run_jobs()
    assert flow.get(refused).state is S.REJECTED
    assert "splits it between blue and green" in flow.store.audit(refused)[-1].message
    flow.command("decommission", standby, color=Color.GREEN)
    flow.run_jobs()
    assert flow.get(standby).state is S.STANDBY
    assert "green is live" in flow.store.audit(standby)[-1].message
    assert routes_now(flow)["deployments"]["green"]["release"] == standby


def test_a_promote_whose_route_cannot_be_read_back_says_so_and_asking_again_records_it(
        flow: Flow) -> None:
    v1 = live(flow, "v1.0-green")
    v2 = flow.release("v2.0-blue")
    flow.run_jobs()
    since = flow.last_request()
    flow.fault(path="/virtualservices/myapp-blue-green$", method="PATCH", latency=1.5, count=1)

    def refuse_the_read_back() -> None:  # armed while the route's write is on its way
        wait_until(lambda: any(r["method"] == "PATCH" and "destinationrules" in r["path"]
                               for r in flow.api_requests(since)), 20, "the DestinationRule")
        flow.fault(path="/virtualservices/myapp-blue-green$", method="GET", status=403, count=1)
    arming = threading.Thread(target=refuse_the_read_back)
    arming.start()
    flow.command("promote", v2)
    flow.run_jobs()
    arming.join(20)
    note = flow.store.audit(v2)[-1].message
    assert "the route to blue was applied, but reading it back failed" in note, note
    assert flow.served_by() == "blue v2.0"  # users are on blue; the records lag behind
    assert (flow.get(v1).state, flow.get(v2).state) == (S.LIVE, S.AWAITING_PROMOTION)
    flow.command("promote", v2)
    flow.run_jobs()
    assert (flow.get(v1).state, flow.get(v2).state) == (S.STANDBY, S.LIVE)


def test_a_release_of_an_app_no_longer_configured_fails_saying_what_it_left(
        flow: Flow) -> None:
    queued, left = flow.release("v1.0-green"), flow.release("v1.0-blue")
    for state in (S.CHECKING, S.DEPLOYING):  # a worker died mid-deploy, then the app went
        flow.store.transition(left, state, actor="worker", step="deploy", message="")
    session = Session(dataclasses.replace(flow.settings, apps={}), flow.redis, flow.store)
    assert [release_job(session, r)["result"] for r in (queued, left)] == ["failed"] * 2
    assert flow.get(queued).error == "app myapp is no longer configured; nothing was applied"
    assert "blue Deployment and test route, if any) is left" in (flow.get(left).error or "")


def test_promote_of_a_superseded_release_is_stale(flow: Flow) -> None:
    older = flow.release("v1.0-green")
    flow.run_jobs()
    newer = flow.release("v1.1-green")
    flow.command("promote", older)  # accepted: older still awaits when it is asked
    flow.run_jobs()
    assert (flow.get(older).state, flow.get(newer).state) == (S.SUPERSEDED, S.AWAITING_PROMOTION)
    note = flow.store.audit(older)[-1]
    assert note.step == "promote" and note.state_to is None
    assert "promote refused" in note.message and "nothing was changed" in note.message
    assert flow.served_by(cookie=True) == "green v1.1"
    assert flow.ingress("/")[0] == 404  # still nothing live


def test_a_superseded_release_names_the_release_that_superseded_it(flow: Flow) -> None:
    # superseded while awaiting: by the one that deployed into its colour next
    older = flow.release("v1.0-green")
    flow.run_jobs()
    newer = live(flow, "v1.1-green")
    mistaken = flow.release("v1.2-green")  # green is live: rejected, but recorded after
    flow.run_jobs()
    assert (flow.get(older).state, flow.get(mistaken).state) == (S.SUPERSEDED, S.REJECTED)
    with pytest.raises(StaleCommand) as refused:
        flow.command("promote", older)
    assert refused.value.message.startswith(f"release {older} is superseded by {newer} "
                                            "(v1.1-green)"), refused.value.message
    # skipped while queued: by the newer tag recorded before it ran
    skipped, taken = flow.release("v2.0-blue"), flow.release("v2.1-blue")
    flow.run_jobs()
    later = flow.release("v2.2-blue")
    flow.run_jobs()
    assert [flow.get(r).state for r in (skipped, taken, later)] == [
        S.SUPERSEDED, S.SUPERSEDED, S.AWAITING_PROMOTION]
    with pytest.raises(StaleCommand) as refused:
        flow.command("abort", skipped)
    assert refused.value.message.startswith(f"release {skipped} is superseded by {taken} "
                                            "(v2.1-blue)"), refused.value.message


def test_stale_commands_change_nothing(flow: Flow) -> None:
    v1 = live(flow, "v1.0-green")
    v2 = flow.release("v2.0-blue")
    flow.run_jobs()
    before = routes_now(flow)
    session = Session(flow.settings, flow.redis, flow.store)
    with environ(flow.env):
        refused = [
            command_job(session, "myapp", "decommission", v1, "green", "api:x"),  # live colour
            command_job(session, "myapp", "rollback", v1, None, "api:x"),  # no standby
            command_job(session, "myapp", "abort", v1, None, "api:x"),  # live
            command_job(session, "myapp", "promote", v1, None, "api:x"),  # already live
        ]
    assert [r["result"] for r in refused] == ["stale"] * 4, refused
    assert "green is live" in refused[0]["message"]
    assert routes_now(flow) == before
    assert (flow.get(v1).state, flow.get(v2).state) == (S.LIVE, S.AWAITING_PROMOTION)


def test_abort_takes_the_release_off_the_cluster(flow: Flow) -> None:
    live(flow, "v1.0-green")
    rid = flow.release("v2.0-blue")
    flow.run_jobs()
    flow.command("abort", rid)
    flow.run_jobs()
    assert flow.get(rid).state is S.ABORTED
    routes = routes_now(flow)
    assert (routes["default"], routes["test"], routes["deployments"]["blue"]) == (
        "green", None, None)
    assert flow.served_by(cookie=True) == "green v1.0"


def test_an_abort_of_a_queued_release_runs_before_it(flow: Flow) -> None:
    v1 = live(flow, "v1.0-green")
    live(flow, "v2.0-blue")
    v3 = flow.release("v3.0-green")
    assert flow.command("abort", v3).position == 1  # ahead of v3's own job
    flow.run_jobs()
    assert flow.get(v3).state is S.ABORTED
    assert flow.store.audit(v3)[-1].message == ("aborted before it ran; nothing of it was on "
                                                 "the cluster")
    # green still holds the rollback target, untouched
    assert flow.get(v1).state is S.STANDBY
    assert routes_now(flow)["deployments"]["green"]["release"] == v1


def abort_while_running(flow: Flow, rid: str, state: ReleaseState) -> None:
    """Run the queue; from another thread, ask for an abort of `rid` once it is in `state`."""
    asked: list[str] = []

    def ask() -> None:
        flow.wait(rid, state, timeout=30)
        asked.append(flow.command("abort", rid, actor="api:ops").job_id)
    asking = threading.Thread(target=ask)
    asking.start()
    flow.run_jobs()  # rq's worker wants the main thread
    asking.join(30)
    flow.clear_faults()
    assert asked, f"no abort was asked while {rid} was {state}"


def test_an_abort_asked_during_the_sanity_check_stops_the_release_before_its_deploy(
        flow: Flow) -> None:
    v1 = live(flow, "v1.0-green")
    live(flow, "v2.0-blue")
    v3 = flow.release("v3.0-green")
    # the job's cluster snapshot, then its sanity check, read the routes: both slowly
    flow.fault(path="/virtualservices/myapp-blue-green$", method="GET", latency=1.5, count=2)
    abort_while_running(flow, v3, S.CHECKING)
    entry = flow.store.audit(v3)[-1]
    assert (flow.get(v3).state, entry.actor) == (S.ABORTED, "api:ops")
    assert entry.message == "aborted before it deployed; nothing of it was on the cluster"
    assert flow.get(v1).state is S.STANDBY  # its Deployment was never replaced
    assert routes_now(flow)["deployments"]["green"]["release"] == v1
    assert Queue("deploy", connection=flow.redis).count == 0  # the abort job was done here


def test_an_abort_asked_during_the_deploy_wins_over_auto_promote(
        make_flow: Callable[..., Flow]) -> None:
    flow = make_flow(auto_promote=True)
    v1 = flow.release("v1.0-green")
    flow.run_jobs()
    assert flow.get(v1).state is S.LIVE
    v2 = flow.release("v2.0-blue")
    flow.fault(path="/deployments/myapp-blue$", method="PATCH", latency=1.5, count=1)
    abort_while_running(flow, v2, S.DEPLOYING)
    assert flow.get(v2).state is S.ABORTED, [a.message for a in flow.store.audit(v2)]
    assert flow.store.audit(v2)[-1].actor == "api:ops"
    routes = routes_now(flow)
    assert (routes["default"], routes["test"], routes["deployments"]["blue"]) == (
        "green", None, None)
    assert flow.served_by() == flow.served_by(cookie=True) == "green v1.0"
    assert not [a for a in flow.store.audit(v2) if "refused" in a.message]


def test_routes_change_make_before_break(flow: Flow) -> None:
    """The DestinationRule is written before the VirtualService that needs its subsets."""
    live(flow, "v1.0-green")
    since = flow.last_request()
    v2 = flow.release("v2.0-blue")
    flow.run_jobs()
    flow.command("promote", v2)
    flow.run_jobs()
    writes = [r["path"].split("/")[-2] for r in flow.api_requests(since)
              if r["method"] == "PATCH" and "networking.istio.io" in r["path"]
              and "gateways" not in r["path"]]
    assert writes == ["destinationrules", "virtualservices"] * 2


def test_a_colour_redeployed_replaces_its_standby_release(flow: Flow) -> None:
    v1 = live(flow, "v1.0-green")
    v2 = live(flow, "v2.0-blue")
    assert flow.get(v1).state is S.STANDBY
    v3 = flow.release("v3.0-green")
    flow.run_jobs()
    assert flow.get(v1).state is S.DECOMMISSIONED
    assert flow.get(v3).state is S.AWAITING_PROMOTION and flow.get(v2).state is S.LIVE
