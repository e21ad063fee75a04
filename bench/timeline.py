"""Where one accepted delivery's time goes inside the web worker, at one connection.

`bench/bounds.py` says which parts of the accepted path keep it from the Go peer by
cutting them out; this says how long each part takes as it runs, one delivery after
the other. It makes a copy of this commit (`git worktree`, removed after) with
time stamps (`time.perf_counter_ns`) at the points below, serves the accepted-path
pool of `intake.py` (new signed tag pushes) from one web worker at one connection,
and prints each stretch's median and p90 over the run:

- `read, verify, parse, match`: from the request's bytes arriving to `plan()`;
- `plan()`: the script's arguments for the delivery;
- `to the socket`: the group commit and the link's call, up to the write;
- `write to Redis`: packing the call and the write system call (on loopback the
  sender's write also runs the receiver's side of TCP);
- `Redis`: from the write's end to the reply's first bytes: Redis waking, reading,
  running the script, writing, and this worker waking;
- `reply to answer`: reading the reply, its callbacks, the answer built;
- `write the answer`: the write system call to the client;
- `after the answer`: the log line and counts (`Front.conclude`), while the client
  reads the answer and sends the next delivery;
- `answer to next request`: from the answer written to the worker reading the next
  request (it reads it once it is done with the last delivery).

Also Redis's own time per script call (`INFO commandstats`) and answers/s. The stamps
cost about a microsecond each. The copy is patched by replacing exact lines of this
commit; if those lines have moved, the script stops and says which. Writes
`bench/results/timeline.json`. Needs Debian's wrk (as `intake.py`). Run:
`.venv/bin/python bench/timeline.py [--runs 3] [--duration 6]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import intake
import stack
from bounds import Patch, copies
from redis import Redis
from stack import Processes

# Each stamp appends (point, ns) to a list kept in webhook/front.py; a worker writes
# it out every few thousand stamps to $BENCH_TIMELINE_DIR/<pid>.txt.
_STORE = """import asyncio
"""
_STORE_NEW = """import asyncio
import os as _bench_os
import time as _bench_time

_STAMPS: list[tuple[str, int]] = []  # bench/timeline.py


def _stamp(point: str) -> None:
    _STAMPS.append((point, _bench_time.perf_counter_ns()))
    if point == "done" and len(_STAMPS) > 4000:
        path = f"{_bench_os.environ['BENCH_TIMELINE_DIR']}/{_bench_os.getpid()}.txt"
        with open(path, "a") as out:
            out.writelines(f"{p} {t}\\n" for p, t in _STAMPS)
        _STAMPS.clear()
"""


_ANSWER = """        self.transport.write(raw_response(result.status,
                                          self.server_state.default_headers + headers, body))
"""
_PACK = ("        data = hiredis.pack_command(command)"
         "  # before the callback waits, as in `send`\n")
STAMPS: list[Patch] = [
    ("webhook/front.py", _STORE, _STORE_NEW),
    ("webhook/protocol.py", "from webhook.front import Front\n",
     "from webhook.front import Front, _stamp\n"),
    ("webhook/protocol.py", """    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        delivery = self._delivery
""", """    def data_received(self, data: bytes) -> None:
        _stamp("in")
        super().data_received(data)
        delivery = self._delivery
"""),
    ("webhook/front.py", """                with redis_unavailable():
                    planned = self.web.engine.plan(result.events, count_as=forge.name)
""", """                _stamp("plan")
                with redis_unavailable():
                    planned = self.web.engine.plan(result.events, count_as=forge.name)
                _stamp("planned")
"""),
    ("webhook/protocol.py", _ANSWER,
     '        _stamp("answer")\n' + _ANSWER + '        _stamp("answered")\n'),
    ("webhook/protocol.py", """        finally:
            delivery.front.conclude(delivery.outcome, result)
""", """        finally:
            delivery.front.conclude(delivery.outcome, result)
            _stamp("done")
"""),
    ("webhook/redislink.py", _PACK + """        self._waiting.append(callback)
        self._transport.write(data)
""", """        from webhook.front import _stamp
        _stamp("send")
""" + _PACK + """        self._waiting.append(callback)
        self._transport.write(data)
        _stamp("sent")
"""),
    ("webhook/redislink.py", """    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
""", """    def data_received(self, data: bytes) -> None:
        from webhook.front import _stamp
        _stamp("reply")
        self._reader.feed(data)
