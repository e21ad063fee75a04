"""Webhook intake, side by side with a peer: our gunicorn web process vs adnanh/webhook.

Both receive the same signed GitHub tag pushes (the intake tests' fixture, compact
JSON, about 1.7 KiB) and check the same HMAC-SHA256 over the raw body
(`X-Hub-Signature-256`), from Debian's `wrk` at each concurrency level (connections),
one run, interleaved level by level:

- ours: the Procfile's web line (`gunicorn --config webhook/gunicorn_conf.py
  'webhook:create_app()'`) with a real redis-server started here and app `myapp`
  configured for `acme/myapp`. No worker runs, so every accepted release stays queued.
- peer: Debian's `webhook` (adnanh/webhook) with one hook whose trigger rule is
  `payload-hmac-sha256` over the same secret AND a regex on `ref` (our tag patterns),
  running `/bin/true` (started in the background, as the peer does by default).

Paths, each measured separately and named by what the server answers:

- `accepted`: every request is a new tag push (its own commit and delivery id), so we
  answer 202 `queued`: verify, parse, dedupe, record and enqueue in Redis. The pool of
  unique pushes is larger than a run can send; the status counts prove it (a wrap-around
  would show as 200 duplicates). Redis is flushed before each level so queue length does
  not carry over. The peer answers 200 and runs `/bin/true`.
- `duplicate`: one push (sent once before the run, into an emptied Redis, so its
  release is alone in the queue) resent with the same delivery id: 200 `duplicate`.
  The peer has no duplicate detection, so there is no peer figure.
- `ignored`: a signed push of a tag no pattern matches: we answer 200 `ignored`, the
  peer's rule does not match (it answers 401, configured so).
- `bad_signature`: a push signed with another secret: 401 from us, 500 from the peer
  (its answer to a failed HMAC).

With `--baseline PATH` (a checkout of an earlier commit, e.g. a `git worktree`), that
commit's web process is measured too, interleaved with ours, as `baseline`: a fair
before/after on a noisy machine. With `--rounds N` the whole sweep runs N times; each
ratio is computed within a round (the servers met the same machine) and the summary
gives, per server, path and level, the median of the rounds' figures and of their
ratios: on a shared machine one disturbed run moves a single figure by a third.
With `--redis unix` the web process reaches Redis over a Unix socket instead of
loopback TCP, as it can where Redis runs beside it.

Each run also records the CPU time per answer of the server's processes (the peer's
with the commands it ran, counted until the machine is quiet again) and of Redis, from
`/proc` (`cpu_us_per_answer`; with the drain: `cpu_us_per_answer_with_drain`).

Prints requests/s, p50 and p99 per server and path and our/their ratios; writes
`bench/results/intake.json`. Run: `.venv/bin/python bench/intake.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import stack
from redis import Redis
from stack import Processes

LUA = Path(__file__).resolve().parent / "intake.lua"
REPOSITORY = "acme/myapp"
TAG = "v1.0-green"
PATHS = ("accepted", "duplicate", "ignored", "bad_signature")
PEER_RULE_REGEX = r"^refs/tags/v.*-(blue|green)$"
# What each server answers on each path; any other status in a run is counted apart
# (a pool that wrapped around would show as duplicates counted as accepted deliveries).
EXPECTED = {"ours": {"accepted": "202", "duplicate": "200", "ignored": "200",
                     "bad_signature": "401"},
            "peer": {"accepted": "200", "ignored": "401", "bad_signature": "500"}}


def pool_line(body: bytes, delivery: str, secret: str = stack.SECRET) -> str:
    return f"{body.decode()}\t{delivery}\t{stack.signature(body, secret)}\n"


def write_pools(workdir: Path, size: int) -> dict[str, Path]:
    """One pool file per path: `size` unique pushes for `accepted`, one request for the rest."""
    template = stack.tag_push(TAG, commit="C" * 40, repository=REPOSITORY).decode()
    pools = {name: workdir / f"pool-{name}.txt" for name in PATHS}
    with open(pools["accepted"], "w") as out:
        for i in range(size):
            body = template.replace("C" * 40, f"{i:040x}").encode()
            out.write(pool_line(body, f"bench-accepted-{i}"))
    dup = stack.tag_push(TAG, commit="d" * 40, repository=REPOSITORY)
    pools["duplicate"].write_text(pool_line(dup, "bench-duplicate"))
    ignored = stack.tag_push("v1.0-purple", commit="e" * 40, repository=REPOSITORY)
    pools["ignored"].write_text(pool_line(ignored, "bench-ignored"))
    bad = stack.tag_push(TAG, commit="f" * 40, repository=REPOSITORY)
    pools["bad_signature"].write_text(pool_line(bad, "bench-bad", "not-the-secret"))
    return pools


def start_peer(procs: Processes, *, wait_for_command: bool = False,
               name: str = "peer") -> str:
    """adnanh/webhook with a payload-hmac-sha256 + ref regex rule running /bin/true: by
    default it answers at once and runs the command in the background (its default);
    with `wait_for_command` it answers once the command has run
    (`include-command-output-in-response`), i.e. after its work, as ours does."""
    exe = shutil.which("webhook")
    assert exe is not None  # run() checked
    hooks = [{
        "id": "deploy", "execute-command": "/bin/true", "command-working-directory": "/",
        "response-message": "queued", "http-methods": ["POST"],
        "include-command-output-in-response": wait_for_command,
        "trigger-rule-mismatch-http-response-code": 401,
        "trigger-rule": {"and": [
            {"match": {"type": "payload-hmac-sha256", "secret": stack.SECRET,
                       "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}},
            {"match": {"type": "regex", "regex": PEER_RULE_REGEX,
                       "parameter": {"source": "payload", "name": "ref"}}}]}}]
    path = procs.workdir / f"hooks-{name}.json"
    path.write_text(json.dumps(hooks))
    port = stack.free_port()
    procs.start(name, [exe, "-hooks", str(path), "-ip", "127.0.0.1", "-port", str(port)])
    url = f"http://127.0.0.1:{port}/hooks/deploy"
    stack.wait_until(name, lambda: stack.answers(f"http://127.0.0.1:{port}/"), 10)
    return url


def wrk(url: str, pool: Path, connections: int, duration: float) -> dict[str, Any]:
    """One wrk run; its BENCH line, with requests/s added."""
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
         "--timeout", "10s", "-s", str(LUA), url, "--", str(pool), str(threads)],
        capture_output=True, text=True, timeout=duration + 120, check=False)
    match = re.search(r"^BENCH (.*)$", out.stdout, re.M)
    if match is None:
        raise RuntimeError(f"wrk gave no figures: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    run: dict[str, Any] = json.loads(match.group(1))
    seconds = run["duration_us"] / 1e6
    latency = run.pop("latency_us")
    return {"connections": connections, "threads": threads,
            "requests_per_s": round(run["requests"] / seconds, 1),
            "p50_ms": round(latency["p50"] / 1000, 2), "p90_ms": round(latency["p90"] / 1000, 2),
            "p99_ms": round(latency["p99"] / 1000, 2), "mean_ms": round(latency["mean"] / 1000, 2),
            "max_ms": round(latency["max"] / 1000, 2), **run}


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy so far (all cores, from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


QUIET_CORES, QUIET_WINDOW_S, SETTLE_LIMIT_S = 0.25, 0.5, 60.0


def measure(procs: Processes, roles: dict[str, str], url: str, pool: Path,
            connections: int, duration: float) -> dict[str, Any]:
    """One wrk run with the CPU per answer of each process in `roles` (role -> name)."""
    pids = {role: procs.procs[name].pid for role, name in roles.items()}
    settle()
    before = {role: stack.cpu_seconds(pid) for role, pid in pids.items()}
    figures = wrk(url, pool, connections, duration)
    during = {role: stack.cpu_seconds(pid) for role, pid in pids.items()}
    figures["drain_s"] = settle()
    after = {role: stack.cpu_seconds(pid) for role, pid in pids.items()}
    n = figures["requests"]
    figures["cpu_us_per_answer"] = {role: round((during[role] - before[role]) / n * 1e6, 1)
                                    for role in pids}
    figures["cpu_us_per_answer_with_drain"] = {
        role: round((after[role] - before[role]) / n * 1e6, 1) for role in pids}
    return figures


def settle() -> float:
    """Wait until the machine is quiet (under `QUIET_CORES` busy over `QUIET_WINDOW_S`);
    the seconds that took (`SETTLE_LIMIT_S` at most). A server that answers before it
    has done its work (the peer starts its command in the background) is still working
    after wrk stops: its next run, or the next server's, must not pay for that, and the
    time says how long the work went on after the last answer."""
    started = time.monotonic()
    while time.monotonic() - started < SETTLE_LIMIT_S:
        before = busy_seconds()
        time.sleep(QUIET_WINDOW_S)
        if (busy_seconds() - before) / QUIET_WINDOW_S < QUIET_CORES:
            return round(max(0.0, time.monotonic() - started - QUIET_WINDOW_S), 2)
    return SETTLE_LIMIT_S


def flush(redis_url: str) -> None:
    with Redis.from_url(redis_url) as redis:
        redis.flushall()


def queue_length(redis_url: str) -> int:
    with Redis.from_url(redis_url) as redis:
        return int(redis.llen("rq:queue:deploy"))


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if shutil.which("wrk") is None or shutil.which("webhook") is None:
        raise SystemExit("intake.py needs Debian's wrk and webhook: "
                         "bash scripts/system-deps.sh wrk webhook")
    levels = [int(c) for c in args.connections.split(",")]
    pools = write_pools(workdir, args.pool)
    with Processes(workdir) as procs:
        redis_url = stack.start_redis(procs, unix=args.redis == "unix")
        config = stack.write_config(procs, {"myapp": {"repository": REPOSITORY}})
        env = stack.product_env(redis_url, config)
        servers = {"ours": stack.start_web(procs, env, workers=args.web_concurrency,
                                           name="ours")}
        if args.baseline:
            servers["baseline"] = stack.start_web(procs, env, workers=args.web_concurrency,
                                                  name="baseline", tree=args.baseline)
        servers = {name: url + "/webhook" for name, url in servers.items()}
        servers["peer"] = start_peer(procs)
        servers["peer_sync"] = start_peer(procs, wait_for_command=True, name="peer_sync")
        for url in servers.values():  # warm up: imports, connections, caches
            wrk(url, pools["duplicate"], 8, 2)
        runs: list[dict[str, Any]] = []
        for round_ in range(1, args.rounds + 1):
            runs += sweep(args, procs, servers, pools, levels, redis_url, round_)
        baseline = f"ours at {stack.git_commit(args.baseline)}" if args.baseline else None
        return {"levels": levels, "duration_s": args.duration, "pool": args.pool,
                "rounds": args.rounds, "redis": args.redis,
                "web_concurrency": args.web_concurrency or "gunicorn_conf default",
                "baseline": baseline, "runs": runs, "medians": medians(runs),
                "ratios": ratios(runs), "ratios_to_peer_sync": ratios(runs, other="peer_sync"),
                "ratios_to_baseline": ratios(runs, other="baseline") if baseline else []}


def sweep(args: argparse.Namespace, procs: Processes, servers: dict[str, str],
          pools: dict[str, Path], levels: list[int], redis_url: str,
          round_: int) -> list[dict[str, Any]]:
    """One wrk run per level, path and server, interleaved, each on a quiet machine."""
    runs: list[dict[str, Any]] = []
    for connections in levels:
        for path in args.paths.split(","):
            for server, url in servers.items():
                peer = server.startswith("peer")
                if peer and path == "duplicate":
                    continue
                if server == "peer_sync" and path != "accepted":
                    continue  # it differs from the peer only where the command runs
                if not peer and path in ("accepted", "duplicate"):
                    flush(redis_url)  # a short queue, as in real use
                if not peer and path == "duplicate":
                    seed = stack.http("POST", url, *_request(pools["duplicate"]))
                    assert seed.status in (200, 202), (seed.status, seed.body)
                # The server's CPU per answer (the peer's with its commands'), and Redis's.
                roles = {"server": server} if peer else {"server": server, "redis": "redis"}
                figures = measure(procs, roles, url, pools[path], connections, args.duration)
                figures["completed_per_s"] = round(
                    figures["requests"] / (figures["duration_us"] / 1e6 + figures["drain_s"]),
                    1)
                if not peer and path == "accepted":
                    figures["queue_length_after"] = queue_length(redis_url)
                expected = EXPECTED["peer" if peer else "ours"][path]
                figures["unexpected_statuses"] = {
                    status: n for status, n in figures["statuses"].items() if status != expected}
                runs.append({"server": server, "path": path, "round": round_,
                             **figures})
                _show(runs[-1])
    return runs


def _request(pool: Path) -> tuple[bytes, dict[str, str]]:
    body, delivery, sig = pool.read_text().rstrip("\n").split("\t")
    headers = stack.github_headers(body.encode(), delivery)
    headers["X-Hub-Signature-256"] = sig
    return body.encode(), headers


def ratios(runs: list[dict[str, Any]], other: str = "peer") -> list[dict[str, Any]]:
    """Ours/other for each level and path both measured (>1 throughput: we are faster),
    computed within each round, then the median over the rounds, with their range."""
    by_key = {(r["server"], r["path"], r["connections"], r["round"]): r for r in runs}
    per_cell: dict[tuple[str, int], dict[str, list[float]]] = {}
    for (server, path, connections, round_), ours in by_key.items():
        theirs = by_key.get((other, path, connections, round_))
        if server != "ours" or theirs is None:
            continue
        cell = per_cell.setdefault((path, connections), {"throughput": [], "p99": [],
                                                         "completed": []})
        cell["throughput"].append(ours["requests_per_s"] / theirs["requests_per_s"])
        cell["p99"].append(ours["p99_ms"] / theirs["p99_ms"])
        cell["completed"].append(ours["completed_per_s"] / theirs["completed_per_s"])
    found = []
    for (path, connections), cell in per_cell.items():
        entry: dict[str, Any] = {"path": path, "connections": connections}
        for figure, values in cell.items():
            (entry[f"{figure}_ours_over_{other}"],
             entry[f"{figure}_ours_over_{other}_range"]) = spread(values)
        found.append(entry)
    return found


def spread(ratios: list[float]) -> tuple[float, list[float]]:
    """The median of the rounds' ratios and their range, as the summaries give them."""
    return round(statistics.median(ratios), 2), [round(min(ratios), 2), round(max(ratios), 2)]


def medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each server's median figures per path and level over the rounds."""
    cells: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in runs:
        cells.setdefault((r["server"], r["path"], r["connections"]), []).append(r)
    return [{"server": server, "path": path, "connections": connections,
             "rounds": len(found),
             **{figure: round(statistics.median(r[figure] for r in found), 2)
                for figure in ("requests_per_s", "p50_ms", "p99_ms", "completed_per_s",
                               "drain_s")},
             "cpu_us_per_answer": cpu_medians(found)}
            for (server, path, connections), found in cells.items()]


def cpu_medians(runs: list[dict[str, Any]], figure: str = "cpu_us_per_answer"
                ) -> dict[str, float]:
    """Each process's median CPU per answer over `runs` (as `measure` records it)."""
    return {role: round(statistics.median(r[figure][role] for r in runs), 1)
            for role in runs[0][figure]}


def cpu_text(figures: dict[str, Any]) -> str:
    """`measure`'s CPU per answer, for a printed line: `server 183  redis 57`."""
    return "  ".join(f"{role} {us:.0f}" for role, us in figures["cpu_us_per_answer"].items())


def _show(r: dict[str, Any]) -> None:
    print(f"{r['server']:8} {r['path']:13} c={r['connections']:<3} "
          f"{r['requests_per_s']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
          f"p99 {r['p99_ms']:7.2f} ms  drain {r['drain_s']:5.2f} s  "
          f"statuses {r['statuses']}  cpu µs/answer: {cpu_text(r)}"
          + (f"  errors {r['errors']}" if any(r["errors"].values()) else "")
          + (f"  UNEXPECTED {r['unexpected_statuses']}" if r["unexpected_statuses"]
             else ""), flush=True)


