"""Trivial jobs for the runner tests: they record when they ran, in Redis, and nothing else.

A job appends `{label, worker, start}` to `test:started` when it begins and
`{label, worker, start, end}` to `test:runs` when it ends; `worker` is the pid of the
`bluegreen worker` process whose work horse ran it.
"""

from __future__ import annotations

import json
import os
import time

from rq import get_current_job

STARTED_KEY = "test:started"
RUNS_KEY = "test:runs"


def record(label: str, seconds: float = 0.0) -> str:
    """Sleep `seconds` between recording the start and the end of the run."""
    job = get_current_job()
    assert job is not None
    entry = {"label": label, "worker": os.getppid(), "start": time.time()}
    job.connection.rpush(STARTED_KEY, json.dumps(entry))
    time.sleep(seconds)
    entry["end"] = time.time()
    job.connection.rpush(RUNS_KEY, json.dumps(entry))
    return label


def explode(message: str) -> None:
    """Fail the way a step does, with a message a person can act on."""
    raise RuntimeError(message)


def keep_writing(label: str, seconds: float) -> str:
    """Write to Redis every 50 ms for `seconds` (so a Redis outage fails it at once);
    its start entry also names the work horse's pid."""
    job = get_current_job()
    assert job is not None
    entry = {"label": label, "worker": os.getppid(), "horse": os.getpid(), "start": time.time()}
    job.connection.rpush(STARTED_KEY, json.dumps(entry))
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        job.connection.set(f"test:alive:{label}", time.time())
        time.sleep(0.05)
    return label
