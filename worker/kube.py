"""Kubernetes and Istio operations behind one door: the only module that imports `kubernetes`.

Owns the client (one `ApiClient` per `Cluster`, with our user agent so an API server's
request log can attribute requests to a release), server-side apply, the reads the
steps need (Deployments, VirtualService, DestinationRule, the ingress Service), the
rollout wait by watch, exec in a ready pod, deletes, and the retry policy: exponential
backoff with jitter on 5xx, 429 (honouring Retry-After) and connection errors, and on
409 Conflict where the operation is idempotent (server-side apply with force, reads and
deletes carry no resourceVersion, so trying again re-reads the object as it is now).
Every `ApiException` leaves this module as a `KubeError` saying what failed and why.

What the objects mean (DeploymentInfo, the default route, paths, the errors) is
`worker.kubeobjects`, re-exported here. What to apply, in which order, and when a state is
safe is left to `worker.steps`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import kubernetes.config
import kubernetes.stream
import kubernetes.watch
import urllib3
from kubernetes.client import ApiClient, AppsV1Api, Configuration, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from worker.colors import Color
from worker.kubeobjects import (
    COLOR_LABEL,
    ISTIO_API,
    RELEASE_LABEL,
    DefaultTraffic,
    DeploymentInfo,
    ExecResult,
    KubeConflict,
    KubeError,
    KubeNotFound,
    KubeTimeout,
    KubeUnavailable,
    check_not_stalled,
    default_route_subset,
    default_traffic_subsets,
    deployment_info,
    exit_code,
    is_pod_ready,
    not_ready,
    resource_path,
)

__all__ = ["COLOR_LABEL", "ISTIO_API", "RELEASE_LABEL", "Cluster", "DefaultTraffic",
           "DeploymentInfo", "ExecResult", "KubeConflict", "KubeError", "KubeNotFound",
           "KubeTimeout", "KubeUnavailable", "Manifest", "default_route_subset",
           "default_traffic_subsets", "deployment_info", "resource_path", "translate"]

log = logging.getLogger(__name__)

# The client's annotations are partial (config, watch and stream are untyped): seen as Any here,
# at the one door, so that the rest of the engine stays strictly typed. The client classes are
# imported by name on purpose: `kubernetes.client` loads them lazily on first use, and a lazy
# import in a forked rq work horse deadlocks if another thread of the parent held that module's
# import lock at fork time. Importing them here loads them before any worker forks.
config: Any = kubernetes.config
watch: Any = kubernetes.watch
stream: Any = kubernetes.stream.stream

Manifest = dict[str, Any]
T = TypeVar("T")

INGRESS_NAMESPACE = "istio-system"
INGRESS_SERVICE = "istio-ingressgateway"
RETRYABLE_STATUS = frozenset({0, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 10.0
_API_VERSIONS = {"Deployment": "apps/v1", "Service": "v1", "Pod": "v1"}  # else Istio's


def _status_message(e: ApiException) -> str:
    """The `message` of a v1 Status error body, else a short excerpt of the body."""
    try:
        body = json.loads(e.body or "")
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(e.body or e.reason or "no details").strip()[:300]


def translate(what: str, e: ApiException, attempts: int = 1) -> KubeError:
    """Turn an ApiException into one of our errors, with a message a person can act on."""
    status, detail = int(e.status or 0), _status_message(e)
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if status == 404:
        return KubeNotFound(f"{what}: not found (404): {detail}")
    if status == 409:
        return KubeConflict(f"{what}: the API server kept reporting a conflict (409){tries}: "
                            f"{detail}")
    if status in (401, 403):
        return KubeError(f"{what}: the API server denied access ({status}): {detail}; "
                         "check the kubeconfig or the service account's RBAC")
    if status in RETRYABLE_STATUS:
        answer = status or "no answer"
        return KubeUnavailable(f"{what}: the API server is unavailable ({answer}){tries}: {detail}")
    if status in (400, 422):
        return KubeError(f"{what}: the API server refused the change ({status}): {detail}")
    return KubeError(f"{what}: the API server answered {status}: {detail}")


def _retry_after(e: ApiException) -> float | None:
    value = (e.headers or {}).get("Retry-After")
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value))) if value is not None else None
    except (TypeError, ValueError):
        return None


def _configuration(kubeconfig: str | None) -> Configuration:
    """Client configuration from the kubeconfig file, else in-cluster, else ~/.kube/config."""
    configuration = Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration,
                                    persist_config=False)
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except ConfigException:
                config.load_kube_config(client_configuration=configuration, persist_config=False)
    except (ConfigException, OSError) as e:
        where = kubeconfig or "in-cluster service account or ~/.kube/config"
        raise KubeError(f"cannot load Kubernetes credentials from {where}: {e}") from e
    configuration.retries = False  # retries are ours: backoff, jitter, Retry-After
    return configuration


class Cluster:
    """One Kubernetes cluster, spoken to in our nouns. Not shared between threads."""

    def __init__(self, *, kubeconfig: str | None, user_agent: str = "bluegreen",
                 attempts: int = 6, backoff: float = 0.25, request_timeout: float = 30.0) -> None:
        self._api: Any = ApiClient(_configuration(kubeconfig))
        self._api.user_agent = user_agent
        self._apps = AppsV1Api(self._api)
        self._core = CoreV1Api(self._api)
        self._attempts, self._backoff, self._timeout = max(1, attempts), backoff, request_timeout

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

    def close(self) -> None:
        self._api.close()

    # -- the retry policy ------------------------------------------------------------------

    def _retrying(self, what: str, call: Callable[[], T], *, on_conflict: bool = True) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except ApiException as e:
                status = int(e.status or 0)
                if attempt >= self._attempts or not (
                        status in RETRYABLE_STATUS or (on_conflict and status == 409)):
                    raise translate(what, e, attempt) from e
                self._pause(what, attempt, f"answer {status or e.reason}", _retry_after(e))
            except (urllib3.exceptions.HTTPError, OSError) as e:
                if attempt >= self._attempts:
                    raise KubeUnavailable(f"{what}: cannot reach the API server at {self.host} "
                                          f"after {attempt} attempts: {e}") from e
                self._pause(what, attempt, f"connection error {e}", None)

    def _pause(self, what: str, attempt: int, why: str, retry_after: float | None) -> None:
        ceiling = min(8.0, self._backoff * 2 ** (attempt - 1))
        delay = retry_after if retry_after is not None else random.uniform(ceiling / 2, ceiling)  # noqa: S311
        log.warning("%s: %s; retrying in %.2fs (attempt %d of %d)",
                    what, why, delay, attempt + 1, self._attempts)
        time.sleep(delay)

    def _request(self, method: str, path: str, *, query: list[tuple[str, Any]] | None = None,
                 body: Any = None, content_type: str | None = None,
                 timeout: float | None = None) -> Any:
        """One HTTP request through the client's own transport; JSON answer or None."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        method, url, headers, body, post = self._api.param_serialize(
            method=method, resource_path=path, query_params=query or [],
            header_params=headers, body=body, auth_settings=["BearerToken"])
        response: Any = self._api.call_api(method, url, header_params=headers, body=body,
                                      post_params=post, _request_timeout=timeout or self._timeout)
        raw = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return json.loads(raw) if raw else None

    def _get(self, what: str, path: str) -> Manifest | None:
        try:
            result: Manifest = self._retrying(what, lambda: self._request("GET", path))
        except KubeNotFound:
            return None
        return result

    # -- objects ---------------------------------------------------------------------------

    def apply(self, *, manifest: Manifest, field_manager: str = "bluegreen") -> Manifest:
        """Server-side apply (force): the object ends as the manifest says; returns it."""
        meta = manifest.get("metadata") or {}
        kind, name = str(manifest.get("kind", "")), str(meta.get("name", ""))
        namespace = str(meta.get("namespace") or "default")
        what = f"{kind} {namespace}/{name}"
        if not kind or not name or not manifest.get("apiVersion"):
            raise KubeError(f"{what}: a manifest needs apiVersion, kind and metadata.name")
        path = resource_path(str(manifest["apiVersion"]), kind, namespace, name)
        query = [("fieldManager", field_manager), ("force", "true")]
        result: Manifest = self._retrying(what, lambda: self._request(
            "PATCH", path, query=query, body=manifest,
            content_type="application/apply-patch+yaml"))
        return result

    def get_virtual_service(self, *, namespace: str, name: str) -> Manifest | None:
        path = resource_path(ISTIO_API, "VirtualService", namespace, name)
        return self._get(f"VirtualService {namespace}/{name}", path)

    def get_destination_rule(self, *, namespace: str, name: str) -> Manifest | None:
        path = resource_path(ISTIO_API, "DestinationRule", namespace, name)
        return self._get(f"DestinationRule {namespace}/{name}", path)

    def live_color(self, *, namespace: str, name: str) -> Color | None:
        """The colour the VirtualService's default route sends users to; None when none."""
        return self.default_traffic(namespace=namespace, name=name).live

    def default_traffic(self, *, namespace: str, name: str) -> DefaultTraffic:
        """Where the VirtualService's default route sends users, from one read of it."""
        vs = self.get_virtual_service(namespace=namespace, name=name)
        subset = default_route_subset(vs) if vs else None
        taking = default_traffic_subsets(vs) if vs else frozenset()
        if subset is None:
            return DefaultTraffic(None, taking)
        try:
            return DefaultTraffic(Color(subset), taking)
        except ValueError:
            raise KubeError(f"VirtualService {namespace}/{name}: the default route goes to subset "
                            f"{subset!r}, which is neither blue nor green; fix the route by "
                            "hand before releasing") from None

    def get_deployment(self, *, namespace: str, name: str) -> DeploymentInfo | None:
        obj = self._get(f"Deployment {namespace}/{name}",
                        resource_path("apps/v1", "Deployment", namespace, name))
        return deployment_info(obj) if obj else None

    def list_deployments(self, *, namespace: str, selector: str) -> list[DeploymentInfo]:
        items = self._list(f"Deployments in {namespace} matching {selector!r}",
                           resource_path("apps/v1", "Deployment", namespace),
                           [("labelSelector", selector)])[0]
        return [deployment_info(obj) for obj in items]

    def _list(self, what: str, path: str,
              query: list[tuple[str, Any]]) -> tuple[list[Manifest], str | None]:
        """Items and the list's resourceVersion."""
        answer: Manifest = self._retrying(what, lambda: self._request("GET", path, query=query))
        version = (answer.get("metadata") or {}).get("resourceVersion")
        return list(answer.get("items") or []), version

    def delete(self, *, manifest_kind: str, namespace: str, name: str,
               api_version: str | None = None) -> bool:
        """Delete one object; False when it was already gone."""
        version = api_version or _API_VERSIONS.get(manifest_kind, ISTIO_API)
        path = resource_path(version, manifest_kind, namespace, name)
        try:
            self._retrying(f"{manifest_kind} {namespace}/{name}", lambda: self._request(
                "DELETE", path, query=[("propagationPolicy", "Background")]))
        except KubeNotFound:
            return False
        return True

    def delete_deployment(self, *, namespace: str, name: str) -> bool:
        return self.delete(manifest_kind="Deployment", namespace=namespace, name=name)

    def ingress_url(self) -> str | None:
        """The ingress gateway's URL, discovered as the seed does; None when not published."""
        svc = self._get(f"Service {INGRESS_NAMESPACE}/{INGRESS_SERVICE}",
                        resource_path("v1", "Service", INGRESS_NAMESPACE, INGRESS_SERVICE))
        if not svc:
            return None
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        host = (ingress[0].get("ip") or ingress[0].get("hostname")) if ingress else None
        ports = [p for p in (svc.get("spec") or {}).get("ports") or [] if p.get("name") == "http2"]
        if not host or not ports:
            return None
        return f"http://{host}:{ports[0]['port']}"

    # -- waiting and exec ------------------------------------------------------------------

    def wait_ready(self, *, namespace: str, name: str, timeout: float) -> DeploymentInfo:
        """Wait by watch until the rollout completes; KubeTimeout with the last status if not."""
        what = f"Deployment {namespace}/{name}"
        path = resource_path("apps/v1", "Deployment", namespace)
        deadline = time.monotonic() + timeout
        while True:
            items, version = self._list(what, path, [("fieldSelector", f"metadata.name={name}")])
            last = deployment_info(items[0]) if items else None
            while True:
                if last is not None and last.is_ready:
                    return last
                check_not_stalled(what, last)
                if time.monotonic() >= deadline:
                    raise not_ready(what, last, timeout)
                change = self._next_change(what, namespace, name, version, deadline)
                if change is None:
                    break  # the watch ended or broke: list again, then watch from there
                last, version = change

    def _next_change(self, what: str, namespace: str, name: str, version: str | None,
                     deadline: float) -> tuple[DeploymentInfo | None, str | None] | None:
        """The next state of the Deployment (None when deleted) seen by a watch, or None."""
        remaining = max(0.5, deadline - time.monotonic())
        kwargs: dict[str, Any] = {
            "namespace": namespace, "field_selector": f"metadata.name={name}",
            "timeout_seconds": max(1, int(remaining + 0.999)),
            "_request_timeout": remaining + 10, "deserialize": False}
        if version:
            kwargs["resource_version"] = version
        started, watcher = time.monotonic(), watch.Watch()
        try:
            for event in watcher.stream(self._apps.list_namespaced_deployment, **kwargs):
                obj = event.get("object") or {}
                seen = (obj.get("metadata") or {}).get("resourceVersion") or version
                if event.get("type") == "DELETED":
                    return None, seen
                if event.get("type") in ("ADDED", "MODIFIED"):
                    return deployment_info(obj), seen
        except ApiException as e:
            if int(e.status or 0) not in RETRYABLE_STATUS | {410}:
                raise translate(what, e) from e
            log.info("%s: watch ended (%s); listing again", what, e.status)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            log.info("%s: watch connection broke (%s); listing again", what, e)
        finally:
            watcher.stop()
        if time.monotonic() - started < 0.2:  # do not spin on a watch that ends at once
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return None

    def exec_in_pod(self, *, namespace: str, selector: str, command: list[str],
                    timeout: float) -> ExecResult:
        """Run a command in a ready pod matching selector (as `kubectl exec`); exit code kept."""
        pod = self._ready_pod(namespace, selector)
        what = f"exec {' '.join(command)!r} in pod {namespace}/{pod}"

        def open_session() -> Any:
            try:
                return stream(self._core.connect_get_namespaced_pod_exec, pod, namespace,
                              command=command, stdout=True, stderr=True, stdin=False, tty=False,
                              _preload_content=False)
            except ApiException as e:
                _status_from_handshake(e)
                raise

        session = self._retrying(what, open_session, on_conflict=False)
        try:
            session.run_forever(timeout=timeout)
            if session.is_open():
                raise KubeTimeout(f"{what}: still running after {timeout:g}s; gave up waiting")
            stdout, stderr = session.read_channel(1), session.read_channel(2)
            status = session.read_channel(3)
        finally:
            session.close()
        return ExecResult(pod=pod, exit_code=exit_code(what, status), stdout=stdout, stderr=stderr)

    def _ready_pod(self, namespace: str, selector: str) -> str:
        pods, _ = self._list(f"Pods in {namespace} matching {selector!r}",
                             resource_path("v1", "Pod", namespace), [("labelSelector", selector)])
        ready = sorted(str(p["metadata"]["name"]) for p in pods if is_pod_ready(p))
        if not ready:
            phases = ", ".join(f"{p['metadata']['name']} {(p.get('status') or {}).get('phase')}"
                               for p in pods) or "none at all"
            raise KubeNotFound(f"no ready pod in {namespace} matches {selector!r} ({phases})")
        return ready[0]




def _status_from_handshake(e: ApiException) -> None:
    """websocket errors arrive as status 0; recover the HTTP status of a refused upgrade."""
    reason = str(e.reason or "")
    marker = "Handshake status "
    if e.status == 0 and marker in reason:
        code = reason.split(marker, 1)[1][:3]
        if code.isdigit():
            e.status = int(code)
