"""Local process helpers shared by the demo, the benchmarks and the tests (standard library only).

Free ports, "is something listening", waiting for a condition, and the process tree
below a pid (read from /proc: rq's work horse and sandbox pods leave their parent's
process group, so a group is not the whole tree). The demo, `bench/` and `tests/` put
this folder on their import path; the product never imports it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(what: str, check: Callable[[], Any], timeout: float, *, interval: float = 0.05,
             error: type[Exception] = TimeoutError) -> Any:
    """`check()`'s first truthy value; `error` naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found
