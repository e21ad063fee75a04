"""Shared fixtures: a real redis-server for the session, a fresh sandbox cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from fakemattermost import FakeMattermost
from fakeslack import FakeSlack
from proctools import free_port, is_listening, wait_for
from web import Gunicorn, start_web

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RedisServer:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, appendonly: bool = False) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is missing: run `make test`, which installs it"
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes" if appendonly else "no",
                "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"redis-server on port {self.port}", lambda: is_listening(self.port), 10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free port for the whole session."""
    server = RedisServer(port=free_port(), dir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The URL of an empty Redis database (flushed before each test)."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()  # a test may have stopped it on purpose
    conn = redis_lib.Redis.from_url(redis_server.url)
    conn.flushall()
    conn.close()
    yield redis_server.url


def redis_contents(redis: redis_lib.Redis) -> dict[bytes, Any]:
    """Every key and what it holds, by type: a string as (value, TTL in seconds), a hash
    as a dict, a list in order, a set, a sorted set as (member, score) pairs, a stream as
    its entries' fields (without their ids, which are times)."""
    readers: dict[bytes, Callable[[bytes], Any]] = {
        b"string": lambda k: (redis.get(k), redis.ttl(k)), b"hash": redis.hgetall,
        b"list": lambda k: redis.lrange(k, 0, -1), b"set": redis.smembers,
        b"zset": lambda k: redis.zrange(k, 0, -1, withscores=True),
        b"stream": lambda k: [fields for _, fields in redis.xrange(k)]}
    return {key: readers[redis.type(key)](key) for key in redis.keys("*")}


@pytest.fixture
def redis(redis_url: str) -> Iterator[redis_lib.Redis]:
    conn = redis_lib.Redis.from_url(redis_url)
    yield conn
    conn.close()


@dataclass
class Sandbox:
    """A running sandbox cluster: its API and ingress URLs and kubeconfig path."""

    api: str
    ingress: str
    kubeconfig: str
    proc: subprocess.Popen[str]

    def env(self) -> dict[str, str]:
        """Environment for a process that should talk to this cluster."""
        return {**os.environ, "KUBECONFIG": self.kubeconfig, "BLUEGREEN_INGRESS_URL": self.ingress}


def start_sandbox(tmp_path: Path) -> Sandbox:
    kubeconfig = tmp_path / "kubeconfig"
    with open(tmp_path / "sandbox.log", "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "serve", "--kubeconfig", str(kubeconfig)],
            stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        raise RuntimeError(f"sandbox did not start: {(tmp_path / 'sandbox.log').read_text()}")
    info = json.loads(line)
    return Sandbox(api=info["api"], ingress=info["ingress"], kubeconfig=info["kubeconfig"],
                   proc=proc)


def stop_sandbox(sb: Sandbox) -> None:
    if sb.proc.poll() is None:
        sb.proc.terminate()
        try:
            sb.proc.wait(15)
        except subprocess.TimeoutExpired:
            sb.proc.kill()
            sb.proc.wait()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """A fresh sandbox cluster (API server, kubelet, ingress) on free ports."""
    sb = start_sandbox(tmp_path)
    yield sb
    stop_sandbox(sb)


FIGURES: list[str] = []


@pytest.fixture
def figures(record_property: Callable[[str, object], None]) -> Callable[[str], None]:
    """Report one line of figures (an end-to-end test's load, say): printed in a section of
    its own at the end of the run, from whichever process ran the test (pytest-xdist)."""
    return lambda line: record_property("figures", line)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    FIGURES.extend(str(value) for name, value in report.user_properties
                   if name == "figures" and report.when == "call")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def web(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """The web process for a module's tests (a module may define its own `web`)."""
    server = start_web(redis_server.url, tmp_path_factory.mktemp("web"))
    yield server
    server.stop()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    """A fake Slack Web API over HTTP (tests/fakeslack.py) for one test."""
    fake = FakeSlack().start()
    yield fake
    fake.stop()


@pytest.fixture
def mm() -> Iterator[FakeMattermost]:
    """A fake Mattermost server over HTTP (tests/fakemattermost.py) for one test."""
    fake = FakeMattermost().start()
    yield fake
    fake.stop()
