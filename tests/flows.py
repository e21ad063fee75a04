"""Helpers for the release tests: a config file, tag pushes, workers, waiting, the sandbox's logs.

A `Flow` is one test's world: a real Redis, a sandbox cluster, a YAML config in a temp
dir (image `sandbox.local/myapp:$VERSION`, short timeouts) and the engine that records
and queues releases as the web side would. Jobs run either in-process through a burst
rq `SimpleWorker` (fast, for step-level tests) or in real `bluegreen worker` processes
(`Flow.start_worker`), where the process boundary matters.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis as redis_lib
import requests
import yaml
from conftest import ROOT, Sandbox
from procs import kill_tree, wait_until
from rq import Queue, SimpleWorker

from worker.api import Engine, Queued, TagEvent
from worker.colors import Color
from worker.config import Settings, load_settings
from worker.kube import Cluster
from worker.releases import Release, ReleaseState, ReleaseStore

BLUEGREEN = str(Path(sys.executable).parent / "bluegreen")
S = ReleaseState


def app_body(**overrides: Any) -> dict[str, Any]:
    """An app's config: the seed's defaults with sandbox images and short timeouts."""
    body: dict[str, Any] = {
        "repository": "acme/myapp", "image": "sandbox.local/myapp:$VERSION",
        "manifests": str(ROOT / "manifests"), "queue": "deploy", "rollout_timeout": 20,
        "smoke_timeout": 15, "hook_timeout": 15}
    body.update(overrides)
    return body


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Flow:
    """One test's world; see the module docstring."""

    def __init__(self, sandbox: Sandbox, redis: redis_lib.Redis, redis_url: str, tmp: Path,
                 apps: dict[str, dict[str, Any]] | None = None) -> None:
        self.sandbox, self.redis, self.redis_url, self.tmp = sandbox, redis, redis_url, tmp
        self.config = tmp / "bluegreen.yml"
        self.config.write_text(yaml.safe_dump({"apps": apps or {"myapp": app_body()}}))
        self.env = {"BLUEGREEN_CONFIG": str(self.config), "REDIS_URL": redis_url,
                    "KUBECONFIG": sandbox.kubeconfig, "BLUEGREEN_INGRESS_URL": sandbox.ingress,
                    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        self.settings: Settings = load_settings(self.env)
        self.engine = Engine(self.settings, redis)
        self.store = ReleaseStore(redis)
        self.workers: list[subprocess.Popen[str]] = []

    # -- the engine, as the web side uses it ---------------------------------------------------

    def tag(self, tag: str, *, repository: str = "acme/myapp") -> list[str]:
        """Push a tag; the ids of the releases it created (one per matching app)."""
        commit = hashlib.sha1(f"{repository} {tag}".encode()).hexdigest()
        event = TagEvent(forge="github", delivery_id=f"d-{tag}-{commit[-6:]}",
                         repository=repository, tag=tag, commit=commit, pusher="dev")
        return [s.release.id for s in self.engine.submit_tag(event)]

    def release(self, tag: str, **kwargs: Any) -> str:
        ids = self.tag(tag, **kwargs)
        assert len(ids) == 1, ids
        return ids[0]

    def command(self, action: str, release: str | None = None, *, app: str = "myapp",
                color: Color | None = None, actor: str = "api:tester") -> Queued:
        return self.engine.submit_command(app, action, release=release, color=color,
                                          actor=actor)

    def promoted(self, tag: str) -> str:
        """Release `tag`, run its jobs and promote it (asserted live); its release id."""
        release_id = self.release(tag)
        self.run_jobs()
        self.command("promote", release_id)
        self.run_jobs()
        assert self.get(release_id).state is ReleaseState.LIVE
        return release_id

    def get(self, release_id: str) -> Release:
        found = self.store.get(release_id)
        assert found is not None, release_id
        return found

    def wait(self, release_id: str, *states: ReleaseState, timeout: float = 60) -> Release:
        """Wait until the release is in one of `states`; fail with its audit trail if not."""
        try:
            wait_until(lambda: self.get(release_id).state in states, timeout,
                       f"{release_id} to be {'/'.join(s.value for s in states)}")
        except AssertionError as e:
            raise AssertionError(f"{e}; it is {self.get(release_id).state}; audit: "
                                 f"{[a.message for a in self.store.audit(release_id)]}") from e
        return self.get(release_id)

    # -- running jobs -------------------------------------------------------------------------

    def run_jobs(self, queue: str = "deploy") -> None:
        """Run every queued job in this process (a burst rq SimpleWorker), then return."""
        with environ(self.env):
            worker = SimpleWorker([Queue(queue, connection=self.redis)], connection=self.redis)
            worker.work(burst=True, logging_level="WARNING")

    def start_worker(self, *args: str) -> subprocess.Popen[str]:
        """A real `bluegreen worker` process (own process group, log in the temp dir)."""
        log = open(self.tmp / f"worker-{len(self.workers)}.log", "w")
        proc = subprocess.Popen([BLUEGREEN, "worker", *args], env={**os.environ, **self.env},
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen[str]) -> None:
        """SIGKILL the worker and its work horse, as a node or OOM kill would.

        rq's horse runs in a session of its own, so the process group is not enough.
        """
        kill_tree(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    # -- the cluster --------------------------------------------------------------------------

    def cluster(self, user_agent: str = "test") -> Cluster:
        return Cluster(kubeconfig=self.sandbox.kubeconfig, user_agent=user_agent)

    def api_requests(self, since: int = 0) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = requests.get(
            f"{self.sandbox.api}/sandbox/requests", params={"since": since}, timeout=5).json()
        return answer

    def last_request(self) -> int:
        log = self.api_requests()
        return int(log[-1]["seq"]) if log else 0

    def fault(self, **rule: Any) -> None:
        requests.post(f"{self.sandbox.api}/sandbox/faults", json=rule,
                      timeout=5).raise_for_status()

    def clear_faults(self) -> None:
        requests.delete(f"{self.sandbox.api}/sandbox/faults", timeout=5)

    def ingress(self, path: str = "/", *, cookie: bool = False) -> tuple[int, dict[str, Any]]:
        """GET through the ingress, with or without the test cookie."""
        request = urllib.request.Request(self.sandbox.ingress.rstrip("/") + path)
        if cookie:
            # as a browser sends it: the route-test regex allows the space after ';'
            request.add_header("Cookie", "session=1; test=true")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status), json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return int(e.code), json.loads(body or b"{}")
            except ValueError:
                return int(e.code), {"body": body.decode("utf-8", "replace")}

    def served_by(self, *, cookie: bool = False) -> str | None:
        """`colour version` of whoever answers GET / (None: no 200 answer)."""
        status, body = self.ingress("/", cookie=cookie)
        return f"{body.get('color')} {body.get('version')}" if status == 200 else None
