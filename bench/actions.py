"""Promote and rollback latency on the sandbox, with an idle queue, and where the time goes.

One app (`myapp`) on the sandbox cluster, the Procfile's web and worker processes.
After a first release (v1.0-green) is promoted, each round deploys a new blue release,
then measures, with nothing else queued:

- `promote` of it (blue takes default traffic), then
- `rollback` of it (default traffic back to green).

For each action: **end to end**, from the operator API call to the first answer from
the new colour at the ingress (default traffic, no cookie; polled every ~2 ms); and
**in the worker**, from the job's start (rq `started_at`) and from its first Kubernetes
API request to the read-back of the route (the last API request before the release's
`live`/`rolled_back` audit entry). The phases (milliseconds, medians over the rounds):

- `api`: the HTTP call (auth, checks against Redis, enqueue, audit note);
- `pickup`: rq `enqueued_at` → `started_at` (dequeue, fork of the work horse);
- `setup`: `started_at` → the job's first API request (settings, client, records);
- `checks`: first API request → the VirtualService PATCH (re-checks, make-before-break);
- `read_back`: VirtualService PATCH → last API request before the audit entry;
- `record`: → the `live`/`rolled_back` audit entry;
- `after`: the audit entry → rq `ended_at` (the job's closing snapshot, rq bookkeeping);
- `served`: the VirtualService PATCH → the ingress answering from the new colour.

Writes `bench/results/actions.json`. Run: `.venv/bin/python bench/actions.py --rounds 12`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import flow
import stack
from flow import IngressWatch, Product
from stack import Processes

APP = "myapp"
PHASES = ("api", "pickup", "setup", "checks", "read_back", "record", "after", "served")


def measure(product: Product, ingress: IngressWatch, action: str, release_id: str,
            color: str, final: str) -> dict[str, Any]:
    """One action on an idle queue; its timings in ms."""
    seq = product.last_seq()
    t0 = time.time()
    queued = product.command(APP, action, release_id)
    t_api = time.time()
    t_served = ingress.wait_for(color)
    record = product.wait_state(release_id, final)
    job = product.job_times(queued["job"])
    while job["ended"] is None:  # the closing snapshot runs after the state is written
        time.sleep(0.01)
        job = product.job_times(queued["job"])
    done_at = flow.audit_at(record, state_to=final, step=action)
    log = flow.requests_of(product.api_requests(seq), release_id, f"({action})")
    patches = [r for r in log if r["method"] == "PATCH" and "/virtualservices/" in r["path"]]
    if done_at is None or not log or not patches or job["started"] is None:
        raise RuntimeError(f"{action} {release_id}: incomplete trail ({len(log)} requests)")
    before_done = [r for r in log if r["time"] <= done_at]
    first, switch, read_back = log[0]["time"], patches[-1]["time"], before_done[-1]["time"]
    ms = {
        "api": t_api - t0,
        "pickup": job["started"] - (job["enqueued"] or t0),
        "setup": first - job["started"],
        "checks": switch - first,
        "read_back": read_back - switch,
        "record": done_at - read_back,
        "after": (job["ended"] or done_at) - done_at,
        "served": t_served - switch,
        "end_to_end": t_served - t0,
        "job_to_read_back": read_back - job["started"],
        "first_request_to_read_back": read_back - first,
        "job_total": (job["ended"] or done_at) - job["started"],
    }
    figures: dict[str, Any] = {k: round(v * 1000, 1) for k, v in ms.items()}
    figures["api_requests"] = dict(Counter(r["method"] for r in log))
    figures["api_requests_to_read_back"] = len(before_done)
    return figures


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    with Processes(workdir) as procs:
        product = Product(procs, {APP: flow.app_config()}).start()
        ingress = IngressWatch(product.cluster.ingress)
        first = product.deploy("v1.0-green")
        product.command(APP, "promote", first)
        product.wait_state(first, "live")
        for i in range(args.rounds):
            blue = product.deploy(f"v{i + 2}.0-blue")
            time.sleep(args.settle)  # let the release job's closing snapshot finish: idle queue
            promote = measure(product, ingress, "promote", blue, "blue", "live")
            time.sleep(args.settle)
            rollback = measure(product, ingress, "rollback", blue, "green", "rolled_back")
            rounds.append({"round": i + 1, "promote": promote, "rollback": rollback})
            print(f"round {i + 1:2}: promote {promote['end_to_end']:7.1f} ms "
                  f"(job→read back {promote['job_to_read_back']:6.1f})   rollback "
                  f"{rollback['end_to_end']:7.1f} ms "
                  f"(job→read back {rollback['job_to_read_back']:6.1f})", flush=True)
        ingress.close()
    return {"rounds": rounds, "summary": summarize(rounds)}


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for action in ("promote", "rollback"):
        keys = [k for k, v in rounds[0][action].items() if isinstance(v, float)]
        found[action] = {k: stack.summary(r[action][k] for r in rounds) for k in keys}
        found[action]["api_requests_to_read_back"] = stack.summary(
            (r[action]["api_requests_to_read_back"] for r in rounds), digits=0)
    return found


def show(summary: dict[str, Any]) -> None:
    for action, figures in summary.items():
        print(f"\n{action}: median / p90 (ms) over {figures['end_to_end']['n']} rounds")
        for key in ("end_to_end", "job_to_read_back", "first_request_to_read_back",
                    "job_total", *PHASES):
            print(f"  {key:27} {figures[key]['median']:8.1f} {figures[key]['p90']:8.1f}")
        requests = figures["api_requests_to_read_back"]["median"]
        print(f"  {'API requests to read back':27} {requests:8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12, help="promote+rollback rounds")
    parser.add_argument("--settle", type=float, default=0.5,
                        help="seconds to wait before each action so the queue is idle")
    parser.add_argument("--name", default="actions", help="results file name")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-actions-") as tmp:
        results = run(args, Path(tmp))
    show(results["summary"])
    print(f"wrote {stack.write_results(args.name, results).relative_to(stack.ROOT)}")


if __name__ == "__main__":
    main()
