"""`make demo ARGS=--once`: the demo plays its release cycle and reports it truthfully.

Runs `python scripts/demo.py --once` as `make demo` does and checks what a newcomer
reads: the URLs and a signed curl, every step of the cycle with what the ingress
answered with and without the test cookie, the final verdict, exit 0, and that no
process the demo started (pods included) outlives it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from procs import processes_mentioning

pytestmark = pytest.mark.slow


def test_demo_once_plays_the_cycle_and_cleans_up() -> None:
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    done = subprocess.run([sys.executable, "scripts/demo.py", "--once"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"status board  http://127\.0\.0\.1:\d+/\n", out)
    assert re.search(r"webhook       http://127\.0\.0\.1:\d+/webhook\n", out)
    assert "-H 'X-Hub-Signature-256: sha256=" in out and "curl -sS -X POST" in out
    expected = [
        r"\[1/5\] push tag v1\.0-green",
        r"webhook answered 202 queued: release myapp-v1-0-green-",
        r"v1\.0-green is awaiting_promotion after .*smoke tests passed",
        r"GET /  → HTTP 404 +with Cookie test=true → green v1\.0",
        r"\[2/5\] promote v1\.0-green", r"\$ bluegreen promote myapp myapp-v1-0-green-",
        r"GET /  → green v1\.0 +with Cookie test=true → green v1\.0",
        r"\[3/5\] push tag v2\.0-blue", r"v2\.0-blue is awaiting_promotion",
        r"GET /  → green v1\.0 +with Cookie test=true → blue v2\.0",
        r"\[4/5\] promote v2\.0-blue", r"v2\.0-blue is live",
        r"GET /  → blue v2\.0 +with Cookie test=true → blue v2\.0",
        r"\[5/5\] roll back v2\.0-blue", r"\$ bluegreen rollback myapp",
        r"v2\.0-blue is rolled_back",
        r"GET /  → green v1\.0 +with Cookie test=true → green v1\.0",
        r"release cycle complete: 5/5 steps as expected",
        r"stopping every process the demo started",
    ]
    position = 0
    for pattern in expected:  # in this order
        found = re.compile(pattern).search(out, position)
        assert found, f"{pattern!r} not found after position {position} in:\n{out}"
        position = found.end()
    workdir = re.search(r"logs          (\S+)", out)
    assert workdir is not None
    deadline = time.monotonic() + 10
    while processes_mentioning(workdir.group(1)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(workdir.group(1)) == []
