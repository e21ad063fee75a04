"""The sandbox kubelet: runs every Pod in the Store as a local process.

`Kubelet(store, workdir)` reacts to Store changes (a subscription plus a resync
every 0.3 s). Each pass runs the workload controllers (`sandbox.controllers`:
Deployments → ReplicaSets → Pods, and their statuses), then makes the set of
running processes match the Pods: one `PodWorker` thread per Pod starts
`python -m sandbox.demoapp` (whatever the image: the image tag becomes the app's
version) on a free local port, probes readiness (`sandbox.probes`), restarts the
process when it exits (restartCount bumps, small exponential back-off: 0.2 s
doubling to 2 s; `restartPolicy` Never/OnFailure honoured) and reports it all in
the Pod's status (`sandbox.podstatus`) through the status subresource. A Pod that
leaves the Store, or is being deleted (finalizers keep it), has its process
terminated (SIGTERM, SIGKILL after 2 s); `stop()` ends them all.

What a pod looks like from outside:
- annotations `sandbox.bluegreen.dev/port` (the real port) and `sandbox.bluegreen.dev/dir`
  (its working directory, `<workdir>/pods/<ns>/<name>`, holding `container.log`);
- `status.podIP` / `hostIP` 127.0.0.1, `phase`, conditions PodScheduled, Initialized,
  ContainersReady, Ready; `containerStatuses[0]` with `ready`, `started`,
  `restartCount`, `image`, `state` / `lastState`, and `containerID`
  `sandbox://<pid>` (the process id, so tests can check it is gone).
- the process environment: see `sandbox.pods` (container env, SANDBOX_VERSION,
  SANDBOX_COLOR, SANDBOX_POD, PORT, SANDBOX_CONTAINER_PORT, ...).

Faults, chosen by the image tag (implemented by `sandbox.demoapp`): a tag
containing `crash` exits at once with status 1 (CrashLoopBackOff), `never-ready`
answers `/ready` 503 forever, `slow-ready` becomes ready after ~3 s.

Only the first container of a pod runs; init containers, volumes, resources and
liveness probes are ignored. Pods survive the process (as in Kubernetes): only
the controllers or the API delete them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sandbox import probes
from sandbox.controllers import PODS, WorkloadControllers
from sandbox.pods import (
    DIR_ANNOTATION,
    PORT_ANNOTATION,
    first_container,
    process_env,
    real_port,
)
from sandbox.podstatus import PodReport
from sandbox.resources import ApiError
from sandbox.store import Store

log = logging.getLogger(__name__)

RESYNC_SECONDS = 0.3
TERMINATION_GRACE = 2.0
BACKOFF_RESET_AFTER = 10.0  # a run this long resets the restart back-off
WATCHED = {"apps/v1/deployments", "apps/v1/replicasets", "v1/pods"}

Obj = dict[str, Any]


class Ports:
    """Free local ports, never handed out twice while a pod holds one."""

    def __init__(self) -> None:
        self._taken: set[int] = set()
        self._lock = threading.Lock()

    def allocate(self) -> int:
        with self._lock:
            while True:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = int(s.getsockname()[1])
                if port not in self._taken:
                    self._taken.add(port)
                    return port

    def hold(self, port: int) -> None:
        with self._lock:
            self._taken.add(port)

    def release(self, port: int | None) -> None:
        with self._lock:
            self._taken.discard(port or 0)


class Kubelet:
    """Controllers plus pod processes for one Store; `start()` / `stop()`."""

    def __init__(self, store: Store, workdir: Path) -> None:
        self.store = store
        self.workdir = Path(workdir)
        self.ports = Ports()
        self.controllers = WorkloadControllers(store, self.live_owners)
        self._workers: dict[tuple[str, str], PodWorker] = {}
        self._ending: list[PodWorker] = []  # told to stop, process may still be exiting
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        (self.workdir / "pods").mkdir(parents=True, exist_ok=True)
        self.store.subscribe(self._on_change)
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reconciling, then terminate every pod process and wait for them."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            workers = list(self._workers.values()) + self._ending
            self._workers.clear()
            self._ending = []
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(TERMINATION_GRACE + 3)

    def _on_change(self, event_type: str, key: str, obj: Obj) -> None:
        if key in WATCHED:
            self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(RESYNC_SECONDS)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.sync_once()
            except Exception:
                log.exception("kubelet pass failed; retrying")

    def sync_once(self) -> None:
        """One reconcile pass: controllers, then processes for the Pods."""
        self.controllers.sync()
        self.sync_pods()

    def sync_pods(self) -> None:
        pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p
                for p in self.store.list(PODS)[0]}
        with self._lock:
            self._ending = [w for w in self._ending if w.is_alive()]
            for key, worker in list(self._workers.items()):
                pod = pods.get(key)
                if (pod is None or pod["metadata"]["uid"] != worker.uid
                        or pod["metadata"].get("deletionTimestamp")):
                    worker.stop()
                    self._ending.append(self._workers.pop(key))
            for key, pod in pods.items():
                if key not in self._workers and not self._stopping.is_set() and \
                        not pod["metadata"].get("deletionTimestamp") and not _is_done(pod):
                    worker = PodWorker(self.store, pod, self.workdir, self.ports)
                    self._workers[key] = worker
                    worker.start()

    def live_owners(self) -> set[str]:
        """uids of the owners (ReplicaSets) of pods whose process may still run."""
        with self._lock:
            workers = list(self._workers.values()) + self._ending
        return {uid for w in workers if w.is_alive() for uid in w.owner_uids}

    def pids(self) -> dict[str, int]:
        """`ns/name` → pid of every pod process running now (for tests and debugging)."""
        with self._lock:
            workers = list(self._workers.values())
        return {f"{w.namespace}/{w.name}": pid for w in workers if (pid := w.pid()) is not None}


def _is_done(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class PodWorker:
    """One pod's process: start, probe, restart, report; stopped when the Pod goes."""

    def __init__(self, store: Store, pod: Obj, workdir: Path, ports: Ports) -> None:
        meta = pod["metadata"]
        self.store, self.ports = store, ports
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.owner_uids = {ref["uid"] for ref in meta.get("ownerReferences") or []
                           if ref.get("uid")}
        self.dir = workdir / "pods" / self.namespace / self.name
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.report = PodReport(pod)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            self._signal(signal.SIGTERM)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _signal(self, signum: int) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signum)

    def _run(self) -> None:
        try:
            pod = self._prepare()
            while pod is not None and not self._stop.is_set():
                pod = self._run_once(pod)
        except Exception:
            log.exception("pod %s/%s: worker failed", self.namespace, self.name)
        finally:
            self._terminate()
            self.ports.release(self.port)

    def _prepare(self) -> Obj | None:
        """Give the pod its port and directory (annotations), once."""
        self.dir.mkdir(parents=True, exist_ok=True)
        pod = self.store.get(PODS, self.namespace, self.name)
        if pod is None or pod["metadata"]["uid"] != self.uid:
            return None
        self.port = real_port(pod)
        if self.port is not None:
            self.ports.hold(self.port)
            return pod
        self.port = self.ports.allocate()

        def annotate(obj: Obj) -> Obj:
            notes = obj["metadata"].setdefault("annotations", {})
            notes.update({PORT_ANNOTATION: str(self.port), DIR_ANNOTATION: str(self.dir)})
            return obj

        try:
            return self.store.mutate(PODS, self.namespace, self.name, annotate)
        except ApiError:
            return None

    def _run_once(self, pod: Obj) -> Obj | None:
        """Run the process until it exits; then decide about a restart. None = done."""
        proc = self._spawn(pod)
        if proc is None:
            return None
        started = time.monotonic()
        self.report.started(proc.pid)
        if not self._publish():
            return None
        code = self._supervise(proc, pod)
        if code is None or self._stop.is_set():
            return None
        ran = time.monotonic() - started
        policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        delay = self.report.exited(code, restart, ran >= BACKOFF_RESET_AFTER)
        if not self._publish() or not restart or self._stop.wait(delay):
            return None
        return self.store.get(PODS, self.namespace, self.name)

    def _spawn(self, pod: Obj) -> subprocess.Popen[bytes] | None:
        env = process_env(pod)
        env["SANDBOX_PARENT_PID"] = str(os.getpid())
        with self._lock:
            if self._stop.is_set():
                return None
            with open(self.dir / "container.log", "ab") as logfile:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "sandbox.demoapp"], env=env, cwd=self.dir,
                    stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                    start_new_session=True)
            return self.proc

    def _supervise(self, proc: subprocess.Popen[bytes], pod: Obj) -> int | None:
        """Probe readiness while the process runs; its exit code, None when stopped."""
        probe = probes.from_container(first_container(pod), self.port or 0)
        env = process_env(pod)
        next_check = time.monotonic() + probe.initial_delay
        successes = failures = 0
        while not self._stop.is_set():
            code = proc.poll()
            if code is not None:
                return code if code >= 0 else 128 - code  # signal N → 128+N, as runtimes say
            if time.monotonic() >= next_check:
                ok = probes.check(probe, env, str(self.dir))
                successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
                ready = self.report.ready
                if ok and successes >= probe.success_threshold:
                    ready = True
                elif not ok and (failures >= probe.failure_threshold or not ready):
                    ready = False
                if ready != self.report.ready:
                    self.report.set_ready(ready)
                    if not self._publish():
                        return None
                next_check = time.monotonic() + (probe.period if probe.kind != "listen"
                                                 or not ready else 3600.0)
            self._stop.wait(0.05)
        return None

    def _publish(self) -> bool:
        """Write the pod status; False when the pod is gone (the worker ends)."""
        status = self.report.status()

        def change(obj: Obj) -> Obj:
            obj["status"] = status
            return obj

        try:
            self.store.mutate(PODS, self.namespace, self.name, change, subresource="status")
            return True
        except ApiError:
            return False

    def _terminate(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            proc.wait(TERMINATION_GRACE)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            proc.wait()
