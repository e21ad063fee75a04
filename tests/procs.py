"""Process trees, leftovers and waiting: what the multi-process tests use to kill and to check.

The generic parts (waiting, the tree below a pid) are `scripts/proctools.py`, shared with
the demo and the benchmarks; pytest puts `scripts/` on the import path.

rq runs each job in a work horse with a process group of its own, and sandbox pods
start sessions of their own, so "the worker's processes" is a tree, not a group.
`kill_tree` signals a group and everything below its leader; `processes_mentioning`
finds live processes that name a marker (a temporary directory, a parent pid) in their
command line, environment or working directory, which is how a test sees leftovers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proctools import descendants, wait_for


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "",
               interval: float = 0.05) -> Any:
    """`predicate()`'s first truthy value; AssertionError naming `what` after `timeout` s."""
    return wait_for(what or str(predicate), predicate, timeout, interval=interval,
                    error=AssertionError)


def kill_tree(pid: int, signum: int) -> None:
    """Signal `pid`'s process group and every process below it (whatever group it is in)."""
    tree = descendants(pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)
    for child in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)


def processes_mentioning(*markers: str) -> list[str]:
    """`pid cmdline` of live processes whose command line, environment or cwd has a marker."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace").split("\0")
            cwd = os.readlink(proc / "cwd")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue  # exited, not yet reaped by its parent
        text = "\n".join([cmdline, cwd, *environ])
        if any(m in text for m in markers):
            found.append(f"{proc.name} {cmdline.strip()}")
    return found
