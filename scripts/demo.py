"""`make demo`: the whole product on the sandbox cluster, and one release cycle played on it.

Starts, each as its own process group: a redis-server (append-only file on, in a
temporary directory), the sandbox cluster (`python -m sandbox serve`), and the web
and worker processes exactly as the Procfile names them, configured through the
environment and a demo config file. It prints where to look (status board, webhook,
ingress) and a ready-to-paste signed `curl`, then plays v1.0-green → promote →
v2.0-blue → promote → rollback with signed GitHub webhooks and the `bluegreen` CLI,
showing after each step what the ingress answers with and without `Cookie: test=true`.
Then it serves until Ctrl-C (or, with `--once`, exits: 0 when every step ended as
expected, 1 naming the step that did not) and stops every process it started.

It uses the product only as a user would: processes, HTTP, the CLI. It imports
nothing from the product packages, so it is also a check of their public faces.
Starting and stopping the processes is `scripts/demo_stack.py`; this file is the cycle.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo_stack import (
    API_TOKEN,
    APP,
    BIN,
    TEST_COOKIE,
    Processes,
    Stack,
    StepFailed,
    curl_for,
    free_port,
    http,
    start_stack,
    tag_push,
    through_ingress,
    wait_until,
)

# -- the release cycle ---------------------------------------------------------------------------

TERMINAL = {"failed", "rejected", "superseded", "aborted", "decommissioned"}


@dataclass(frozen=True)
class Step:
    """One act of the cycle and what should hold afterwards."""

    title: str
    act: Callable[[Demo], str]            # does it; the release id it concerns
    states: Mapping[str, str]             # tag -> expected release state
    default: str                          # GET / without the cookie: "green v1.0" or "HTTP 404"
    cookie: str                           # GET / with Cookie: test=true


@dataclass
class Demo:
    """Plays the cycle against a running stack, printing progress."""

    stack: Stack
    releases: dict[str, str] = field(default_factory=dict)  # tag -> release id

    def push(self, tag: str) -> str:
        raw, headers = tag_push(tag)
        status, body = http("POST", f"{self.stack.web}/webhook", raw, headers)
        if status != 202 or not isinstance(body, dict) or body.get("result") != "queued":
            raise StepFailed(f"the webhook answered {status}: {body}")
        entry = body["releases"][0]
        self.releases[tag] = str(entry["id"])
        where = f" at queue position {entry['position']}" if entry.get("position") else ""
        say(f"webhook answered {status} queued: release {entry['id']}{where}")
        return self.releases[tag]

    def cli(self, *args: str) -> None:
        say("$ bluegreen " + " ".join(args))
        done = subprocess.run([str(BIN / "bluegreen"), *args], env=dict(self.stack.env),
                              capture_output=True, text=True, timeout=30, check=False)
        for line in (done.stdout + done.stderr).strip().splitlines():
            say("  " + line)
        if done.returncode != 0:
            raise StepFailed(f"`bluegreen {' '.join(args)}` exited {done.returncode}")

    def release(self, release_id: str) -> dict[str, Any]:
        status, body = http("GET", f"{self.stack.web}/api/releases/{release_id}")
        if status != 200 or not isinstance(body, dict):
            raise StepFailed(f"GET /api/releases/{release_id} answered {status}")
        return body

    def settle(self, step: Step) -> None:
        """Wait until every release is in its expected state (or stuck in a wrong final one)."""
        def states() -> dict[str, str]:
            return {tag: self.release(self.releases[tag])["release"]["state"]
                    for tag in step.states}

        def settled() -> bool:
            seen = states()
            wrong = {t: s for t, s in seen.items() if s != step.states[t] and s in TERMINAL}
            if wrong:
                raise StepFailed(f"expected {dict(step.states)}, but {wrong} ended so")
            return seen == dict(step.states)

        try:
            wait_until(f"{dict(step.states)}", settled)
        except StepFailed as e:
            raise StepFailed(f"{e}; states now {states()}") from None

    def show_ingress(self, step: Step) -> None:
        ingress = self.stack.ingress

        def seen() -> tuple[str, str]:
            return (through_ingress(ingress, cookie=False), through_ingress(ingress, cookie=True))

        try:
            wait_until("the ingress", lambda: seen() == (step.default, step.cookie), timeout=5)
        except StepFailed:
            pass  # reported below with what was actually seen
        default, cookie = seen()
        say(f"ingress: GET /  → {default:<12}  with Cookie {TEST_COOKIE} → {cookie}")
        if (default, cookie) != (step.default, step.cookie):
            raise StepFailed(f"the ingress answered {default!r} / {cookie!r}, expected "
                             f"{step.default!r} / {step.cookie!r}")

    def play(self, step: Step) -> None:
        started = time.monotonic()
        release_id = step.act(self)
        self.settle(step)
        record = self.release(release_id)
        message = record["audit"][-1]["message"] if record["audit"] else ""
        say(f"{record['release']['tag']} is {record['release']['state']} after "
            f"{time.monotonic() - started:.1f} s: {message}")
        self.show_ingress(step)


def say(line: str) -> None:
    print(f"      {line}", flush=True)


def promote(tag: str) -> Callable[[Demo], str]:
    def act(demo: Demo) -> str:
        demo.cli("promote", APP, demo.releases[tag])
        return demo.releases[tag]
    return act


def rollback(tag: str) -> Callable[[Demo], str]:
    def act(demo: Demo) -> str:
        demo.cli("rollback", APP)
        return demo.releases[tag]
    return act


CYCLE = (
    Step("push tag v1.0-green: deploy into green, smoke-test it through the ingress",
         lambda demo: demo.push("v1.0-green"), {"v1.0-green": "awaiting_promotion"},
         default="HTTP 404", cookie="green v1.0"),
    Step("promote v1.0-green: default traffic to green",
         promote("v1.0-green"), {"v1.0-green": "live"},
         default="green v1.0", cookie="green v1.0"),
    Step("push tag v2.0-blue: deploy into blue beside live green, smoke-test it",
         lambda demo: demo.push("v2.0-blue"),
         {"v2.0-blue": "awaiting_promotion", "v1.0-green": "live"},
         default="green v1.0", cookie="blue v2.0"),
    Step("promote v2.0-blue: default traffic to blue, green stays up as the rollback target",
         promote("v2.0-blue"), {"v2.0-blue": "live", "v1.0-green": "standby"},
         default="blue v2.0", cookie="blue v2.0"),
    Step("roll back v2.0-blue: default traffic back to green",
         rollback("v2.0-blue"), {"v2.0-blue": "rolled_back", "v1.0-green": "live"},
         default="green v1.0", cookie="green v1.0"),
)


def play_cycle(stack: Stack) -> str | None:
    """Play every step; None when all ended as expected, else the failing step and why."""
    demo = Demo(stack)
    started = time.monotonic()
    for number, step in enumerate(CYCLE, 1):
        print(f"[{number}/{len(CYCLE)}] {step.title}", flush=True)
        try:
            demo.play(step)
        except StepFailed as e:
            return f"step {number} ({step.title}) failed: {e}"
    print(f"release cycle complete: {len(CYCLE)}/{len(CYCLE)} steps as expected in "
          f"{time.monotonic() - started:.1f} s", flush=True)
    return None


# -- main ----------------------------------------------------------------------------------------


def banner(stack: Stack, workdir: Path) -> None:
    print(f"""
