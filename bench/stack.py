"""Processes and helpers the benchmarks share: Redis, the sandbox, web, worker, payloads.

Each benchmark starts what it measures as real processes, exactly as the Procfile
and the sandbox's own command line name them, in their own process groups with logs
in a work directory, and stops every one of them on the way out (`Processes`).
It speaks to them only over HTTP, so a benchmark measures what a forge or an
operator would see. Also here: signed GitHub tag pushes (the same payload the
intake tests use, tests/fixtures/github/push__tag_lightweight.json), the statistics
every script reports (median, p90, p99) and writing `bench/results/<name>.json`.
Nothing here imports pytest or the product's packages.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from proctools import free_port, is_listening, wait_for

ROOT = Path(__file__).resolve().parent.parent
# The source tree the measured processes run from: this checkout, or another one
# (`BENCH_TREE=../old-checkout`) to measure an earlier commit with today's scripts.
TREE = Path(os.environ.get("BENCH_TREE") or ROOT).resolve()
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
FIXTURE = ROOT / "tests" / "fixtures" / "github" / "push__tag_lightweight.json"
SECRET = "bench-webhook-secret"
API_TOKEN = "bench-api-token"
LOCAL = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


# -- waiting and HTTP ------------------------------------------------------------------------


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0,
               interval: float = 0.05) -> Any:
    """`check()`'s first truthy value; TimeoutError naming `what` after `timeout` s."""
    return wait_for(what, check, timeout, interval=interval)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, body: bytes | None = None,
         headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> Answer:
    """One request (never through a proxy); HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            return Answer(answer.status, answer.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.read())


def answers(url: str) -> bool:
    try:
        return http("GET", url, timeout=1).status < 500
    except OSError:
        return False


# -- processes -------------------------------------------------------------------------------


@dataclass
class Processes:
    """Every process a benchmark started, each in its own process group, logs in `workdir`."""

    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], *, env: Mapping[str, str] | None = None,
              stdout: int | None = None, tree: Path = TREE) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:  # the child keeps its own fd
            proc = subprocess.Popen(argv, cwd=tree, env={**os.environ, **LOCAL,
                                                          "PYTHONPATH": str(tree), **(env or {})},
                                    stdout=stdout if stdout is not None else log,
                                    stderr=log, start_new_session=True)
        self.procs[name] = proc
        return proc

    def stop(self, name: str, timeout: float = 20.0) -> None:
        """Stop `name`'s whole process group: SIGTERM, then SIGKILL after `timeout`. A
        leader that has exited may have left its group behind (gunicorn's workers after
        the master): they are killed."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def __enter__(self) -> Processes:
        # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every child is stopped.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def start_redis(procs: Processes, name: str = "redis", *, unix: bool = False) -> str:
    """A redis-server on a free port (no persistence); its URL: over TCP, or with `unix`
    over a Unix socket in the work directory (where Redis runs beside the web process)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is missing: run `make sysdeps`")
    port = free_port()
    data = procs.workdir / name
    data.mkdir(exist_ok=True)
    socket = data / "redis.sock"
    procs.start(name, [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                       "--save", "", "--appendonly", "no", "--daemonize", "no",
                       *(["--unixsocket", str(socket), "--unixsocketperm", "700"] if unix
                         else [])])
    wait_until(f"{name} on port {port}", lambda: is_listening(port), 10)
    if unix:
        wait_until(f"{name}'s socket", socket.exists, 10)
        return f"unix://{socket}?db=0"
    return f"redis://127.0.0.1:{port}/0"


@dataclass(frozen=True)
class Cluster:
    api: str
    ingress: str
    kubeconfig: str


def start_sandbox(procs: Processes) -> Cluster:
    """`python -m sandbox serve`, as SPEC §3 names it; its URLs from the JSON line it prints."""
    kubeconfig = procs.workdir / "kubeconfig"
    proc = procs.start("sandbox", [sys.executable, "-m", "sandbox", "serve", "--kubeconfig",
                                   str(kubeconfig)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("the sandbox did not start: see sandbox.log")
    info = json.loads(line)
    return Cluster(api=info["api"], ingress=info["ingress"], kubeconfig=info["kubeconfig"])


def write_config(procs: Processes, apps: Mapping[str, Mapping[str, Any]]) -> Path:
    path = procs.workdir / "bluegreen.yml"
    path.write_text(yaml.safe_dump({"apps": {k: dict(v) for k, v in apps.items()}}))
    return path


def product_env(redis_url: str, config: Path, cluster: Cluster | None = None) -> dict[str, str]:
    """The environment of the web and worker processes (12-factor, SPEC §3)."""
    env = {"REDIS_URL": redis_url, "BLUEGREEN_CONFIG": str(config),
           "GITHUB_WEBHOOK_SECRET": SECRET, "BLUEGREEN_API_TOKEN": API_TOKEN,
           "WEB_LOG_LEVEL": "warning"}
    if cluster is not None:
        env.update(KUBECONFIG=cluster.kubeconfig, BLUEGREEN_INGRESS_URL=cluster.ingress)
    return env


def start_web(procs: Processes, env: Mapping[str, str], *, workers: int | None = None,
              name: str = "web", args: Iterable[str] = (), tree: Path = TREE) -> str:
    """The Procfile's web line on a free port; its URL once /healthz answers.

    `args` are extra gunicorn options (they override the config file), for trying
    settings before changing webhook/gunicorn_conf.py; `tree` is the checkout it runs.
    """
    port = free_port()
    extra = {"PORT": str(port)}
    if workers is not None:
        extra["WEB_CONCURRENCY"] = str(workers)
    procs.start(name, [str(BIN / "gunicorn"), "--config", "webhook/gunicorn_conf.py", *args,
                       "webhook:create_app()"], env={**env, **extra}, tree=tree)
    url = f"http://127.0.0.1:{port}"
    wait_until(f"{name} /healthz", lambda: answers(url + "/healthz"), 30, 0.1)
    return url


def start_worker(procs: Processes, env: Mapping[str, str], *, queues: Iterable[str] = (),
                 name: str = "worker") -> subprocess.Popen[bytes]:
    """The Procfile's worker line (`bluegreen worker`), optionally for some queues only."""
    argv = [str(BIN / "bluegreen"), "worker"]
    for queue in queues:
        argv += ["--queue", queue]
    return procs.start(name, argv, env=env)


