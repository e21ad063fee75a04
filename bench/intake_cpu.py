"""CPU time and Redis round trips of one webhook delivery, per path, inside one process.

Where `bench/intake.py` measures what a forge sees through gunicorn (and so also the
machine's noise), this calls the application directly, one request at a time: by
default through the web worker's own HTTP protocol (`webhook.asgi.FrontProtocol`, fed
the request's bytes as a socket would: what gunicorn runs per delivery, less the
system calls); with `--front asgi`, through the front's ASGI path (`Front.deliver`,
what a chunked or pipelined delivery takes); with `--front flask`, the Flask view (what
served deliveries before). It reads `time.process_time()`: the CPU one delivery costs
the web process, which bounds its throughput (two cores / CPU per request), and is
steadier than wall time on a shared machine. It also counts the Redis commands each
delivery makes Redis run (Redis's own `INFO commandstats`, read before and after each
path; it counts a script's inner commands too) and how many of them a client sent (the
rest ran inside a script; per path, as each path runs alone). A MULTI/EXEC sends all
its commands in one round trip. The app's log lines go to a file, as stderr does in
production.
Paths as in intake.py: `accepted`, `duplicate` (of a release alone in its queue),
`ignored`, `bad_signature`.

`--profile PATH` prints cProfile's top functions for one path (sorted by cumulative
time). Writes `bench/results/intake_cpu.json`. Run:
`.venv/bin/python bench/intake_cpu.py [--front protocol|asgi|flask] [--requests 1000]
[--profile accepted]`.
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
from dataclasses import dataclass
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


# What the submission script (worker/submission.py) runs inside its one call: its own
# reads and count, and a new release's writes (record, indexes, audit, event, dedupe
# keys, rq job and queue).
INNER = {"mget", "hgetall", "lpos", "hincrby",
         "hset", "zadd", "rpush", "xadd", "set", "sadd"}


def commands(redis: Redis) -> dict[str, int]:
    """Calls of each command Redis has run so far."""
    stats: dict[str, Any] = redis.info("commandstats")  # type: ignore[assignment]
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()
            if k != "cmdstat_info"}


def counted(before: dict[str, int], after: dict[str, int]) -> tuple[int, int]:
    """Commands Redis ran between two readings, and how many of them clients sent: with a
    script among them, the commands it runs inside were not sent."""
    ran = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    scripts = ran.get("evalsha", 0) + ran.get("eval", 0)
    inner = sum(v for k, v in ran.items() if k in INNER) if scripts else 0
    return sum(ran.values()), sum(ran.values()) - inner


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
        if args.front == "protocol":
            caller = protocol_caller(app, statuses)
        elif args.front == "asgi":
            caller = asgi_caller(app, statuses)
        else:
            caller = flask_caller(app, statuses)

        sets = deliveries(args.requests)
        warm = deliveries(1)
        caller.run(caller.prepare(warm["accepted"] + warm["ignored"] * 100))  # warm up
        results: dict[str, Any] = {}
        for path, requests in sets.items():
            if path in ("accepted", "duplicate"):
                redis.flushall()  # a short queue, as in real use
            if path == "duplicate":
                caller.run(caller.prepare(requests[:1]))
            prepared = caller.prepare(requests)
            profile = cProfile.Profile() if args.profile == path else None
            caller.settle()  # counts still pending from the warm-up or the path before
            before, cpu, wall = commands(redis), time.process_time(), time.perf_counter()
            _timed(caller, prepared, profile)
            caller.settle()  # this path's counts of ignored and refused deliveries, written now
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            ran, sent = counted(before, commands(redis))
            results[path] = {"status": str(statuses[-1]), "requests": len(requests),
                             "cpu_ms_per_request": round(cpu / len(requests) * 1000, 3),
                             "wall_ms_per_request": round(wall / len(requests) * 1000, 3),
                             "redis_commands_per_request": round(ran / len(requests), 1),
                             "redis_commands_sent_per_request": round(sent / len(requests), 1)}
            print(f"{path:14} {statuses[-1]:16} cpu {results[path]['cpu_ms_per_request']:.3f} "
                  f"ms/req  wall {results[path]['wall_ms_per_request']:.3f} ms/req  redis "
                  f"commands {results[path]['redis_commands_per_request']}/req, "
                  f"{results[path]['redis_commands_sent_per_request']} sent", flush=True)
            if profile is not None:
                pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    return {"front": args.front, "paths": results, "profiled": args.profile}


Requests = list[tuple[bytes, dict[str, str]]]


@dataclass
class Caller:
    """How a front is called: `prepare` turns requests into what `run` sends (outside
    the timed part), `run` sends them one after the other, each answered before the
    next, and `settle` writes the counts a front adds up (it writes them every 50 ms)."""

    prepare: Callable[[Requests], Any]
    run: Callable[[Any], None]
    settle: Callable[[], None] = lambda: None


def flask_caller(app: Any, statuses: list[Any]) -> Caller:
    """The Flask view, as a WSGI server calls it."""
    def run(environs: list[dict[str, Any]]) -> None:
        for env in environs:
            b"".join(app(env, lambda s, h, e=None: statuses.append(s)))

    return Caller(lambda requests: [environ(b, h) for b, h in requests], run)


def asgi_caller(app: Any, statuses: list[Any]) -> Caller:
    """The web process's ASGI front (`webhook.asgi.Front.deliver`, the path of chunked
    and pipelined deliveries) on one uvloop event loop (no HTTP parsing here)."""
    import asyncio

    import uvloop

    from webhook.asgi import Front

    front = Front(app)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)

    def scope(body: bytes, headers: dict[str, str]) -> tuple[dict[str, Any], bytes]:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        return ({"type": "http", "method": "POST", "path": "/webhook", "headers": raw,
                 "http_version": "1.1", "client": ("127.0.0.1", 1)}, body)

    async def all_of(prepared: list[tuple[dict[str, Any], bytes]]) -> None:
        for request, body in prepared:
            async def receive(body: bytes = body) -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await front(request, receive, send)

    return Caller(lambda requests: [scope(b, h) for b, h in requests],
                  lambda prepared: loop.run_until_complete(all_of(prepared)),
                  lambda: loop.run_until_complete(front.flush_counts()))


class Transport:
    """The socket as uvicorn's protocol sees it; `answered` gets what it writes."""

    def __init__(self) -> None:
        self.answered: Any = None

    def write(self, data: bytes) -> None:
        if not self.answered.done():
            self.answered.set_result(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 1)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def protocol_caller(app: Any, statuses: list[Any]) -> Caller:
    """The web worker's own HTTP protocol (`webhook.asgi.FrontProtocol`, built from the
    worker's uvicorn settings) on one uvloop event loop, given each request's bytes as
    a socket would: what a gunicorn worker runs per delivery, less the system calls."""
    import asyncio

    import uvicorn
    import uvloop
    from uvicorn.server import ServerState

    from webhook.asgi import Front, Worker

    front = Front(app)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    config = uvicorn.Config(front, **Worker.CONFIG_KWARGS)
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(),
                                          app_state={}, _loop=loop)
    transport = Transport()
    protocol.connection_made(transport)

    def request(body: bytes, headers: dict[str, str]) -> bytes:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return (f"POST /webhook HTTP/1.1\r\nHost: x\r\n{head}"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def all_of(prepared: list[bytes]) -> None:
        for data in prepared:
            transport.answered = loop.create_future()
            protocol.data_received(data)  # a refusal is answered before this returns
            answer = await transport.answered
            statuses.append(int(answer.split(b" ", 2)[1]))

    return Caller(lambda requests: [request(b, h) for b, h in requests],
                  lambda prepared: loop.run_until_complete(all_of(prepared)),
                  lambda: loop.run_until_complete(front.flush_counts()))


def _timed(caller: Caller, prepared: Any, profile: cProfile.Profile | None) -> None:
    if profile is not None:
        profile.enable()
    caller.run(prepared)
    if profile is not None:
        profile.disable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="deliveries per path")
    parser.add_argument("--profile", default=None, help="cProfile this path (slower)")
    parser.add_argument("--name", default="intake_cpu", help="results file name")
    parser.add_argument("--front", choices=("protocol", "asgi", "flask"), default="protocol",
                        help="the web worker's HTTP protocol (default; what gunicorn runs), "
                             "the front's ASGI path, or the Flask view")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-intake-cpu-") as tmp:
        results = run(args, Path(tmp))
    print(f"wrote {stack.write_results(args.name, results).relative_to(stack.ROOT)}")


if __name__ == "__main__":
    main()
