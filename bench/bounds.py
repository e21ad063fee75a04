"""What each part of an accepted delivery costs: the whole intake against copies of it
with parts cut out, each beside the Go peer, with the CPU every process spent.

`bench/intake.py` says how far the accepted path is from adnanh/webhook; this says
where the distance is. It makes copies of this commit (`git worktree`, removed after)
with one change each, and measures them with the accepted-path pool of `intake.py`
(new signed tag pushes), interleaved with the peer, level by level, round by round:

- `whole`: this commit as it is: verify, parse, match, plan the writes, one script
  call that dedupes, records and enqueues, answer.
- `no_writes`: the same, but the submission script only walks its arguments and runs
  no command (each push answered as new, at place 1): Redis receives and reads every
  argument, and writes nothing.
- `no_plan`: the whole intake with the real script and all its writes, but `plan()`
  plans only the first delivery; every later one copies that plan's arguments with
  new seen keys and a new release id (so each is written as a new release, with the
  first one's other values): what answering after the writes costs without the
  Python that prepares them.
- `plan_ping`: verify, parse, match and plan the writes, then one PING to Redis
  instead of the script (the arguments are neither packed nor sent), then answer.
- `ping`: verify, parse and match, then one PING, then answer: the floor of answering
  after one Redis round trip in this web process.
- `peer`: adnanh/webhook as in `intake.py`, answering before its command runs.

Each server of ours has its own redis-server, so the CPU each process spent can be
read apart: per run, from `/proc`, the CPU microseconds per answer of the web process
(master and workers), of its Redis, and of the peer (with the commands it started),
during the run and until the machine is quiet again (`settle`, as in `intake.py`).
The copies are patched by replacing exact lines of this commit; if those lines have
moved, the script stops and says which.

Prints, per level, each server's answers/s and its ratio to the peer (the median
over the rounds of the ratio within each round) and the CPU per answer; writes
`bench/results/bounds.json`. Needs Debian's wrk and webhook (as `intake.py`). Run:
`.venv/bin/python bench/bounds.py [--rounds 3] [--connections 1,8,32,64] [--variants ...]
[--name bounds]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import intake
import stack
from stack import Processes

Patch = tuple[str, str, str]  # (file, the exact text replaced, its replacement)

# The changes each variant makes.
_PENDING = """            if isinstance(result, Pending):
                with redis_unavailable():
"""
_PING = """            if isinstance(result, Pending):  # bench/bounds.py: answer after one PING
                {plan}pinged = asyncio.ensure_future(self._linked().execute(("PING",)))
                outcome.result = "queued"
                pinged.add_done_callback(lambda _: respond(Answer(202, {{"result": "queued"}})))
                return
