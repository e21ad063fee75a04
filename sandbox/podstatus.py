"""A pod's status as the kubelet reports it: phase, conditions, container state.

Owns the bookkeeping behind `status` of a sandbox Pod: the phase (Pending →
Running; Succeeded/Failed when the restart policy lets the process stay down),
conditions PodScheduled, Initialized, ContainersReady and Ready with stable
transition times, and `containerStatuses[0]` (ready, started, restartCount,
image, `state`/`lastState` with exit codes, `containerID` `sandbox://<pid>`). It also
computes the restart back-off (0.2 s doubling to 2 s, CrashLoopBackOff while
waiting). Writing the status and running processes is `sandbox.kubelet`'s job.
"""

from __future__ import annotations

from typing import Any

from sandbox.pods import CONTAINER_ID_PREFIX, first_container
from sandbox.resources import now_rfc3339

BACKOFF_START, BACKOFF_MAX = 0.2, 2.0

Obj = dict[str, Any]


class PodReport:
    """The pod status the worker reports, with transition times kept stable."""

    def __init__(self, pod: Obj) -> None:
        container = first_container(pod)
        self.container, self.image = container.get("name", ""), container.get("image", "")
        self.created = now_rfc3339()
        self.ready = False
        self.restarts = 0
        self.backoff = 0  # exits in a row without a long run: doubles the restart delay
        self.phase = "Pending"
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.container_id = ""
        self.ready_since = self.created
        self.started_at = ""

    def started(self, pid: int) -> None:
        self.phase, self.started_at = "Running", now_rfc3339()
        self.state = {"running": {"startedAt": self.started_at}}
        self.container_id = f"{CONTAINER_ID_PREFIX}{pid}"
        self.set_ready(False)

    def set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            self.ready_since = now_rfc3339()
        self.ready = ready

    def exited(self, code: int, restart: bool, reset_backoff: bool) -> float:
        """Record an exit; the back-off before the restart (seconds)."""
        self.set_ready(False)
        self.backoff = 0 if reset_backoff else self.backoff
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                      "startedAt": self.started_at, "finishedAt": now_rfc3339(),
                      "containerID": self.container_id}
        delay = min(BACKOFF_START * float(2 ** self.backoff), BACKOFF_MAX)
        if restart:
            self.restarts += 1
            self.backoff += 1
            self.last_state = {"terminated": terminated}
            self.state = {"waiting": {"reason": "CrashLoopBackOff", "message": (
                f"back-off {delay:g}s restarting failed container={self.container}")}}
        else:
            self.state = {"terminated": terminated}
            self.phase = "Succeeded" if code == 0 else "Failed"
        return delay

    def status(self) -> Obj:
        ready = str(self.ready)
        running = "running" in self.state
        return {
            "phase": self.phase, "qosClass": "BestEffort", "startTime": self.created,
            "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": self.created},
                {"type": "Initialized", "status": "True", "lastTransitionTime": self.created},
                {"type": "ContainersReady", "status": ready,
                 "lastTransitionTime": self.ready_since},
                {"type": "Ready", "status": ready, "lastTransitionTime": self.ready_since},
            ],
            "containerStatuses": [{
                "name": self.container, "image": self.image, "imageID": "",
                "containerID": self.container_id, "ready": self.ready, "started": running,
                "restartCount": self.restarts, "state": self.state,
                "lastState": self.last_state,
            }],
        }