bluegreen demo is up
  status board  {stack.web}/
  webhook       {stack.web}/webhook
  API           {stack.web}/api/releases
  ingress       {stack.ingress}/   (add -H 'Cookie: {TEST_COOKIE}' for the test colour)
  logs          {workdir}

Send a signed GitHub tag push yourself (demo secret inline; after the cycle below,
v3.0-blue deploys into the idle colour):

{curl_for(stack.web, 'v3.0-blue')}

Then act on it with the CLI:
  export BLUEGREEN_URL={stack.web} BLUEGREEN_API_TOKEN={API_TOKEN}
  .venv/bin/bluegreen status; .venv/bin/bluegreen promote {APP}
""", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    parser.add_argument("--once", action="store_true",
                        help="play the cycle, stop everything, exit 0 only if all went as expected")
    parser.add_argument("--port", type=int, default=0, help="web port (default: a free one)")
    return parser.parse_args(argv)


def serve(processes: Processes) -> None:
    print("serving; press Ctrl-C to stop everything", flush=True)
    while True:
        time.sleep(1)
        processes.check_alive()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C even when started in the background (where SIGINT starts out ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="bluegreen-demo-"))
    processes = Processes(workdir)
    failure: str | None = None
    try:
        stack = start_stack(processes, args.port or free_port())
        banner(stack, workdir)
        failure = play_cycle(stack)
        if failure:
            print(f"DEMO FAILED: {failure}", flush=True)
        if not args.once:
            serve(processes)
    except StepFailed as e:
        failure = str(e)
        print(f"DEMO FAILED: {failure}", flush=True)
    except KeyboardInterrupt:
        print("", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup short
        print("stopping every process the demo started ...", flush=True)
        processes.stop_all()
        if failure is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", flush=True)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
