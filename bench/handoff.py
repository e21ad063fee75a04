"""What a hand-off between two processes costs on this machine: one round trip.

Every accepted delivery crosses between processes four times before its client has
the answer (the client to the web worker, the worker to Redis, Redis back, the worker
to the client); the Go peer's answer crosses twice. At one connection nothing else
runs meanwhile, so each crossing's cost is in the answer rate. This measures one
round trip, the floor of any crossing pair: a process sends 64 bytes, a forked echo
process sends them back, `--trips` times; the median of each run:

- over loopback TCP (`TCP_NODELAY`, as the web worker's link to Redis and wrk) and
  over a Unix socket pair;
- with both processes free to run on any CPU (the scheduler mostly puts the woken
  one on the other core), and with both pinned to one CPU (each hand-off is then a
  switch on that CPU, with nothing to wake).

A guest kernel that halts an idle vCPU at once (`guest_halt_poll_ns` 0, recorded in
the results' `machine`) makes every wake-up of the other core wait for the
hypervisor; that is the difference between the two rows. Writes
`bench/results/handoff.json`. Run: `.venv/bin/python bench/handoff.py [--runs 5]`.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import stack

MESSAGE = b"x" * 64


@contextmanager
def echo_pair(transport: str, cpu: int | None) -> Iterator[socket.socket]:
    """A connected socket whose peer, a forked process, echoes what it receives;
    both processes on `cpu` when it is given."""
    if transport == "tcp":
        listener = socket.create_server(("127.0.0.1", 0))
        near, far = None, None
    else:
        listener = None
        near, far = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the echo process
        try:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
            if near is not None:
                near.close()  # or the echo would never see the end of the stream
            if listener is not None:
                far = socket.create_connection(listener.getsockname())
                far.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert far is not None
            while data := far.recv(65536):
                far.sendall(data)
        finally:
            os._exit(0)
    affinity = os.sched_getaffinity(0)
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        if listener is not None:
            near, _ = listener.accept()
            near.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            assert far is not None
            far.close()
        assert near is not None
        with near:
            yield near
    finally:
        if listener is not None:
            listener.close()
        os.waitpid(pid, 0)
        os.sched_setaffinity(0, affinity)


def round_trips(transport: str, cpu: int | None, trips: int) -> float:
    """The median round trip in microseconds."""
    times = []
    with echo_pair(transport, cpu) as sock:
        for _ in range(trips):
            started = time.perf_counter_ns()
            sock.sendall(MESSAGE)
            received = 0
            while received < len(MESSAGE):
                received += len(sock.recv(65536))
            times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1000


def run(args: argparse.Namespace) -> dict[str, Any]:
    cpu = min(os.sched_getaffinity(0))
    placements = {"any CPU": None, f"one CPU ({cpu})": cpu}
    medians: dict[str, list[float]] = {}
    for _ in range(args.runs):  # interleaved, so a busy moment touches every row
        for transport in ("tcp", "unix"):
            for placement, pinned in placements.items():
                key = f"{transport}, {placement}"
                medians.setdefault(key, []).append(round(round_trips(transport, pinned,
                                                                     args.trips), 1))
    rows = [{"pair": key, "median_us": round(statistics.median(values), 1),
             "runs_us": values} for key, values in medians.items()]
    for row in rows:
        print(f"  {row['pair']:22} round trip {row['median_us']:6.1f} µs  "
              f"(runs: {', '.join(f'{v:g}' for v in row['runs_us'])})")
    return {"trips": args.trips, "runs": args.runs, "message_bytes": len(MESSAGE),
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each pair")
    parser.add_argument("--trips", type=int, default=20000, help="round trips per run")
    parser.add_argument("--name", default="handoff", help="results file name")
    args = parser.parse_args()
    results = run(args)
    print(f"wrote {stack.write_results(args.name, results).relative_to(stack.ROOT)}")


if __name__ == "__main__":
    main()
