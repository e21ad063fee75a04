"""Scale: 50 apps, a burst of 200 tag webhooks, separate queues vs one shared queue, memory.

Two layouts of the same 50 apps (`app-00` … `app-49`, each its own repository) on one
sandbox cluster, one after the other, each with a fresh Redis and sandbox:

- `separate`: every app on its own queue, served by `--workers` `bluegreen worker`
  processes (default 50, one per queue; fewer workers each serve several queues);
- `shared`: every app on one queue, one `bluegreen worker`.

In each, once the workers listen: the RSS of the web process (gunicorn master and
workers) and of the worker processes at rest; then a burst of 200 signed tag pushes
(4 per app, v1.0-green to v4.0-green, tag by tag across the apps, from
`--clients` concurrent clients), with the intake's answer latency; then the time until
every release has settled (awaiting promotion, or superseded by the newer tag into its
colour; failed or rejected would be counted and shown); then RSS again, and `GET
/status` latency with the 200 releases stored (median of 30). `/status` with 2,000
releases is `bench/status_latency.py`'s.

Writes `bench/results/scale.json`. Run: `.venv/bin/python bench/scale.py`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import flow
import stack
from flow import Product
from stack import Processes

APPS = 50
# Four tags per app, all into green: each app ends with its newest tag awaiting promotion
# and the older ones superseded (deployed first, or skipped untouched if a newer one was
# recorded before their job ran). One colour keeps the sandbox at one pod per app: its
# kubelet reconciles every object on every change and slows down past ~50 pods.
TAGS = ("v1.0-green", "v2.0-green", "v3.0-green", "v4.0-green")
SETTLED = frozenset({"awaiting_promotion", "superseded", "failed", "rejected"})


def apps(layout: str) -> dict[str, dict[str, Any]]:
    return {f"app-{i:02d}": flow.app_config(
        f"acme/app-{i:02d}", queue=f"q-{i:02d}" if layout == "separate" else "deploy",
        rollout_timeout=180, smoke_timeout=60) for i in range(APPS)}


def worker_queues(layout: str, workers: int) -> list[tuple[str, ...]]:
    if layout == "shared":
        return [()]
    queues = [f"q-{i:02d}" for i in range(APPS)]
    return [tuple(queues[w::workers]) for w in range(workers)]


def memory(procs: Processes) -> dict[str, Any]:
    """RSS in MiB: the web process tree, and each worker (with a running work horse)."""
    workers = [stack.rss_mib(p.pid) for name, p in procs.procs.items()
               if name.startswith("worker")]
    return {"web": stack.rss_mib(procs.procs["web"].pid),
            "workers_total": round(sum(workers), 1),
            "worker_median": stack.summary(workers)["median"] if workers else None,
            "workers": len(workers)}


def burst(product: Product, clients: int) -> dict[str, Any]:
    """200 tag pushes from `clients` concurrent clients; every answer's latency."""
    pushes = [(f"acme/app-{i:02d}", tag, f"{k + 1:08x}{i:032x}")  # all zeros: a deleted tag
              for k, tag in enumerate(TAGS) for i in range(APPS)]

    def send(push: tuple[str, str, str]) -> tuple[int, float, bytes]:
        repository, tag, commit = push
        started = time.perf_counter()
        answer = stack.push(product.web, tag, commit=commit, repository=repository,
                            delivery=f"scale-{repository}-{tag}")
        return answer.status, (time.perf_counter() - started) * 1000, answer.body

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(send, pushes))
    return {"pushes": len(pushes), "clients": clients,
            "seconds": round(time.perf_counter() - started, 2),
            "statuses": dict(Counter(str(s) for s, _, _ in answers)),
            "not_queued": [body.decode(errors="replace")[:300] for s, _, body in answers
                           if s != 202],
            "latency_ms": stack.summary(ms for _, ms, _ in answers)}


