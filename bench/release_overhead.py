"""Release overhead: webhook accepted → awaiting promotion, less what the cluster and app took.

One app (`myapp`) on the sandbox, the Procfile's web and worker processes, an idle
queue. After a first release is promoted, each round pushes a tag into the idle colour,
waits until its release awaits promotion, and promotes it (so the next round deploys
into the other colour), `--settle` seconds after the promote: longer than the app's
`drain_seconds` (2 s by default), the wait a deploy makes on purpose when its colour
left default traffic only just now, so what is measured is not that wait. Per round:

- `total`: the release's intake audit entry (the webhook accepted it) → its
  `awaiting_promotion` audit entry;
- `pods_ready`: the sandbox's share, from the Deployment PATCH's completion (API
  request log) to the first watch event showing the rollout complete (pods started,
  readiness probe passed, status written);
- `smoke_http`: the smoke check's own HTTP time, i.e. `GET /ready` with `Cookie:
  test=true` through the ingress on a new connection, as the check makes it, measured
  here right after (median of 5); the product's check is one such request when the
  first answer passes;
- `overhead` = total - pods_ready - smoke_http: what the product itself adds.

And where the overhead goes: `pickup` (rq enqueued → started), each step's span from
the audit trail (`checking`, `deploying` less pods_ready, `testing` less smoke_http,
`to_awaiting`), the number of Kubernetes API requests the release made, and
`watch_lag` (rollout complete → the worker's next API request).

Writes `bench/results/release_overhead.json`. Run:
`.venv/bin/python bench/release_overhead.py --rounds 10`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import flow
import stack
from flow import DeploymentWatch, Product
from stack import Processes

APP = "myapp"
COLORS = ("blue", "green")


def smoke_http(ingress: str, samples: int = 5) -> float:
    """Seconds of one smoke check's request (median of `samples`, new connection each)."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        answer = stack.http("GET", ingress + "/ready", headers={"Cookie": "test=true"})
        times.append(time.perf_counter() - started)
        if answer.status != 200:
            raise RuntimeError(f"GET /ready with the test cookie answered {answer.status}")
    return statistics.median(times)


def measure(product: Product, watch: DeploymentWatch, tag: str, color: str) -> dict[str, Any]:
    seq = product.last_seq()
    release_id, _ = product.push(tag)
    record = product.wait_state(release_id, "awaiting_promotion")
    smoke = smoke_http(product.cluster.ingress)
    deployment = f"{APP}-{color}"
    ready = watch.ready_at(deployment, release_id)
    log = flow.requests_of(product.api_requests(seq), release_id)
    applied = [r["time"] for r in log if r["method"] == "PATCH"
               and r["path"].endswith(f"/deployments/{deployment}")]
    after_ready = [r["time"] for r in log if r["time"] > ready]
    job = product.job_times(release_id)
    found = {state: flow.audit_at(record, state_to=state)
             for state in ("queued", "checking", "deploying", "testing", "awaiting_promotion")}
    at = {state: t for state, t in found.items() if t is not None}
    started = job["started"]
    if not applied or not after_ready or len(at) < len(found) or started is None:
        raise RuntimeError(f"{release_id}: incomplete trail")
    total = at["awaiting_promotion"] - at["queued"]
    pods_ready = ready - applied[-1]
    seconds = {
        "total": total, "pods_ready": pods_ready, "smoke_http": smoke,
        "overhead": total - pods_ready - smoke,
        "pickup": started - (job["enqueued"] or at["queued"]),
        "checking": at["deploying"] - at["checking"],
        "deploying_less_pods_ready": at["testing"] - at["deploying"] - pods_ready,
        "testing_less_smoke_http": at["awaiting_promotion"] - at["testing"] - smoke,
        "watch_lag": after_ready[0] - ready,
    }
    figures: dict[str, Any] = {k: round(v * 1000, 1) for k, v in seconds.items()}
    figures["api_requests"] = dict(Counter(r["method"] for r in log))
    figures["api_request_count"] = len(log)
    product.command(APP, "promote", release_id)
    product.wait_state(release_id, "live")
    return figures


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rounds = []
    with Processes(workdir) as procs:
        product = Product(procs, {APP: flow.app_config()}).start()
        with DeploymentWatch(product.cluster.api) as watch:
            first = product.deploy("v1.0-green")
            product.command(APP, "promote", first)
            product.wait_state(first, "live")
            for i in range(args.rounds):
                color = COLORS[i % 2]
                time.sleep(args.settle)  # idle queue, and the colour is past its drain time
                figures = measure(product, watch, f"v{i + 2}.0-{color}", color)
                rounds.append({"round": i + 1, "color": color, **figures})
                print(f"round {i + 1:2} ({color:5}): total {figures['total']:7.1f} ms  "
                      f"pods ready {figures['pods_ready']:7.1f}  smoke http "
                      f"{figures['smoke_http']:5.1f}  overhead {figures['overhead']:6.1f}",
                      flush=True)
    keys = [k for k, v in rounds[0].items() if isinstance(v, float)]
    summary = {k: stack.summary(r[k] for r in rounds) for k in keys}
    summary["api_request_count"] = stack.summary(
        (r["api_request_count"] for r in rounds), digits=0)
    return {"rounds": rounds, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--settle", type=float, default=2.5,
                        help="seconds to wait before each push: the queue is idle and the colour "
                        "that just left default traffic is past its drain time (2 s default)")
    parser.add_argument("--name", default="release_overhead", help="results file name")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-release-") as tmp:
        results = run(args, Path(tmp))
    print(f"\nmedian / p90 (ms) over {len(results['rounds'])} releases")
    for key, figures in results["summary"].items():
        print(f"  {key:27} {figures['median']:8.1f} {figures['p90']:8.1f}")
    print(f"wrote {stack.write_results(args.name, results).relative_to(stack.ROOT)}")


if __name__ == "__main__":
    main()
