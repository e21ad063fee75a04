"""A monitor that watches a sandbox cluster from outside and records SPEC §5 violations.

Two background threads:

- the *poller* reads the Deployments, VirtualService and DestinationRule of one app about
  every 50 ms, taking only consistent snapshots (the sandbox's global resourceVersion did
  not move while it read), and checks what can be seen from outside:
  §5.4 the VirtualService references a subset the DestinationRule lacks;
  §5.2 the default route goes to a colour whose Deployment is not ready, or whose release
  label names a release that never passed its smoke tests (judged by `release_ok`);
  §5.3 the live colour's Deployment is gone;
  §5.1 the live colour's Deployment changed (new generation or release label) while live;
- the *load* thread sends steady default traffic (no test cookie) through the ingress,
  about 25 requests a second, and records every answer with the colour that served it;
  once a default route exists, any non-2xx answer is a violation.

Each kind of violation is recorded once, at its first occurrence, with what was seen.
Tests assert `monitor.violations == []`; `test_release_flow` shows that it can fail.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MONITOR_AGENT = "invariant-monitor"


@dataclass(frozen=True)
class Answer:
    """One default-traffic request: when, what status, which colour and version answered."""

    at: float
    status: int
    color: str | None
    version: str | None
    judged: bool  # a default route existed before the request started


@dataclass
class Snapshot:
    """What the poller saw at one moment."""

    at: float
    vs: dict[str, Any] | None
    dr: dict[str, Any] | None
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)  # by colour label

    def default_subset(self) -> str | None:
        routes = ((self.vs or {}).get("spec") or {}).get("http") or []
        if not routes or routes[-1].get("match"):
            return None
        return ((routes[-1].get("route") or [{}])[0].get("destination") or {}).get("subset")

    def referenced_subsets(self) -> set[str]:
        routes = ((self.vs or {}).get("spec") or {}).get("http") or []
        return {str((d.get("destination") or {}).get("subset"))
                for r in routes for d in r.get("route") or []
                if (d.get("destination") or {}).get("subset")}

    def dr_subsets(self) -> set[str]:
        subsets = ((self.dr or {}).get("spec") or {}).get("subsets") or []
        return {str(s.get("name")) for s in subsets}


def http_json(url: str, *, timeout: float = 2.0) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"User-Agent": MONITOR_AGENT,
                                                   "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return int(e.code), json.loads(body or b"null")
        except ValueError:
            return int(e.code), None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def is_deployment_ready(obj: dict[str, Any]) -> bool:
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    replicas = int(spec.get("replicas", 1))
    return (int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
            and all(int(status.get(k) or 0) == replicas
                    for k in ("updatedReplicas", "availableReplicas", "readyReplicas")))


class Monitor:
    """Watches one app's routing and traffic; see the module docstring."""

    def __init__(self, *, api: str, ingress: str, namespace: str = "default", app: str = "myapp",
                 release_ok: Callable[[str], bool] | None = None, traffic: bool = True,
                 rate: float = 25.0, poll: float = 0.05) -> None:
        self.api, self.ingress, self.namespace, self.app = api.rstrip("/"), ingress, namespace, app
        self.release_ok, self.traffic, self.rate, self.poll = release_ok, traffic, rate, poll
        self.violations: list[str] = []
        self.answers: list[Answer] = []
        self.snapshots = 0
        self._kinds: set[str] = set()
        self._live_since: float | None = None
        self._last: Snapshot | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Monitor:
        targets = [self._poll_loop] + ([self._load_loop] if self.traffic else [])
        self._threads = [threading.Thread(target=t, daemon=True, name=f"monitor-{t.__name__}")
                         for t in targets]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 5
        while self.snapshots == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests read ---------------------------------------------------------------------

    def answers_since(self, since: float, *, judged_only: bool = True) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.at >= since and (a.judged or not judged_only)]

    def wait_for_traffic(self, count: int = 10, timeout: float = 10.0) -> None:
        """Wait until `count` more default requests were answered."""
        start = len(self.answers)
        deadline = time.monotonic() + timeout
        while len(self.answers) < start + count and time.monotonic() < deadline:
            time.sleep(0.02)

    def violate(self, kind: str, detail: str) -> None:
        with self._lock:
            if kind not in self._kinds:
                self._kinds.add(kind)
                self.violations.append(f"{kind}: {detail}")

    # -- the poller --------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            snapshot = self.read_snapshot()
            if snapshot is not None:
                self.check(snapshot)
                self.snapshots += 1
            self._stop.wait(self.poll)

    def read_snapshot(self) -> Snapshot | None:
        """VS, DR and Deployments read while the cluster's resourceVersion stood still."""
        ns = self.namespace
        istio = f"{self.api}/apis/networking.istio.io/v1/namespaces/{ns}"
        deployments_url = (f"{self.api}/apis/apps/v1/namespaces/{ns}/deployments"
                           f"?labelSelector=app%3D{self.app}")
        for _ in range(5):
            status, before = http_json(deployments_url)
            vs_status, vs = http_json(f"{istio}/virtualservices/{self.app}-blue-green")
            dr_status, dr = http_json(f"{istio}/destinationrules/{self.app}-blue-green")
            status_after, after = http_json(deployments_url)
            if 0 in (status, vs_status, dr_status, status_after) or status != 200:
                return None
            version = before["metadata"].get("resourceVersion")
            if version == after["metadata"].get("resourceVersion"):
                deployments = {str((d["metadata"].get("labels") or {}).get("color")): d
                               for d in after.get("items") or []}
                return Snapshot(time.monotonic(), vs if vs_status == 200 else None,
                                dr if dr_status == 200 else None, deployments)
        return None

    def check(self, snap: Snapshot) -> None:
        previous, self._last = self._last, snap
        missing = snap.referenced_subsets() - snap.dr_subsets()
        if snap.vs is not None and missing:
            self.violate("5.4 subset missing", f"VirtualService routes to {sorted(missing)} but "
                         f"the DestinationRule has {sorted(snap.dr_subsets())}")
        live = snap.default_subset()
        if live is None:
            return
        if self._live_since is None:
            self._live_since = snap.at
        deployment = snap.deployments.get(live)
        if deployment is None:
            self.violate("5.3 live deployment missing",
                         f"default route → {live} but no Deployment carries color={live}")
            return
        labels = deployment["metadata"].get("labels") or {}
        release = labels.get("release")
        if not is_deployment_ready(deployment):
            self.violate("5.2 default to unready", f"default route → {live}, whose Deployment "
                         f"is not ready: {deployment.get('status')}")
        if self.release_ok is not None and (not release or not self.release_ok(str(release))):
            self.violate("5.2 default to unpromotable release",
                         f"default route → {live}, whose Deployment carries release {release!r}")
        self._check_live_unchanged(previous, snap, live)

    def _check_live_unchanged(self, previous: Snapshot | None, snap: Snapshot, live: str) -> None:
        if (previous is None or previous.default_subset() != live
                or live not in previous.deployments):
            return
        old, new = previous.deployments[live]["metadata"], snap.deployments[live]["metadata"]
        old_key = (old.get("generation"), (old.get("labels") or {}).get("release"))
        new_key = (new.get("generation"), (new.get("labels") or {}).get("release"))
        if old_key != new_key:
            self.violate("5.1 deploy into live colour", f"the live {live} Deployment changed "
                         f"from (generation, release) {old_key} to {new_key} while live")

    # -- the load ----------------------------------------------------------------------------

    def _load_loop(self) -> None:
        interval = 1.0 / self.rate
        while not self._stop.is_set():
            started = time.monotonic()
            judged = self._live_since is not None and self._live_since < started
            status, body = http_json(self.ingress.rstrip("/") + "/", timeout=5.0)
            body = body if isinstance(body, dict) else {}
            answer = Answer(started, status, body.get("color"), body.get("version"), judged)
            with self._lock:
                self.answers.append(answer)
            if judged and not 200 <= status <= 299:
                self.violate("default traffic failed", f"GET / answered {status or 'nothing'} "
                             f"({body or 'no JSON'}) while a default route existed")
            self._stop.wait(max(0.0, interval - (time.monotonic() - started)))