def worker_ready(procs: Processes, name: str = "worker") -> bool:
    """The worker's log says rq is listening (locks taken, recovery done)."""
    log = procs.workdir / f"{name}.log"
    return log.exists() and "Listening on" in log.read_text(errors="replace")


def rss_mib(pid: int, *, below: bool = True) -> float:
    """Resident memory of `pid` (and, by default, every process below it), in MiB."""
    total = 0
    for current in tree(pid) if below else [pid]:
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines()
                      if line.startswith("VmRSS:")) if "VmRSS:" in status else 0
    return round(total / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, with reaped children's) of `pid` and every process
    below it; 0 for what has exited."""
    total = 0
    for current in tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and every process below it (those alive now)."""
    found, waiting = [], [pid]
    while waiting:
        current = waiting.pop()
        found.append(current)
        waiting += children(current)
    return found


def children(pid: int) -> list[int]:
    """`pid`'s children now (none if it has exited: the peer's commands exit all the time)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    found = []
    for task in tasks:
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


# -- forges and operators --------------------------------------------------------------------


def tag_push(tag: str, *, commit: str, repository: str = "acme/myapp") -> bytes:
    """GitHub's lightweight tag push (the intake tests' fixture) for `tag` at `commit`."""
    body: dict[str, Any] = json.loads(FIXTURE.read_text())
    body.update(ref=f"refs/tags/{tag}", after=commit,
                compare=f"https://github.com/{repository}/compare/{tag}")
    body["repository"].update(full_name=repository, name=repository.split("/")[-1])
    body["head_commit"]["id"] = commit
    return json.dumps(body, separators=(",", ":")).encode()


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_headers(body: bytes, delivery: str, secret: str = SECRET) -> dict[str, str]:
    return {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature(body, secret), "User-Agent": "GitHub-Hookshot/bench",
            "Content-Type": "application/json"}


def push(web: str, tag: str, *, commit: str, delivery: str,
         repository: str = "acme/myapp") -> Answer:
    body = tag_push(tag, commit=commit, repository=repository)
    return http("POST", web + "/webhook", body, github_headers(body, delivery))


def command(web: str, app: str, action: str, release: str) -> Answer:
    return http("POST", f"{web}/api/apps/{app}/{action}", json.dumps({"release": release}).encode(),
                {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"})


def release(web: str, release_id: str) -> dict[str, Any]:
    answer = http("GET", f"{web}/api/releases/{release_id}")
    if answer.status != 200:
        raise RuntimeError(f"GET release {release_id}: {answer.status} {answer.body[:200]!r}")
    record: dict[str, Any] = answer.json
    return record


# -- figures ---------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation, as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Iterable[float], *, digits: int = 1) -> dict[str, float]:
    """n, median, p90, p99, min and max of `values` (milliseconds, usually)."""
    items = list(values)
    if not items:
        return {"n": 0}
    return {"n": len(items), "median": round(statistics.median(items), digits),
            "p90": round(percentile(items, 90), digits),
            "p99": round(percentile(items, 99), digits),
            "min": round(min(items), digits), "max": round(max(items), digits)}


HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    halt_poll = None  # a kernel without the haltpoll driver
    with contextlib.suppress(OSError):
        halt_poll = HALT_POLL.read_text().strip()
    return {"cores": os.cpu_count(),
            # the CPUs the run's processes could use (less than all under `taskset`)
            "cpus_allowed": sorted(os.sched_getaffinity(0)),
            "cpu": cpu, "python": platform.python_version(),
            "tree": "this checkout" if TREE == ROOT else f"BENCH_TREE at {git_commit(TREE)}",
            "kernel": platform.release(),
            # a guest kernel's idle polling: 0 (as here by default) halts an idle vCPU at
            # once, and each wake-up between processes then waits for the hypervisor
            "guest_halt_poll_ns": halt_poll,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "note": "shared, noisy machine: compare medians and ratios, not single runs"}


def git_commit(tree: Path = TREE) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, check=True,
                             capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def command_line() -> str:
    """How this script was run, relative to the repository (no machine paths)."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(ROOT)
    return " ".join([".venv/bin/python", str(script), *sys.argv[1:]])


def write_results(name: str, data: Mapping[str, Any]) -> Path:
    """`bench/results/<name>.json` with the machine and commit added; returns its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {"benchmark": name, "commit": git_commit(), "machine": machine(),
                "command": command_line(),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
