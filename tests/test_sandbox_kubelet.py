"""The sandbox kubelet and workload controllers, in-process on a Store.

Covers Deployments becoming ready with truthful status, pods as real processes
answering with their version and colour, template changes (RollingUpdate within
maxSurge/maxUnavailable, and Recreate creating the new ReplicaSet only once the old
pods are gone), a broken object next to good ones, scaling, restarts of killed and
crashing processes, never-ready and slow-ready images, deletion stopping processes,
and `stop()` leaving no process behind; then the same through `python -m sandbox
serve` with the official client (status as clients and watches see it, processes
checked by their PIDs).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import stop_sandbox
from kubernetes import client, config, watch
from sandbox_objects import (
    DEPLOYMENTS,
    PODS,
    REPLICASETS,
    deployment,
    pid_exists,
    pid_of,
    pods,
    rolled_out,
    status,
    store_unchecked,
    wait_for,
)

from sandbox import probes
from sandbox.controllers import WorkloadControllers
from sandbox.kubelet import Kubelet
from sandbox.pods import image_tag, pod_env
from sandbox.routing import is_pod_ready
from sandbox.store import Store


@pytest.mark.parametrize(("image", "tag"), [
    ("registry/acme/myapp:v2.0", "v2.0"), ("registry:5000/acme/myapp", "latest"),
    ("myapp", "latest"), ("registry:5000/acme/myapp:v1-crash@sha256:abc", "v1-crash"),
])
def test_image_tag_is_the_version(image: str, tag: str) -> None:
    assert image_tag(image) == tag


def test_pod_env_adds_the_sandbox_variables_over_the_containers() -> None:
    pod = {"metadata": {"name": "p-1", "namespace": "ns", "labels": {"color": "green"},
                        "annotations": {"sandbox.bluegreen.dev/port": "40001"}},
           "spec": {"containers": [{"image": "r/a:v9", "ports": [{"containerPort": 3000}],
                                    "env": [{"name": "PORT", "value": "3000"},
                                            {"name": "A", "value": 1},
                                            {"name": "S", "valueFrom": {"secretKeyRef": {}}},
                                            {"name": "C", "valueFrom": {"fieldRef": {
                                                "fieldPath": "metadata.labels['color']"}}}]}]}}
    env = pod_env(pod)
    assert {k: env[k] for k in ("PORT", "A", "C", "SANDBOX_VERSION", "SANDBOX_COLOR",
                                "SANDBOX_POD", "SANDBOX_CONTAINER_PORT")} == {
        "PORT": "40001", "A": "1", "C": "green", "SANDBOX_VERSION": "v9",
        "SANDBOX_COLOR": "green", "SANDBOX_POD": "p-1", "SANDBOX_CONTAINER_PORT": "3000"}
    assert "S" not in env  # Secret references are not resolved


def test_probe_ports_map_to_the_real_port_only_when_they_name_the_container() -> None:
    container = {"ports": [{"containerPort": 3000, "name": "http"}],
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": 3000},
                                    "initialDelaySeconds": 5, "periodSeconds": 10,
                                    "failureThreshold": 2}}
    probe = probes.from_container(container, 41000)
    assert (probe.kind, probe.port, probe.path, probe.failure_threshold) == (
        "http", 41000, "/ready", 2)
    assert (probe.initial_delay, probe.period) == (0.5, 0.5)  # scaled down, clamped
    container["readinessProbe"]["httpGet"]["port"] = "http"
    assert probes.from_container(container, 41000).port == 41000
    container["readinessProbe"]["httpGet"]["port"] = 8080
    assert probes.from_container(container, 41000).port is None  # nothing listens there
    assert probes.from_container({}, 41000).kind == "listen"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Store, Kubelet]]:
    store = Store()
    store.create("v1/namespaces", None, {"metadata": {"name": "default"}})
    kubelet = Kubelet(store, tmp_path)
    kubelet.start()
    yield store, kubelet
    kubelet.stop()
    store.close()
    assert kubelet.pids() == {}


def get_json(pod: dict[str, Any], path: str = "/") -> Any:
    port = pod["metadata"]["annotations"]["sandbox.bluegreen.dev/port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def test_deployment_becomes_ready_with_truthful_status(cluster: tuple[Store, Kubelet]) -> None:
    store, _ = cluster
    store.create(DEPLOYMENTS, "default", deployment(replicas=2))
    wait_for(lambda: rolled_out(store, replicas=2), what="rollout")
    st = status(store)
    assert st["observedGeneration"] == 1
    assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"],
            st["availableReplicas"]) == (2, 2, 2, 2)
    assert st.get("unavailableReplicas", 0) == 0
    conditions = {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}
    assert conditions == {"Available": ("True", "MinimumReplicasAvailable"),
                          "Progressing": ("True", "NewReplicaSetAvailable")}
    [rs] = store.list(REPLICASETS, "default")[0]
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"myapp-blue-{pod_hash}"
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    for pod in pods(store):
        assert pod["metadata"]["name"].startswith(f"myapp-blue-{pod_hash}-")
        assert pod["metadata"]["labels"]["pod-template-hash"] == pod_hash
        assert pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
        assert pod["status"]["podIP"] == "127.0.0.1"
        assert pod["status"]["phase"] == "Running"
        [container] = pod["status"]["containerStatuses"]
        assert container["ready"] is True
        assert container["image"] == "registry/acme/myapp:v1.0"


def test_pods_are_processes_answering_with_their_identity(cluster: tuple[Store, Kubelet]) -> None:
    store, kubelet = cluster
    env = [{"name": "DB_HOST", "value": "db.internal"},
           {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    store.create(DEPLOYMENTS, "default", deployment(color="green", image="r/acme/myapp:v2.0",
                                                    env=env))
    wait_for(lambda: rolled_out(store), what="rollout")
    [pod] = pods(store)
    name = pod["metadata"]["name"]
    assert get_json(pod) == {"version": "v2.0", "color": "green", "pod": name}
    assert get_json(pod, "/ready") == {"ready": True}
    assert kubelet.pids() == {f"default/{name}": pid_of(pod)}
    environ = Path(f"/proc/{pid_of(pod)}/environ")
    if environ.exists():
        variables = dict(item.split("=", 1) for item in
                         environ.read_text().split("\0") if "=" in item)
        port = pod["metadata"]["annotations"]["sandbox.bluegreen.dev/port"]
        assert variables["DB_HOST"] == "db.internal"
        assert variables["MY_POD"] == name
        assert (variables["PORT"], variables["SANDBOX_CONTAINER_PORT"]) == (port, "3000")
        assert (variables["SANDBOX_VERSION"], variables["SANDBOX_COLOR"]) == ("v2.0", "green")


def change_image(store: Store, image: str, name: str = "myapp-blue") -> None:
    obj = store.get(DEPLOYMENTS, "default", name)
    assert obj is not None
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = image
    store.update(DEPLOYMENTS, "default", obj)


def test_template_change_replaces_pods_with_a_new_replicaset(
        cluster: tuple[Store, Kubelet]) -> None:
    store, _ = cluster
    store.create(DEPLOYMENTS, "default", deployment(replicas=2))
    wait_for(lambda: rolled_out(store, replicas=2), what="first rollout")
    old_pids = {pid_of(p) for p in pods(store)}
    change_image(store, "registry/acme/myapp:v2.0")
    assert not rolled_out(store, replicas=2)  # generation moved on: not observed yet
    wait_for(lambda: rolled_out(store, replicas=2), what="second rollout")
    assert status(store)["observedGeneration"] == 2
    assert {get_json(p)["version"] for p in pods(store)} == {"v2.0"}
    replicasets = {rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]:
                   rs["spec"]["replicas"] for rs in store.list(REPLICASETS, "default")[0]}
    assert replicasets == {"1": 0, "2": 2}
    wait_for(lambda: not any(pid_exists(pid) for pid in old_pids), what="old processes gone")


def test_rolling_update_keeps_within_max_surge_and_max_unavailable(
        cluster: tuple[Store, Kubelet]) -> None:
    store, _ = cluster
    body = deployment(replicas=2)
    body["spec"]["strategy"] = {"type": "RollingUpdate",
                                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    store.create(DEPLOYMENTS, "default", body)
    wait_for(lambda: rolled_out(store, replicas=2), what="first rollout")
    change_image(store, "registry/acme/myapp:v2.0")
    seen = []
    deadline = time.monotonic() + 15
    while not rolled_out(store, replicas=2) and time.monotonic() < deadline:
        live = pods(store)
        st = status(store)
        seen.append((len(live), sum(1 for p in live if is_pod_ready(p)),
                     st.get("replicas", 0), st.get("updatedReplicas", 0)))
        time.sleep(0.02)
    assert rolled_out(store, replicas=2)
    assert max(total for total, _, _, _ in seen) <= 3, "replicas + maxSurge pods at most"
    assert min(ready for _, ready, _, _ in seen) >= 2, "replicas - maxUnavailable stay ready"
    assert any(counted > updated for _, _, counted, updated in seen), (
        "status.replicas counts the old pods while new ones come up")
    assert {get_json(p)["version"] for p in pods(store)} == {"v2.0"}


def test_recreate_stops_old_pods_before_starting_new_ones(
        cluster: tuple[Store, Kubelet]) -> None:
    store, kubelet = cluster
    store.create(DEPLOYMENTS, "default", deployment(replicas=2, strategy="Recreate"))
    wait_for(lambda: rolled_out(store, replicas=2), what="first rollout")
    old = set(kubelet.pids())
    since = store.resource_version
    rs_events = store.watch(REPLICASETS, "default", since_rv=since)
    pod_events = store.watch(PODS, "default", since_rv=since)
    change_image(store, "registry/acme/myapp:v2.0")
    overlap = []
    deadline = time.monotonic() + 8
    while not rolled_out(store, replicas=2) and time.monotonic() < deadline:
        running = set(kubelet.pids())
        if running & old and running - old:
            overlap.append(running)
        time.sleep(0.02)
    assert rolled_out(store, replicas=2)
    assert overlap == []
    created = [int(obj["metadata"]["resourceVersion"])
               for kind, obj in iter(lambda: rs_events.next(timeout=0), None) if kind == "ADDED"]
    deleted = [int(obj["metadata"]["resourceVersion"])
               for kind, obj in iter(lambda: pod_events.next(timeout=0), None)
               if kind == "DELETED"]
    rs_events.close()
    pod_events.close()
    assert len(created) == 1 and len(deleted) == 2
    assert max(deleted) < created[0], "the new ReplicaSet comes only once the old pods are gone"
    assert {get_json(p)["version"] for p in pods(store)} == {"v2.0"}


def test_scaling_up_and_down(cluster: tuple[Store, Kubelet]) -> None:
    store, kubelet = cluster
    store.create(DEPLOYMENTS, "default", deployment(replicas=1))
    wait_for(lambda: rolled_out(store, replicas=1), what="rollout")
    for replicas in (3, 1):
        obj = store.get(DEPLOYMENTS, "default", "myapp-blue")
        assert obj is not None
        obj["spec"]["replicas"] = replicas
        store.update(DEPLOYMENTS, "default", obj)
        wait_for(lambda n=replicas: rolled_out(store, replicas=n)  # type: ignore[misc]
                 and len(kubelet.pids()) == n, what=f"{replicas} replicas")
    assert len(store.list(REPLICASETS, "default")[0]) == 1


def test_null_replicas_is_defaulted_and_a_broken_object_stops_no_other(
        cluster: tuple[Store, Kubelet]) -> None:
    store, kubelet = cluster
    broken = deployment(name="aaa-broken")
    broken["spec"]["replicas"] = "two"  # stored past validation: the controller chokes on it
    store_unchecked(store, DEPLOYMENTS, "default", broken)
    defaulted = deployment()
    defaulted["spec"]["replicas"] = None  # JSON null: unset, so defaulted to 1
    store.create(DEPLOYMENTS, "default", defaulted)
    wait_for(lambda: rolled_out(store, replicas=1), what="rollout next to a broken Deployment")
    assert len(kubelet.pids()) == 1


def test_a_broken_object_is_logged_once_per_version_and_forgotten_once_gone(
        caplog: pytest.LogCaptureFixture) -> None:
    store = Store()
    store.create("v1/namespaces", None, {"metadata": {"name": "default"}})
    controllers = WorkloadControllers(store, set)
    broken = deployment(name="broken")
    broken["spec"]["replicas"] = "two"
    store_unchecked(store, DEPLOYMENTS, "default", broken)
    with caplog.at_level(logging.ERROR, logger="sandbox.controllers"):
        for _ in range(3):
            controllers.sync()
    logged = [r.getMessage() for r in caplog.records]
    assert logged and len(logged) == len(set(logged)), "each failing step once, not per pass"
    changed = store.get(DEPLOYMENTS, "default", "broken")
    assert changed is not None
    changed["metadata"]["labels"] = {"version": "2"}
    store.update(DEPLOYMENTS, "default", changed)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="sandbox.controllers"):
        for _ in range(3):
            controllers.sync()
    assert [r.getMessage() for r in caplog.records] == logged, "once again for a new version"
    store.delete(DEPLOYMENTS, "default", "broken")
    controllers.sync()
    assert controllers._failed == {}, "nothing kept about an object that is gone"
    store.close()


def test_a_killed_process_is_restarted_in_the_same_pod(cluster: tuple[Store, Kubelet]) -> None:
    store, _ = cluster
    store.create(DEPLOYMENTS, "default", deployment())
    wait_for(lambda: rolled_out(store), what="rollout")
    [pod] = pods(store)
    os.kill(pid_of(pod), signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        [now] = pods(store)
        ready = now["status"]["containerStatuses"][0]
        return now if ready["restartCount"] == 1 and ready["ready"] else None

    again = wait_for(restarted, what="restart")
    assert again["metadata"]["name"] == pod["metadata"]["name"]
    assert pid_of(again) != pid_of(pod)
    last = again["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 137
    assert get_json(again)["pod"] == pod["metadata"]["name"]
    wait_for(lambda: rolled_out(store), what="ready again")


def test_crashing_image_loops_with_backoff(cluster: tuple[Store, Kubelet]) -> None:
    store, _ = cluster
    store.create(DEPLOYMENTS, "default", deployment(image="registry/acme/myapp:v1-crash"))

    def crash_looping() -> bool:
        found = pods(store)
        statuses = found[0]["status"].get("containerStatuses") if found else None
        return bool(statuses) and statuses[0]["restartCount"] >= 2
    wait_for(crash_looping, what="restarts")
    [pod] = pods(store)
    container = pod["status"]["containerStatuses"][0]
    assert container["ready"] is False
    assert container["lastState"]["terminated"]["exitCode"] == 1
    st = status(store)
    assert st.get("availableReplicas", 0) == 0
    assert st["unavailableReplicas"] == 1


def test_never_ready_image_stays_unready_past_its_deadline(
        cluster: tuple[Store, Kubelet]) -> None:
    store, kubelet = cluster
    stuck = deployment(image="registry/acme/myapp:v3-never-ready")
    stuck["spec"]["progressDeadlineSeconds"] = 1
    store.create(DEPLOYMENTS, "default", stuck)
    wait_for(lambda: kubelet.pids(), what="process")

    def progressing() -> tuple[str, str]:
        found = {c["type"]: c for c in status(store).get("conditions", [])}.get("Progressing")
        return (found["status"], found["reason"]) if found else ("", "")
    assert progressing() == ("True", "ReplicaSetUpdated")
    wait_for(lambda: progressing() == ("False", "ProgressDeadlineExceeded"), timeout=5,
             what="the progress deadline")
    [pod] = pods(store)
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"]
    assert ready == "False"
    assert pod["status"]["phase"] == "Running"
    st = status(store)
    assert st.get("readyReplicas", 0) == 0
    assert {c["type"]: c["status"] for c in st["conditions"]}["Available"] == "False"
    assert not rolled_out(store)


def test_slow_ready_image_becomes_ready_after_a_few_seconds(
        cluster: tuple[Store, Kubelet]) -> None:
    store, kubelet = cluster
    store.create(DEPLOYMENTS, "default", deployment(image="registry/acme/myapp:v4-slow-ready"))
    started = time.monotonic()
    wait_for(lambda: kubelet.pids(), what="process")
    time.sleep(1.0)
    assert not rolled_out(store)
    wait_for(lambda: rolled_out(store), timeout=6, what="slow readiness")
    assert 2.5 < time.monotonic() - started < 5.5


def test_deleting_the_deployment_stops_its_processes(cluster: tuple[Store, Kubelet]) -> None:
    store, kubelet = cluster
    store.create(DEPLOYMENTS, "default", deployment(replicas=2))
    wait_for(lambda: rolled_out(store, replicas=2), what="rollout")
    pids = set(kubelet.pids().values())
    assert len(pids) == 2 and all(pid_exists(p) for p in pids)
    store.delete(DEPLOYMENTS, "default", "myapp-blue")
    wait_for(lambda: not any(pid_exists(p) for p in pids), what="processes gone")
    assert kubelet.pids() == {}
    assert pods(store) == []


def test_stop_terminates_every_process(tmp_path: Path) -> None:
    store = Store()
    store.create("v1/namespaces", None, {"metadata": {"name": "default"}})
    kubelet = Kubelet(store, tmp_path)
    kubelet.start()
    store.create(DEPLOYMENTS, "default", deployment(replicas=2))
    store.create(DEPLOYMENTS, "default", deployment(name="crashy", image="x:crash"))
    pids = wait_for(lambda: len(kubelet.pids()) >= 2 and set(kubelet.pids().values()),
                    what="processes")
    kubelet.stop()
    assert not any(pid_exists(p) for p in pids)
    assert kubelet.pids() == {}


# ---- through the API server, with the official client ------------------------------------


def client_rolled_out(apps: client.AppsV1Api, name: str, replicas: int) -> bool:
    obj = apps.read_namespaced_deployment(name, "default")
    st = obj.status
    return bool((st.observed_generation or 0) >= obj.metadata.generation
                and (st.updated_replicas or 0) == (st.available_replicas or 0) == replicas
                and (st.replicas or 0) == replicas)


def answers(pod: Any) -> dict[str, Any]:
    port = pod.metadata.annotations["sandbox.bluegreen.dev/port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def client_pid(pod: Any) -> int:
    return int(pod.status.container_statuses[0].container_id.removeprefix("sandbox://"))


def test_through_the_api_a_deployment_rolls_out_is_replaced_and_goes_away(
        sandbox: Any) -> None:
    api_client = config.new_client_from_config(sandbox.kubeconfig)
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    created = apps.create_namespaced_deployment("default", deployment(replicas=2))
    events = watch.Watch().stream(apps.list_namespaced_deployment, "default",
                                  resource_version=created.metadata.resource_version,
                                  timeout_seconds=10)
    seen = []
    for event in events:
        seen.append((event["type"], int(event["object"].metadata.resource_version)))
        if (event["object"].status.available_replicas or 0) == 2:
            break
    assert seen and {kind for kind, _ in seen} == {"MODIFIED"}
    assert [rv for _, rv in seen] == sorted(rv for _, rv in seen)
    wait_for(lambda: client_rolled_out(apps, "myapp-blue", 2), what="rollout")
    st = apps.read_namespaced_deployment("myapp-blue", "default").status
    assert (st.observed_generation, st.replicas, st.ready_replicas) == (1, 2, 2)
    assert {c.type: c.status for c in st.conditions} == {"Available": "True",
                                                         "Progressing": "True"}
    first = core.list_namespaced_pod("default").items
    assert {answers(p)["version"] for p in first} == {"v1.0"}

    apps.patch_namespaced_deployment("myapp-blue", "default", {"spec": {"template": {"spec": {
        "containers": [{"name": "myapp", "image": "registry/acme/myapp:v2.0"}]}}}})
    wait_for(lambda: client_rolled_out(apps, "myapp-blue", 2), what="second rollout")
    second = core.list_namespaced_pod("default").items
    assert {answers(p)["version"] for p in second} == {"v2.0"}
    assert not {p.metadata.name for p in first} & {p.metadata.name for p in second}
    wait_for(lambda: not any(pid_exists(client_pid(p)) for p in first), what="old PIDs gone")
    revisions = {rs.metadata.annotations["deployment.kubernetes.io/revision"]: rs.spec.replicas
                 for rs in apps.list_namespaced_replica_set("default").items}
    assert revisions == {"1": 0, "2": 2}

    victim = second[0]
    os.kill(client_pid(victim), signal.SIGKILL)
    wait_for(lambda: core.read_namespaced_pod(victim.metadata.name, "default")
             .status.container_statuses[0].restart_count == 1, what="restart")
    wait_for(lambda: client_rolled_out(apps, "myapp-blue", 2), what="ready again")
    pids = [client_pid(p) for p in core.list_namespaced_pod("default").items]
    assert client_pid(victim) not in pids

    apps.delete_namespaced_deployment("myapp-blue", "default")
    wait_for(lambda: not any(pid_exists(p) for p in pids), what="PIDs gone")
    assert core.list_namespaced_pod("default").items == []
    api_client.close()


def test_through_the_api_a_never_ready_image_stays_unready(sandbox: Any) -> None:
    api_client = config.new_client_from_config(sandbox.kubeconfig)
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    apps.create_namespaced_deployment("default", deployment(
        image="registry/acme/myapp:v3-never-ready"))
    wait_for(lambda: any(p.status.phase == "Running"
                         for p in core.list_namespaced_pod("default").items), what="running")
    time.sleep(1.5)
    [pod] = core.list_namespaced_pod("default").items
    assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "False"
    assert pid_exists(client_pid(pod))
    st = apps.read_namespaced_deployment("myapp-blue", "default").status
    assert (st.ready_replicas, st.available_replicas, st.unavailable_replicas) == (None, None, 1)
    assert {c.type: c.status for c in st.conditions}["Available"] == "False"
    api_client.close()
    stop_sandbox(sandbox)
    assert not pid_exists(client_pid(pod))  # stopping the sandbox stops its pods
