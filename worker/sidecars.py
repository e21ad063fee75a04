"""Background loops that live beside the rq worker in the `bluegreen worker` process.

The runner starts every loop in `SIDECARS` once, in daemon threads of the worker's
parent process (rq forks a work horse per job, so these keep running while a job
does). A sidecar must never block or fail a release: it catches its own errors,
retries with backoff and returns when `stop` is set. Each entry is the dotted path
of a function `start(settings, redis, stop) -> threading.Thread`; they are imported
by name so a sidecar's dependencies load only in the worker.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Protocol

from redis import Redis

from worker.config import Settings

log = logging.getLogger(__name__)

SIDECARS: tuple[str, ...] = ("worker.notify.start", "worker.snapshot.start")


class Starter(Protocol):
    def __call__(self, settings: Settings, redis: Redis, stop: threading.Event) -> threading.Thread:
        ...


def start_all(settings: Settings, redis: Redis, stop: threading.Event) -> list[threading.Thread]:
    """Start every registered sidecar; one that fails to start is logged, never fatal."""
    threads = []
    for dotted in SIDECARS:
        module_name, _, attr = dotted.rpartition(".")
        try:
            starter: Starter = getattr(importlib.import_module(module_name), attr)
            threads.append(starter(settings, redis, stop))
        except Exception:
            log.exception("sidecar %s did not start", dotted)
    return threads
