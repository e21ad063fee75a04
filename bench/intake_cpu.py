"""CPU time and Redis round trips of one webhook delivery, per path, inside one process.

Where `bench/intake.py` measures what a forge sees through gunicorn (and so also the
machine's noise), this calls the WSGI application directly, one request at a time,
and reads `time.process_time()`: the CPU one delivery costs the web process, which
bounds its throughput (two cores / CPU per request), and is steadier than wall time on
a shared machine. It also counts the Redis commands each delivery sends (Redis's own
`INFO commandstats`, read before and after each path). The app's log lines go to a
file, as stderr does in production. Paths as in intake.py: `accepted`, `duplicate` (of
a release alone in its queue), `ignored`, `bad_signature`.

`--profile PATH` prints cProfile's top functions for one path (sorted by cumulative
time). Writes `bench/results/intake_cpu.json`. Run:
`.venv/bin/python bench/intake_cpu.py [--requests 1000] [--profile accepted]`.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stack
from redis import Redis
from stack import Processes

TAG = "v1.0-green"


def environ(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """A WSGI environ for POST /webhook, as gunicorn would build it."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/webhook", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
        "wsgi.multiprocess": True, "wsgi.run_once": False, "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": headers["Content-Type"]}
    for name, value in headers.items():
        if name != "Content-Type":
            env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def deliveries(n: int) -> dict[str, list[tuple[bytes, dict[str, str]]]]:
    def push(i: int, tag: str = TAG, secret: str = stack.SECRET) -> tuple[bytes, dict[str, str]]:
        body = stack.tag_push(tag, commit=f"{i + 1:040x}")
        return body, stack.github_headers(body, f"cpu-{tag}-{i}", secret)

    return {"accepted": [push(i) for i in range(n)],
            "duplicate": [push(10**9)] * n,
            "ignored": [push(i, "v1.0-purple") for i in range(n)],
            "bad_signature": [push(7, secret="not-the-secret")] * n}


def commands(redis: Redis) -> int:
    stats: dict[str, Any] = redis.info("commandstats")  # type: ignore[assignment]
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with Processes(workdir) as procs:
        redis_url = stack.start_redis(procs)
        config = stack.write_config(procs, {"myapp": {"repository": "acme/myapp"}})
        os.environ.update(stack.product_env(redis_url, config))
        sys.path.insert(0, str(stack.TREE))
        from webhook import create_app  # the product, in this process

        logging.getLogger("bluegreen").addHandler(logging.FileHandler(workdir / "app.log"))

        app = create_app()
        redis = Redis.from_url(redis_url)
        statuses: list[str] = []

        def call(body: bytes, headers: dict[str, str]) -> None:
            answer = app(environ(body, headers), lambda s, h, e=None: statuses.append(s))
            b"".join(answer)

        sets = deliveries(args.requests)
        warm = deliveries(1)
        call(*warm["accepted"][0])  # warm up: lazy imports, connections
        for _ in range(100):
            call(*warm["ignored"][0])
        results: dict[str, Any] = {}
        for path, requests in sets.items():
            if path in ("accepted", "duplicate"):
                redis.flushall()  # a short queue, as in real use
            if path == "duplicate":
                call(*requests[0])
            profile = cProfile.Profile() if args.profile == path else None
            before, cpu, wall = commands(redis), time.process_time(), time.perf_counter()
            _timed(call, requests, profile)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            sent = commands(redis) - before
            results[path] = {"status": statuses[-1], "requests": len(requests),
                             "cpu_ms_per_request": round(cpu / len(requests) * 1000, 3),
                             "wall_ms_per_request": round(wall / len(requests) * 1000, 3),
                             "redis_commands_per_request": round(sent / len(requests), 1)}
            print(f"{path:14} {statuses[-1]:16} cpu {results[path]['cpu_ms_per_request']:.3f} "
                  f"ms/req  wall {results[path]['wall_ms_per_request']:.3f} ms/req  redis "
                  f"commands {results[path]['redis_commands_per_request']}/req", flush=True)
            if profile is not None:
                pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    return {"paths": results, "profiled": args.profile}


def _timed(call: Callable[[bytes, dict[str, str]], None],
           requests: list[tuple[bytes, dict[str, str]]], profile: cProfile.Profile | None) -> None:
    if profile is not None:
        profile.enable()
    for body, headers in requests:
        call(body, headers)
    if profile is not None:
        profile.disable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="deliveries per path")
    parser.add_argument("--profile", default=None, help="cProfile this path (slower)")
    parser.add_argument("--name", default="intake_cpu", help="results file name")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-intake-cpu-") as tmp:
        results = run(args, Path(tmp))
    print(f"wrote {stack.write_results(args.name, results).relative_to(stack.ROOT)}")


if __name__ == "__main__":
    main()
