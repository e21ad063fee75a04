"""Object factories and waiting helpers shared by the sandbox tests.

Kubernetes and Istio objects shaped like the seed's manifests (a colour's
Deployment with a `/ready` probe, Service `myapp`, Gateway, DestinationRule and the
cookie test route), plus `wait_for`, small readers of Store state, a way to
store an object the API would refuse, and `api_server`: an in-process API server
with its namespaces and nothing else (no kubelet).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sandbox.apiserver import ApiServer
from sandbox.cluster import seed_namespaces
from sandbox.store import Store, resource


@contextlib.contextmanager
def api_server(**store_options: Any) -> Iterator[tuple[str, Store]]:
    """An in-process API server over a new Store with its namespaces: (its URL, the store)."""
    store = Store(**store_options)
    seed_namespaces(store)
    server = ApiServer(store)
    server.start()
    try:
        yield server.url, store
    finally:
        server.stop()
        store.close()


DEPLOYMENTS, REPLICASETS, PODS = "apps/v1/deployments", "apps/v1/replicasets", "v1/pods"
ISTIO = "networking.istio.io/v1"
COOKIE_REGEX = "^(.*?;)?(test=true)(;.*)?$"


def wait_for(check: Callable[[], Any], timeout: float = 8.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pid_exists(pid: int) -> bool:
    """Whether a process runs with this pid (a zombie waiting to be reaped does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True  # no /proc here: trust kill(0)
    return state != "Z"


def deployment(name: str = "myapp-blue", color: str = "blue",
               image: str = "registry/acme/myapp:v1.0", replicas: int = 1,
               strategy: str = "RollingUpdate",
               env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    labels = {"app": "myapp", "color": color}
    container: dict[str, Any] = {
        "name": "myapp", "image": image, "ports": [{"containerPort": 3000, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                           "initialDelaySeconds": 1, "periodSeconds": 2},
        "env": env or []}
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "strategy": {"type": strategy},
                     "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [container]}}}}


def store_unchecked(store: Store, key: str, namespace: str, obj: dict[str, Any]) -> None:
    """Store an object past defaulting and validation, as data written by an older server
    (or straight into etcd) can be: what the controllers must survive."""
    rt = resource(key)
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace,
                               "uid": str(uuid.uuid4()), "generation": 1,
                               "creationTimestamp": "2024-01-01T00:00:00Z"}}
    with store._lock:
        store._commit(rt, "ADDED", obj, None)


def status(store: Store, name: str = "myapp-blue") -> dict[str, Any]:
    obj = store.get(DEPLOYMENTS, "default", name)
    assert obj is not None
    result: dict[str, Any] = obj.get("status") or {}
    return {**result, "generation": obj["metadata"]["generation"]}


def rolled_out(store: Store, name: str = "myapp-blue", replicas: int = 1) -> bool:
    """As `kubectl rollout status` decides."""
    st = status(store, name)
    return (st.get("observedGeneration", 0) >= st["generation"]
            and st.get("updatedReplicas", 0) == st.get("availableReplicas", 0) == replicas
            and st.get("replicas", 0) == replicas)


def pods(store: Store) -> list[dict[str, Any]]:
    return store.list(PODS, "default")[0]


def pid_of(pod: dict[str, Any]) -> int:
    return int(pod["status"]["containerStatuses"][0]["containerID"].removeprefix("sandbox://"))


def gateway() -> dict[str, Any]:
    return {"metadata": {"name": "myapp-gateway"},
            "spec": {"selector": {"istio": "ingressgateway"},
                     "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                                  "hosts": ["*"]}]}}


def service() -> dict[str, Any]:
    return {"metadata": {"name": "myapp"},
            "spec": {"selector": {"app": "myapp"},
                     "ports": [{"port": 3000, "targetPort": 3000, "name": "http"}]}}


def destination_rule(subsets: tuple[str, ...] = ("blue", "green")) -> dict[str, Any]:
    return {"metadata": {"name": "myapp-blue-green"},
            "spec": {"host": "myapp",
                     "subsets": [{"name": s, "labels": {"color": s}} for s in subsets]}}


def route_test_vs(active: str = "blue", test: str = "green") -> dict[str, Any]:
    """Like the seed's route-test.yml."""
    def to(subset: str) -> list[dict[str, Any]]:
        return [{"destination": {"host": "myapp", "subset": subset, "port": {"number": 3000}}}]
    return {"metadata": {"name": "myapp-blue-green"},
            "spec": {"hosts": ["*"], "gateways": ["myapp-gateway"],
                     "http": [{"match": [{"headers": {"cookie": {"regex": COOKIE_REGEX}}}],
                               "route": to(test)},
                              {"route": to(active)}]}}