def settle(product: Product, since: float, timeout: float) -> dict[str, Any]:
    """Wait until every release has settled; how long that took and how they ended."""
    def states() -> Counter[str]:
        answer = stack.http("GET", f"{product.web}/api/releases?limit=1000")
        return Counter(r["state"] for r in answer.json["releases"])

    deadline = time.monotonic() + timeout
    while True:
        found = states()
        if sum(found.values()) >= APPS * len(TAGS) and set(found) <= SETTLED:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"releases not settled after {timeout}s: {dict(found)}")
        time.sleep(0.25)
    seconds = time.time() - since
    deployed = found["awaiting_promotion"]
    return {"seconds": round(seconds, 1), "states": dict(found),
            "deployed_per_minute": round(deployed / seconds * 60, 1)}


def status_latency(product: Product, samples: int = 30) -> dict[str, Any]:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        answer = stack.http("GET", f"{product.web}/status")
        times.append((time.perf_counter() - started) * 1000)
        if answer.status != 200:
            raise RuntimeError(f"/status answered {answer.status}")
    return {**stack.summary(times), "bytes": len(answer.body)}


def run_layout(layout: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    workdir.mkdir()
    with Processes(workdir) as procs:
        product = Product(procs, apps(layout)).start(worker=False)
        started = time.monotonic()
        names = []
        for n, queues in enumerate(worker_queues(layout, args.workers)):
            names.append(f"worker-{n:02d}")
            stack.start_worker(procs, product.env, queues=queues, name=names[-1])
        for name in names:
            stack.wait_until(f"{name} to listen", lambda n=name: stack.worker_ready(procs, n),
                             300, 0.2)
        workers_up = time.monotonic() - started
        time.sleep(args.rest)
        for _ in range(20):  # the web workers have answered something before "at rest"
            stack.http("GET", f"{product.web}/status")
        at_rest = memory(procs)
        since = time.time()
        intake = burst(product, args.clients)
        print(f"{layout}: burst of {intake['pushes']} in {intake['seconds']} s, answers "
              f"{intake['statuses']}, p50 {intake['latency_ms']['median']} ms "
              f"p99 {intake['latency_ms']['p99']} ms", flush=True)
        settled = settle(product, since, args.timeout)
        print(f"{layout}: settled in {settled['seconds']} s: {settled['states']}", flush=True)
        time.sleep(args.rest)
        after = memory(procs)
        status = status_latency(product)
    return {"layout": layout, "workers": len(names), "workers_up_seconds": round(workers_up, 1),
            "rss_mib_at_rest": at_rest, "rss_mib_after_burst": after, "burst": intake,
            "settle": settled, "status_with_200_releases_ms": status}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=APPS,
                        help="worker processes for the separate-queues layout")
    parser.add_argument("--clients", type=int, default=32, help="concurrent pushers")
    parser.add_argument("--rest", type=float, default=5.0, help="seconds idle before RSS")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to settle")
    parser.add_argument("--layouts", default="separate,shared")
    parser.add_argument("--name", default="scale", help="results file name")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for layout in args.layouts.split(","):
            results.append(run_layout(layout, args, Path(tmp) / layout))
    for r in results:
        print(f"\n{r['layout']}: {r['workers']} worker(s) up in {r['workers_up_seconds']} s")
        print(f"  RSS MiB at rest: web {r['rss_mib_at_rest']['web']}, workers "
              f"{r['rss_mib_at_rest']['workers_total']} (median "
              f"{r['rss_mib_at_rest']['worker_median']}); after the burst: web "
              f"{r['rss_mib_after_burst']['web']}, workers "
              f"{r['rss_mib_after_burst']['workers_total']}")
        print(f"  burst: {r['burst']['seconds']} s, p50 {r['burst']['latency_ms']['median']} "
              f"ms, p99 {r['burst']['latency_ms']['p99']} ms; settled in "
              f"{r['settle']['seconds']} s ({r['settle']['deployed_per_minute']} deploys/min)")
        print(f"  /status with 200 releases: median "
              f"{r['status_with_200_releases_ms']['median']} ms")
    print(f"wrote {stack.write_results(args.name, {'layouts': results}).relative_to(stack.ROOT)}")


if __name__ == "__main__":
    main()
