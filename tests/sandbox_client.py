"""The sandbox's API server in-process, with the official client: shared by the sandbox
API tests (`test_sandbox_api`, `test_sandbox_writes`, `test_sandbox_lists`).

`served_api(tmp_path)` serves a Store with its namespaces and no kubelet (so nothing
else writes while a test looks) and a short watch history, and yields an `Api` with
the typed client; plus object makers and `status_of`, which checks an error's Status.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from sandbox_objects import api_server

from sandbox.cluster import kubeconfig
from sandbox.store import Store

ISTIO = ("networking.istio.io", "v1")
DEPLOYMENTS_URL = "/apis/apps/v1/namespaces/default/deployments"
MERGE = "application/merge-patch+json"


@dataclass
class Api:
    url: str
    store: Store
    client: client.ApiClient

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.client)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.client)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.client)


@contextlib.contextmanager
def served_api(tmp_path: Path) -> Iterator[Api]:
    """An in-process API server (no kubelet, watch history of 20 events per resource),
    with a typed client configured from a kubeconfig, as a user's would be."""
    with api_server(history=20) as (url, store):
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(url)))
        api_client = config.new_client_from_config(config_file=str(path))
        try:
            yield Api(url, store, api_client)
        finally:
            api_client.close()


def deployment(name: str = "web", *, image: str = "app:v1", replicas: int = 1,
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"app": name, **(labels or {})}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                         {"name": "web", "image": image, "env": [{"name": "A", "value": "1"}],
                          "ports": [{"containerPort": 3000}]}]}}}}


def virtual_service(name: str = "myapp-blue-green", subset: str = "blue") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": {"hosts": ["*"], "gateways": ["myapp-gateway"],
                     "http": [{"route": [{"destination": {"host": "myapp", "subset": subset}}]}]}}


def status_of(e: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(e.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == e.status
    return body
