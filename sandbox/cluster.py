"""One sandbox cluster: a Store with the API server, kubelet and ingress around it.

Owns the wiring and lifecycle (start in dependency order, stop everything, pod
processes included), the objects a fresh cluster starts with (namespaces
`default`, `kube-system`, `istio-system` and the `istio-ingressgateway` Service
that names the ingress port, as the seed tutorial discovers it) and the
kubeconfig that points clients at it. Each part's behaviour lives in its module.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from sandbox.apiserver import ApiServer, ExecHandler
from sandbox.resources import ApiError
from sandbox.store import Store

log = logging.getLogger(__name__)

NAMESPACES = ("default", "kube-system", "istio-system")
INGRESS_NAMESPACE, INGRESS_SERVICE = "istio-system", "istio-ingressgateway"


class Cluster:
    """Start with `start()`, stop with `stop()`; URLs are known once started."""

    def __init__(self, workdir: Path, *, api_port: int = 0, ingress_port: int = 0,
                 kubelet: bool = True, ingress: bool = True) -> None:
        self.workdir = Path(workdir)
        self.store = Store()
        self._api_port, self._ingress_port = api_port, ingress_port
        self._want_kubelet, self._want_ingress = kubelet, ingress
        self.kubelet: Any = None
        self.ingress: Any = None
        self.api: ApiServer | None = None
        self.ingress_port = ingress_port

    @property
    def api_url(self) -> str:
        assert self.api is not None, "the cluster is not started"
        return self.api.url

    @property
    def ingress_url(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    def start(self) -> None:
        seed_namespaces(self.store)
        if self._want_ingress:
            from sandbox.ingress import Ingress

            self.ingress = Ingress(self.store, self._ingress_port)
            self.ingress_port = self.ingress.start()
        seed_ingress_service(self.store, self.ingress_port)
        if self._want_kubelet:
            from sandbox.kubelet import Kubelet

            self.workdir.mkdir(parents=True, exist_ok=True)
            self.kubelet = Kubelet(self.store, self.workdir)
            self.kubelet.start()
        self.api = ApiServer(self.store, port=self._api_port, exec_handler=_exec_handler())
        self.api.start()
        log.info("sandbox API at %s, ingress at %s", self.api_url, self.ingress_url)

    def stop(self) -> None:
        """Stop the API server, the ingress and the kubelet (every pod process)."""
        for part in (self.api, self.ingress, self.kubelet):
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    log.exception("stopping %r failed", part)
        self.store.close()

    def write_kubeconfig(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(kubeconfig(self.api_url), sort_keys=False))


def _exec_handler() -> ExecHandler | None:
    try:
        from sandbox.execws import serve_exec
    except ImportError:
        log.warning("sandbox.execws is missing: pod exec is unavailable")
        return None
    return serve_exec


def kubeconfig(server: str) -> dict[str, Any]:
    """A kubeconfig with one cluster, no credentials, and context `sandbox` selected."""
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": server}}],
        "users": [{"name": "sandbox", "user": {}}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox",
                                                     "namespace": "default"}}],
        "current-context": "sandbox",
        "preferences": {},
    }


def seed_namespaces(store: Store) -> None:
    for name in NAMESPACES:
        try:
            store.create("v1/namespaces", None, {"metadata": {"name": name}})
        except ApiError as e:
            if e.reason != "AlreadyExists":
                raise


def seed_ingress_service(store: Store, port: int) -> None:
    """The Service the product (and the seed's script) reads the ingress address from."""
    labels = {"app": "istio-ingressgateway", "istio": "ingressgateway"}
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": INGRESS_SERVICE, "namespace": INGRESS_NAMESPACE, "labels": labels},
        "spec": {"type": "LoadBalancer", "selector": labels, "ports": [
            {"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
            {"name": "http2", "port": port, "targetPort": 8080, "protocol": "TCP"},
        ]},
    }
    created = store.create("v1/services", INGRESS_NAMESPACE, service)
    created["status"] = {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}
    store.update("v1/services", INGRESS_NAMESPACE, created, subresource="status")