"""
_NO_WRITES_SCRIPT = '''SUBMIT = """
-- bench/bounds.py: the layout walked as the real script walks it; no command runs.
local replies, i = {}, 1
while i <= #ARGV do
  local npairs = tonumber(ARGV[i + 3])
  i = i + 4
  local answers = {}
  for p = 1, npairs do
    i = i + tonumber(ARGV[i]) + 1 + NVALUES
    answers[p] = {1, 1}
  end
  replies[#replies + 1] = answers
end
return replies
""".replace("NVALUES", str(PAIR_VALUES))
'''
_PLAN = "def plan(settings: Settings, events: Sequence[TagEvent], *,\n"
_COPIED_PLAN = """_planned: list[Plan] = []
_copies = itertools.count(1)


def plan(settings: Settings, events: Sequence[TagEvent], *,  # bench/bounds.py: no_plan
         clock: Callable[[], float], count_as: str | None = None) -> Plan | None:
    if not _planned:
        first = _plan(settings, events, clock=clock, count_as=count_as)
        if first is None:
            return None
        _planned.append(first)
    args, n = list(_planned[0].args), next(_copies)
    nseen = args[4]  # one delivery of one pair: 4 delivery values, then the pair's
    for k in range(5, 5 + nseen + 1):  # its seen keys, then the record's first value, the id
        args[k] = f"{args[k]}-{n}"
    return Plan(args=args, candidates=_planned[0].candidates)


def _plan(settings: Settings, events: Sequence[TagEvent], *,
"""
VARIANTS: dict[str, list[Patch]] = {
    "whole": [],
    "no_writes": [("worker/submission.py", "SUBMIT = _script()\n", _NO_WRITES_SCRIPT)],
    "no_plan": [("worker/submission.py", _PLAN, _COPIED_PLAN)],
    "plan_ping": [("webhook/front.py", _PENDING, _PING.format(
        plan="self.web.engine.plan(result.events, count_as=forge.name)\n                ")
        + _PENDING)],
    "ping": [("webhook/front.py", _PENDING, _PING.format(plan="") + _PENDING)],
}


@contextmanager
def copies(variants: dict[str, list[Patch]]) -> Iterator[dict[str, Path]]:
    """A patched worktree of this commit per variant, removed on the way out."""
    made: dict[str, Path] = {}
    try:
        for name, patches in variants.items():
            path = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
            path.rmdir()
            subprocess.run(["git", "-C", str(stack.ROOT), "worktree", "add", "--detach",
                            str(path), "HEAD"], check=True, capture_output=True)
            made[name] = path
            for file, old, new in patches:
                _patch(path / file, old, new)
        yield made
    finally:
        for path in made.values():
            subprocess.run(["git", "-C", str(stack.ROOT), "worktree", "remove", "--force",
                            str(path)], check=False, capture_output=True)


def _patch(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"{path.name} no longer has the lines this benchmark "
                         f"replaces:\n{old}")
    path.write_text(text.replace(old, new))


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    names = [n for n in args.variants.split(",") if n]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; known: {sorted(VARIANTS)}")
    levels = [int(c) for c in args.connections.split(",")]
    pools = intake.write_pools(workdir, args.pool)
    runs: list[dict[str, Any]] = []
    with copies({name: VARIANTS[name] for name in names}) as trees, Processes(workdir) as procs:
        servers: dict[str, tuple[str, dict[str, str], str | None]] = {}
        for name, tree in trees.items():
            redis_url = stack.start_redis(procs, name=f"redis-{name}")
            config = stack.write_config(procs, {"myapp": {"repository": intake.REPOSITORY}})
            env = stack.product_env(redis_url, config)
            url = stack.start_web(procs, env, name=f"web-{name}", tree=tree) + "/webhook"
            servers[name] = (url, {"web": f"web-{name}", "redis": f"redis-{name}"}, redis_url)
        servers["peer"] = (intake.start_peer(procs), {"peer": "peer"}, None)
        for url, _, _ in servers.values():
            intake.wrk(url, pools["duplicate"], 8, 2)  # warm up
        for round_ in range(1, args.rounds + 1):
            for connections in levels:
                for server, (url, roles, redis_url) in servers.items():
                    if redis_url is not None:
                        intake.flush(redis_url)
                    figures = intake.measure(procs, roles, url, pools["accepted"], connections,
                                      args.duration)
                    runs.append({"server": server, "round": round_,
                                 "connections": connections, **figures})
                    _show(runs[-1])
    return {"levels": levels, "duration_s": args.duration, "rounds": args.rounds,
            "variants": {name: [file for file, _, _ in VARIANTS[name]] for name in names},
            "runs": runs, "summary": summary(runs)}


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per server and level: median answers/s, median ratio to the peer within each
    round (with its range), median CPU per answer of each process."""
    by_key = {(r["server"], r["connections"], r["round"]): r for r in runs}
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        cells.setdefault((r["server"], r["connections"]), []).append(r)
    found = []
    for (server, connections), rs in cells.items():
        ratios = [r["requests_per_s"] / peer["requests_per_s"] for r in rs
                  if (peer := by_key.get(("peer", connections, r["round"])))]
        entry: dict[str, Any] = {
            "server": server, "connections": connections, "rounds": len(rs),
            "requests_per_s": round(statistics.median(r["requests_per_s"] for r in rs), 1),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in rs), 2)}
        for cpu in ("cpu_us_per_answer", "cpu_us_per_answer_with_drain"):
            entry[cpu] = intake.cpu_medians(rs, cpu)
        if server != "peer" and ratios:
            entry["over_peer"], entry["over_peer_range"] = intake.spread(ratios)
        found.append(entry)
    return found


def _show(r: dict[str, Any]) -> None:
    print(f"{r['server']:10} c={r['connections']:<3} {r['requests_per_s']:8.0f} req/s  "
          f"p99 {r['p99_ms']:7.2f} ms  cpu us/answer: {intake.cpu_text(r)}  "
          f"drain {r['drain_s']:.1f} s",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    intake.load_options(parser)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=3, help="sweeps; figures are medians")
    parser.add_argument("--name", default="bounds", help="results file name")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-bounds-") as tmp:
        results = run(args, Path(tmp))
    print(f"\nmedians of {args.rounds} rounds (ratio: ours/peer within a round, "
          "then the median [range]); CPU us per answer")
    for s in sorted(results["summary"], key=lambda s: (s["connections"], s["server"])):
        ratio = (f"x{s['over_peer']} {s['over_peer_range']}" if "over_peer" in s
                 else "")
        print(f"  c={s['connections']:<3} {s['server']:10} {s['requests_per_s']:8.0f} req/s "
              f"{ratio:22} p99 {s['p99_ms']:6.2f} ms  {intake.cpu_text(s)}")
    path = stack.write_results(args.name, {**results,
                                          "elapsed_s": round(time.monotonic() - started)})
    print(f"wrote {path.relative_to(stack.ROOT)}")


if __name__ == "__main__":
    main()
