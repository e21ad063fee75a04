"""Background loops that live beside the rq worker, in a process of their own.

The runner starts every loop in `SIDECARS` once, while it serves its queues. They
run in one child process (started with the *spawn* method), never as threads of the
worker: rq forks a work horse for every job, and forking a process whose other
threads hold locks (a Redis pool, an HTTP pool, logging) can leave the horse stuck
forever. A sidecar must never block or fail a release: it catches its own errors,
retries with backoff and returns when `stop` is set. Each entry is the dotted path
of a function `start(settings, redis, stop) -> threading.Thread`; they are imported
by name, in the child only. The child stops when asked (SIGTERM) or when the worker
that started it is gone.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.process import BaseProcess
from typing import Protocol

from redis import Redis

from worker.config import Settings

log = logging.getLogger(__name__)

SIDECARS: tuple[str, ...] = ("worker.notify.start", "worker.snapshot.start",
                             "worker.retention.start")
STOP_TIMEOUT = 5.0


class Starter(Protocol):
    def __call__(self, settings: Settings, redis: Redis, stop: threading.Event) -> threading.Thread:
        ...


def start_all(settings: Settings, redis: Redis, stop: threading.Event) -> list[threading.Thread]:
    """Start every registered sidecar in this process; one that fails to start is logged."""
    threads = []
    for dotted in SIDECARS:
        module_name, _, attr = dotted.rpartition(".")
        try:
            starter: Starter = getattr(importlib.import_module(module_name), attr)
            threads.append(starter(settings, redis, stop))
        except Exception:
            log.exception("sidecar %s did not start", dotted)
    return threads


def spawn(settings: Settings) -> BaseProcess | None:
    """Run every sidecar in a child process; None when there are none to run."""
    if not SIDECARS:
        return None
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_main, args=(settings, os.getpid()),
                              name="bluegreen-sidecars", daemon=True)
    process.start()
    return process


def stop(process: BaseProcess | None) -> None:
    """Ask the sidecar process to stop, and make sure it has."""
    if process is None or not process.is_alive():
        return
    process.terminate()
    process.join(STOP_TIMEOUT)
    if process.is_alive():
        process.kill()
        process.join()


def _main(settings: Settings, parent_pid: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, which stops us
    threads = start_all(settings, Redis.from_url(settings.redis_url), stopping)
    while not stopping.wait(1.0):
        if os.getppid() != parent_pid:
            log.info("the worker that started the sidecars is gone; stopping")
            stopping.set()
    for thread in threads:
        thread.join(STOP_TIMEOUT)
