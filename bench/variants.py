"""Ours against ours: the accepted path under other settings or another checkout,
interleaved, each server with its own Redis.

`bench/intake.py` measures us beside the Go peer and `bench/bounds.py` cuts parts out
of a copy; this compares whole web processes that differ only by what you name: an
environment setting (`WEB_CONCURRENCY`, `WEB_REDIS_POLL_US`, ...) or a checkout (a
`git worktree` of another commit, or one with a change being tried). Each variant is
the Procfile's web line with its own redis-server, started once; then, round after
round, each variant gets one wrk run of the accepted-path pool of `intake.py` (new
signed tag pushes) from an emptied Redis on a quiet machine, in alternating order
(first to last, then last to first), so a variant is not always the one after a
busy run. Prints each run and, per variant, the median answers/s, p99, CPU
microseconds per answer of its web process and of its Redis (`intake.measure`: from
`/proc`, during the run and until the machine is quiet again), and the median over the
rounds of its answers/s divided by the first variant's in the same round. Writes
`bench/results/<name>.json`. Needs Debian's wrk (as `intake.py`).

A variant is `NAME` or `NAME=TREE` or `NAME=TREE:KEY=VALUE,KEY=VALUE` (TREE empty: this
checkout). Run, e.g.:
`.venv/bin/python bench/variants.py three two=:WEB_CONCURRENCY=2 --connections 64 --rounds 6`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import intake
import stack
from stack import Processes


@dataclass
class Variant:
    name: str
    tree: Path
    env: dict[str, str]
    url: str = ""
    redis_url: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    name, _, rest = text.partition("=")
    tree, _, settings = rest.partition(":")
    env = {}
    for pair in filter(None, settings.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"variant {name}: {pair!r} is not KEY=VALUE")
        env[key] = value
    return Variant(name=name, tree=Path(tree).resolve() if tree else stack.TREE, env=env)


def start(procs: Processes, variant: Variant) -> None:
    variant.redis_url = stack.start_redis(procs, name=f"redis-{variant.name}")
    config = stack.write_config(procs, {"myapp": {"repository": intake.REPOSITORY}})
    env = {**stack.product_env(variant.redis_url, config), **variant.env}
    variant.url = stack.start_web(procs, env, name=variant.name, tree=variant.tree) + "/webhook"


def measure(procs: Processes, variant: Variant, pool: Path, connections: int,
            duration: float) -> dict[str, Any]:
    """One run of `variant` from an emptied Redis (`intake.measure`: the CPU per answer of
    its web process, master and workers, and of its Redis)."""
    intake.flush(variant.redis_url)
    roles = {"web": variant.name, "redis": f"redis-{variant.name}"}
    return intake.measure(procs, roles, variant.url, pool, connections, duration)


def summary(variants: list[Variant]) -> list[dict[str, Any]]:
    """Per variant, the medians of its runs, and of its answers/s over the first
    variant's in the same round (with their range)."""
    first = variants[0]
    rows = []
    for v in variants:
        ratios = [mine["requests_per_s"] / theirs["requests_per_s"]
                  for mine, theirs in zip(v.runs, first.runs, strict=True)]
        over_first, over_first_range = intake.spread(ratios)
        rows.append({
            "variant": v.name,
            "requests_per_s": round(statistics.median(r["requests_per_s"] for r in v.runs), 1),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in v.runs), 2),
            **{cpu: intake.cpu_medians(v.runs, cpu)
               for cpu in ("cpu_us_per_answer", "cpu_us_per_answer_with_drain")},
            "over_first": over_first, "over_first_range": over_first_range})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+",
                        help="NAME[=TREE][:KEY=VALUE,...]; the first is the reference")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pool", type=int, default=150000, help="unique deliveries in the pool")
    parser.add_argument("--name", default="variants", help="results file name")
    args = parser.parse_args()
    variants = [parse_variant(text) for text in args.variants]
    if len({v.name for v in variants}) != len(variants):
        raise SystemExit("variant names must differ")
    with tempfile.TemporaryDirectory(prefix="bench-variants-") as tmp:
        workdir = Path(tmp)
        pools = intake.write_pools(workdir, args.pool)
        pool, warm_up = pools["accepted"], pools["duplicate"]
        with Processes(workdir) as procs:
            for variant in variants:
                start(procs, variant)
                intake.wrk(variant.url, warm_up, 8, 1)  # imports, connections, caches
            for round_ in range(args.rounds):
                for variant in variants if round_ % 2 == 0 else variants[::-1]:
                    run = measure(procs, variant, pool, args.connections, args.duration)
                    variant.runs.append({"round": round_ + 1, **run})
                    print(f"round {round_ + 1} {variant.name:12s} {run['requests_per_s']:9,.0f}/s "
                          f"p99 {run['p99_ms']:7.2f} ms  cpu µs/answer: {intake.cpu_text(run)}"
                          f"  {run['statuses']}", flush=True)
    rows = summary(variants)
    print(f"\nmedians of {args.rounds} rounds at {args.connections} connections "
          f"(x: answers/s over {variants[0].name}'s in the same round [range])")
    for row in rows:
        low, high = row["over_first_range"]
        print(f"  {row['variant']:12s} {row['requests_per_s']:9,.0f}/s  p99 {row['p99_ms']:7.2f} ms"
              f"  cpu µs/answer: {intake.cpu_text(row)}  x{row['over_first']} [{low}, {high}]")
    path = stack.write_results(args.name, {
        "connections": args.connections, "duration_s": args.duration, "rounds": args.rounds,
        "variants": [{"name": v.name, "tree": stack.git_commit(v.tree), "env": v.env,
                      "runs": v.runs} for v in variants],
        "medians": rows})
    print(f"wrote {path.relative_to(stack.ROOT)}")


if __name__ == "__main__":
    main()
