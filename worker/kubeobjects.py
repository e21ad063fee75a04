"""What Kubernetes objects mean to bluegreen: our errors, Deployment facts, routes, paths.

Pure (no client, no I/O): `DeploymentInfo` read from a Deployment as the API returns it
(rollout completion as `kubectl rollout status` judges it), the default route's subset
as the seed reads it, REST paths, pod readiness, the exit code of an exec session's
Status frame, and the `KubeError` family. Talking to the API server is `worker.kube`'s,
which re-exports all of this.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.colors import Color

ISTIO_API = "networking.istio.io/v1"
COLOR_LABEL = "color"
RELEASE_LABEL = "release"


class KubeError(Exception):
    """A Kubernetes operation failed; the message says what, and what to check."""


class KubeNotFound(KubeError):
    """The object does not exist."""


class KubeConflict(KubeError):
    """The API server kept answering 409 Conflict."""


class KubeUnavailable(KubeError):
    """The API server could not be reached or kept failing (5xx, 429) after retries."""


class KubeTimeout(KubeError):
    """A wait (rollout, exec) ran out of time."""


@dataclass(frozen=True)
class DeploymentInfo:
    """What the steps need to know about one Deployment."""

    name: str
    color: Color | None
    release_id: str | None
    image: str | None
    replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    current_replicas: int  # status.replicas: the pods of every ReplicaSet, old ones too
    generation: int
    observed_generation: int
    labels: Mapping[str, str]
    progress_deadline_exceeded: bool = False

    @property
    def is_ready(self) -> bool:
        """Rollout complete, as `kubectl rollout status` judges it: the new ReplicaSet has
        every replica, all available (and ready), and no old pod is left (a rolling update
        counts the new ones complete while the last old ones still terminate)."""
        return (
            self.observed_generation >= self.generation
            and self.updated_replicas == self.replicas
            and self.current_replicas <= self.updated_replicas
            and self.available_replicas == self.replicas
            and self.ready_replicas == self.replicas
        )

    def summary(self) -> str:
        """A one-line account of the rollout for messages."""
        old = self.current_replicas - self.updated_replicas
        return (f"{self.ready_replicas}/{self.replicas} ready, {self.updated_replicas} updated, "
                f"{self.available_replicas} available, "
                + (f"{old} old pending termination, " if old > 0 else "")
                + f"generation {self.observed_generation}/{self.generation} observed")


@dataclass(frozen=True)
class ExecResult:
    """The outcome of a command run in a pod."""

    pod: str
    exit_code: int
    stdout: str
    stderr: str


def deployment_info(obj: Mapping[str, Any]) -> DeploymentInfo:
    """Read a Deployment object (as the API returns it) into a DeploymentInfo."""
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    labels = dict(meta.get("labels") or {})
    containers = spec.get("template", {}).get("spec", {}).get("containers") or [{}]
    color = labels.get(COLOR_LABEL)
    stalled = any(c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
                  for c in status.get("conditions") or [])
    return DeploymentInfo(
        name=str(meta.get("name", "")),
        color=Color(color) if color in {c.value for c in Color} else None,
        release_id=labels.get(RELEASE_LABEL),
        image=containers[0].get("image"),
        replicas=int(1 if spec.get("replicas") is None else spec["replicas"]),
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        current_replicas=int(status.get("replicas") or 0),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        labels=labels,
        progress_deadline_exceeded=stalled,
    )


@dataclass(frozen=True)
class DefaultTraffic:
    """Where a VirtualService's default route sends users."""

    live: Color | None  # the colour of its first destination that takes traffic
    subsets: frozenset[str]  # every subset it sends traffic to (a split by hand: several)

    def takes(self, color: Color) -> bool:
        """Whether users reach `color` by the default route (the safety checks ask this)."""
        return color.value in self.subsets


def default_route_subset(virtual_service: Mapping[str, Any]) -> str | None:
    """The subset of the default route: the last http route, when it has no `match`.

    As the seed reads it (`.spec.http[-1].route[0].destination.subset`), but passing over
    destinations that take no traffic (weight 0, beside others); a last route that matches
    on something (a test-only VirtualService) is not a default route.
    """
    taking = _taking_traffic(virtual_service)
    return taking[0] if taking else None


def default_traffic_subsets(virtual_service: Mapping[str, Any]) -> frozenset[str]:
    """Every subset the default route sends users to. A split made by hand (blue 90 /
    green 10) makes both colours live for the safety checks, though
    `default_route_subset` names only the first."""
    return frozenset(_taking_traffic(virtual_service))


def _taking_traffic(virtual_service: Mapping[str, Any]) -> list[str]:
    """The subsets of the default route's destinations that get traffic, in order: a lone
    destination takes all whatever its weight (Istio); beside others, any whose weight is
    not 0 (a missing weight counts as traffic, to be safe)."""
    routes = (virtual_service.get("spec") or {}).get("http") or []
    if not routes or routes[-1].get("match"):
        return []
    destinations = routes[-1].get("route") or []
    return [str(subset) for d in destinations
            if (subset := (d.get("destination") or {}).get("subset"))
            and (len(destinations) == 1 or d.get("weight") != 0)]


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """The REST path of a namespaced object (or collection when name is None)."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural(kind)}"
    return f"{path}/{name}" if name else path


def plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


def is_pod_ready(pod: Mapping[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or [])


def check_not_stalled(what: str, info: DeploymentInfo | None) -> None:
    if info is not None and info.progress_deadline_exceeded:
        raise KubeTimeout(f"{what}: the rollout exceeded its progress deadline ({info.summary()})")


def not_ready(what: str, info: DeploymentInfo | None, timeout: float) -> KubeTimeout:
    state = info.summary() if info else "it does not exist"
    return KubeTimeout(f"{what}: not ready after {timeout:g}s ({state}); check its pods' "
                       "readiness probe and events")


def exit_code(what: str, raw: str) -> int:
    """The exit code from the exec Status frame (channel 3)."""
    try:
        status = json.loads(raw) if raw else None
    except ValueError:
        status = None
    if not isinstance(status, dict):
        raise KubeError(f"{what}: the session ended without an exit status ({raw[:200]!r})")
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).isdigit():
            return int(cause["message"])
    raise KubeError(f"{what}: failed without an exit code: {status.get('message', raw[:200])}")