def load_options(parser: argparse.ArgumentParser) -> None:
    """The load's options, which `bench/bounds.py` shares: levels, run length, pool."""
    parser.add_argument("--connections", default="1,8,32,64",
                        help="concurrency levels (wrk connections), comma-separated")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per wrk run")
    # Each wrk thread sends its own half of the pool and wraps around at its end; the
    # threads are not even (one sent 26,182 of a 6 s run's 43,482 at 64 connections).
    parser.add_argument("--pool", type=int, default=100000,
                        help="unique pushes for the accepted path (more than a run sends)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    load_options(parser)
    parser.add_argument("--paths", default=",".join(PATHS),
                        help=f"paths to measure, comma-separated (default: {','.join(PATHS)})")
    parser.add_argument("--web-concurrency", type=int, default=None,
                        help="gunicorn workers (default: as webhook/gunicorn_conf.py decides)")
    parser.add_argument("--baseline", type=lambda p: Path(p).resolve(), default=None,
                        help="a checkout of an earlier commit, measured alongside as `baseline`")
    parser.add_argument("--rounds", type=int, default=1,
                        help="sweeps to run; figures and ratios are their medians")
    parser.add_argument("--redis", choices=("tcp", "unix"), default="tcp",
                        help="how the web process reaches Redis: loopback TCP (default) or "
                             "a Unix socket, as where Redis runs beside it")
    parser.add_argument("--name", default="intake", help="results file name")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        results = run(args, Path(tmp))
    if args.rounds > 1:
        print(f"\nmedians of {args.rounds} rounds")
        for m in results["medians"]:
            print(f"  {m['server']:9} {m['path']:13} c={m['connections']:<3} "
                  f"{m['requests_per_s']:8.0f} req/s  p50 {m['p50_ms']:6.2f} ms  "
                  f"p99 {m['p99_ms']:7.2f} ms  drain {m['drain_s']:5.2f} s  "
                  f"cpu µs/answer: {cpu_text(m)}")
    for other in ("peer", "peer_sync", "baseline"):
        found = results["ratios"] if other == "peer" else results[f"ratios_to_{other}"]
        if found:
            print(f"\nours/{other}, median of the rounds [range] (throughput >1: ours "
                  "faster; p99 <1: ours quicker)")
        for r in found:
            spread = r[f"throughput_ours_over_{other}_range"]
            print(f"  {r['path']:13} c={r['connections']:<3} throughput "
                  f"x{r[f'throughput_ours_over_{other}']} {spread}"
                  f"  p99 x{r[f'p99_ours_over_{other}']}"
                  f"  completed x{r[f'completed_ours_over_{other}']}")
    print(f"wrote {stack.write_results(args.name, results).relative_to(stack.ROOT)}")


if __name__ == "__main__":
    main()