"""),
]
# Each stretch: its name, and the stamps it runs between.
STRETCHES = [
    ("read, verify, parse, match", "in", "plan"),
    ("plan()", "plan", "planned"),
    ("to the socket", "planned", "send"),
    ("write to Redis", "send", "sent"),
    ("Redis", "sent", "reply"),
    ("reply to answer", "reply", "answer"),
    ("write the answer", "answer", "answered"),
    ("after the answer", "answered", "done"),
]
WHOLE = ("request in to answer written", "in", "answered")
BETWEEN = "answer to next request"


def deliveries(stamp_dir: Path) -> list[dict[str, int]]:
    """Each delivery's stamps (the first of each point), from the worker's files."""
    found: list[dict[str, int]] = []
    for path in sorted(stamp_dir.glob("*.txt")):
        current: dict[str, int] = {}
        for line in path.read_text().splitlines():
            point, ns = line.split()
            if point == "in" and "done" in current:
                found.append(current)
                current = {}
            current.setdefault(point, int(ns))
        if "done" in current:
            found.append(current)
    return found


def stretches(stamped: list[dict[str, int]]) -> dict[str, list[float]]:
    """Microseconds of each stretch per delivery that has all stamps."""
    points = {p for _, a, b in STRETCHES for p in (a, b)}
    complete = [d for d in stamped if points <= d.keys()]
    found: dict[str, list[float]] = {name: [] for name, _, _ in [*STRETCHES, WHOLE]}
    found[BETWEEN] = []
    for before, d in zip([None, *complete], complete, strict=False):
        for name, a, b in [*STRETCHES, WHOLE]:
            found[name].append((d[b] - d[a]) / 1000)
        if before is not None and d["in"] > before["answered"]:
            found[BETWEEN].append((d["in"] - before["answered"]) / 1000)
    return found


def script_us_per_call(redis: Redis) -> float:
    """Redis's own time per script call since its statistics were last reset."""
    stats: dict[str, Any] = redis.info("commandstats")  # type: ignore[assignment]
    return float(stats.get("cmdstat_evalsha", {}).get("usec_per_call", "nan"))


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    pools = intake.write_pools(workdir, args.pool)
    runs: list[dict[str, Any]] = []
    with copies({"timeline": STAMPS}) as trees, Processes(workdir) as procs:
        for n in range(1, args.runs + 1):
            stamp_dir = workdir / f"stamps-{n}"
            stamp_dir.mkdir()
            redis_url = stack.start_redis(procs, name=f"redis-{n}")
            config = stack.write_config(procs, {"myapp": {"repository": intake.REPOSITORY}})
            env = {**stack.product_env(redis_url, config), "BENCH_TIMELINE_DIR": str(stamp_dir)}
            url = stack.start_web(procs, env, workers=1, name=f"web-{n}",
                                  tree=trees["timeline"]) + "/webhook"
            warm = intake.wrk(url, pools["duplicate"], 1, 2)["requests"]  # warm up
            redis = Redis.from_url(redis_url)
            redis.flushall()
            redis.config_resetstat()  # the script's time of the accepted deliveries alone
            intake.settle()
            figures = intake.wrk(url, pools["accepted"], 1, args.duration)
            script_us = script_us_per_call(redis)
            procs.stop(f"web-{n}")
            procs.stop(f"redis-{n}")
            # The warm-up's deliveries are left out (the last few hundred of the run are
            # not written: the worker writes its stamps in batches).
            found = stretches(deliveries(stamp_dir)[warm:])
            runs.append({
                "run": n, "requests_per_s": figures["requests_per_s"],
                "p50_ms": figures["p50_ms"], "script_us_per_call": round(script_us, 1),
                "deliveries": len(found[WHOLE[0]]),
                "stretches_us": {name: {"median": round(statistics.median(v), 1),
                                        "p90": round(stack.percentile(v, 90), 1)}
                                 for name, v in found.items() if v}})
            _show(runs[-1])
    return {"duration_s": args.duration, "connections": 1, "web_workers": 1, "runs": runs}


def _show(r: dict[str, Any]) -> None:
    print(f"\nrun {r['run']}: {r['requests_per_s']:.0f} answers/s, p50 {r['p50_ms']} ms, "
          f"script {r['script_us_per_call']} us per call in Redis, "
          f"{r['deliveries']} deliveries stamped")
    for name, s in r["stretches_us"].items():
        print(f"  {name:30} median {s['median']:7.1f} us   p90 {s['p90']:7.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs, each with fresh processes")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per run")
    parser.add_argument("--pool", type=int, default=50000, help="unique pushes")
    parser.add_argument("--name", default="timeline", help="results file name")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-timeline-") as tmp:
        results = run(args, Path(tmp))
    print(f"wrote {stack.write_results(args.name, results).relative_to(stack.ROOT)}")


if __name__ == "__main__":
    main()
