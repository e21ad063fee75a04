"""The whole product on the sandbox, and the clocks a benchmark reads it by.

`Product` starts Redis, the sandbox cluster, the web process and `bluegreen worker`
(via `stack`) and drives them as forges and operators do: signed tag pushes, operator
commands, release reads. The clocks, all on this machine's wall clock (`time.time()`,
which every process here shares):

- the release's audit trail (`at` of each entry, written by the web or the worker);
- rq's job hash (`enqueued_at`, `started_at`, `ended_at`) read from Redis;
- the sandbox's API request log (`GET /sandbox/requests`: each request's completion
  time, method, path and user agent, which names the release and action);
- `IngressWatch`: what the ingress serves to default traffic, polled every ~2 ms;
- `DeploymentWatch`: a watch on Deployments, noting when each one first reports its
  rollout complete (as `kubectl rollout status` judges it).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import redis as redis_lib
import stack
from stack import Cluster, Processes

NAMESPACE = "default"
TERMINAL = frozenset({"rejected", "failed", "superseded", "aborted", "rolled_back",
                      "decommissioned"})  # as tests/e2e/stack.py: not waited past


def app_config(repository: str = "acme/myapp", **overrides: Any) -> dict[str, Any]:
    """An app on sandbox images, with timeouts that fail fast if something is wrong."""
    return {"repository": repository, "image": "sandbox.local/app:$VERSION",
            "rollout_timeout": 60, "smoke_timeout": 20, "hook_timeout": 20, **overrides}


class Product:
    """Redis, the sandbox, web and worker(s), started in `procs`."""

    def __init__(self, procs: Processes, apps: Mapping[str, Mapping[str, Any]], *,
                 web_workers: int | None = None) -> None:
        self.procs, self.apps, self.web_workers = procs, apps, web_workers
        self._commits = 0

    def start(self, *, worker: bool = True) -> Product:
        self.redis_url = stack.start_redis(self.procs)
        self.redis = redis_lib.Redis.from_url(self.redis_url)
        self.cluster: Cluster = stack.start_sandbox(self.procs)
        self.config = stack.write_config(self.procs, self.apps)
        self.env = stack.product_env(self.redis_url, self.config, self.cluster)
        self.web = stack.start_web(self.procs, self.env, workers=self.web_workers)
        if worker:
            self.start_worker()
        return self

    def start_worker(self, *, queues: tuple[str, ...] = (), name: str = "worker") -> None:
        stack.start_worker(self.procs, self.env, queues=queues, name=name)
        stack.wait_until(f"{name} to listen", lambda: stack.worker_ready(self.procs, name), 60)

    # -- forges and operators ----------------------------------------------------------------

    def push(self, tag: str, *, repository: str = "acme/myapp") -> tuple[str, float]:
        """A signed tag push; the release it queued and when the answer came."""
        self._commits += 1
        commit = f"{int(time.time() * 1000):024x}{self._commits:016x}"
        answer = stack.push(self.web, tag, commit=commit, delivery=f"bench-{tag}-{commit}",
                            repository=repository)
        answered = time.time()
        if answer.status != 202:
            raise RuntimeError(f"push {tag}: {answer.status} {answer.body[:300]!r}")
        return str(answer.json["releases"][0]["id"]), answered

    def command(self, app: str, action: str, release_id: str) -> dict[str, Any]:
        answer = stack.command(self.web, app, action, release_id)
        if answer.status != 202:
            raise RuntimeError(f"{action} {release_id}: {answer.status} {answer.body[:300]!r}")
        body: dict[str, Any] = answer.json
        return body

    def record(self, release_id: str) -> dict[str, Any]:
        return stack.release(self.web, release_id)

    def wait_state(self, release_id: str, *states: str, timeout: float = 120) -> dict[str, Any]:
        """The release record (with audit) once it is in one of `states`."""
        def reached() -> dict[str, Any] | None:
            record = self.record(release_id)
            state = record["release"]["state"]
            if state in TERMINAL and state not in states:
                story = " | ".join(f"{a['step']}: {a['message']}" for a in record["audit"])
                raise RuntimeError(f"{release_id} ended {state}: {story}")
            return record if state in states else None

        found: dict[str, Any] = stack.wait_until(f"{release_id} to be {'/'.join(states)}",
                                                 reached, timeout, 0.02)
        return found

    def deploy(self, tag: str) -> str:
        """Push `tag` and wait until its release awaits promotion."""
        release_id, _ = self.push(tag)
        self.wait_state(release_id, "awaiting_promotion")
        return release_id

    # -- clocks ------------------------------------------------------------------------------

    def api_requests(self, since: int = 0) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = stack.http(
            "GET", f"{self.cluster.api}/sandbox/requests?since={since}").json
        return found

    def last_seq(self) -> int:
        log = self.api_requests()
        return int(log[-1]["seq"]) if log else 0

    def job_times(self, job_id: str) -> dict[str, float | None]:
        raw = self.redis.hmget(f"rq:job:{job_id}", ["enqueued_at", "started_at", "ended_at"])
        return dict(zip(("enqueued", "started", "ended"), (_rq_time(v) for v in raw),
                        strict=True))


def _rq_time(value: bytes | None) -> float | None:
    if not value:
        return None
    text = value.decode().rstrip("Z")
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def audit_at(record: Mapping[str, Any], *, state_to: str | None = None,
             step: str | None = None, contains: str | None = None,
             after: float = 0.0) -> float | None:
    """`at` of the last audit entry matching all the given conditions (after `after`)."""
    found = None
    for entry in record["audit"]:
        if entry["at"] < after:
            continue
        if state_to is not None and entry.get("state_to") != state_to:
            continue
        if step is not None and entry.get("step") != step:
            continue
        if contains is not None and contains not in entry.get("message", ""):
            continue
        found = float(entry["at"])
    return found


class IngressWatch:
    """Polls the ingress (default traffic, no test cookie) and notes when a colour answers."""

    def __init__(self, ingress: str, interval: float = 0.002) -> None:
        parts = urlsplit(ingress)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.interval = interval
        self._conn: http.client.HTTPConnection | None = None

    def color(self) -> str | None:
        for _ in range(2):  # a closed keep-alive connection is reopened once
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                self._conn.request("GET", "/")
                answer = self._conn.getresponse()
                body = answer.read()
                if answer.status != 200:
                    return None
                return str(json.loads(body).get("color"))
            except (OSError, http.client.HTTPException, ValueError):
                self.close()
        return None

    def wait_for(self, color: str, timeout: float = 30.0) -> float:
        """The time of the first answer from `color` (checked every `interval` s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.color() == color:
                return time.time()
            time.sleep(self.interval)
        raise TimeoutError(f"the ingress did not serve {color} within {timeout}s")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class DeploymentWatch:
    """Watches Deployments; `ready_at(name, release)` is when one first reported ready."""

    def __init__(self, api: str, namespace: str = NAMESPACE) -> None:
        parts = urlsplit(api)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        self.ready: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deployment-watch", daemon=True)

    def __enter__(self) -> DeploymentWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def ready_at(self, name: str, release_id: str, timeout: float = 30.0) -> float:
        found: float = stack.wait_until(f"{name} ({release_id}) to be ready",
                                        lambda: self.ready.get((name, release_id)), timeout)
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                conn.request("GET", f"{self.path}?watch=true&timeoutSeconds=30")
                answer = conn.getresponse()
                while not self._stop.is_set():
                    line = answer.readline()
                    if not line:
                        break
                    self._note(json.loads(line).get("object") or {}, time.time())
            except (OSError, http.client.HTTPException, ValueError):
                time.sleep(0.1)
            finally:
                with contextlib.suppress(OSError):
                    conn.close()

    def _note(self, obj: Mapping[str, Any], seen: float) -> None:
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, (
            obj.get("status") or {})
        replicas = int(spec.get("replicas", 1))
        is_ready = (int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
                    and all(int(status.get(k) or 0) == replicas for k in (
                        "updatedReplicas", "availableReplicas", "readyReplicas")))
        key = (str(meta.get("name")), str((meta.get("labels") or {}).get("release")))
        if is_ready and key not in self.ready:
            self.ready[key] = seen


def requests_of(log: list[dict[str, Any]], *marks: str) -> list[dict[str, Any]]:
    """The API requests whose user agent carries every one of `marks`."""
    return [r for r in log if all(m in (r.get("user_agent") or "") for m in marks)]
