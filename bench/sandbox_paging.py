"""The sandbox API server under its one lock: paged lists and deleting a full namespace.

Against `python -m sandbox serve` (kubelet and ingress running, as the tests and the
demo use it), with `--objects` ConfigMaps (default 3,000) in namespace `bench`:

- `list`: one GET of the whole collection;
- `first_page`: one GET with `limit` (`--page`, default 50): the first page alone;
- `last_page`: the last page, continuing a list with its token;
- `paged`: the whole collection, page after page with `limit` and `continue`;
- `delete_namespace`: DELETE of the namespace until a GET of it is 404 (the namespace
  controller's and garbage collector's work included);
- `get_during_delete`: meanwhile, another client GETs one ConfigMap in `default` without
  pause: the longest of those GETs, i.e. how long the deletion held the lock.

Every figure in milliseconds, the median over `--rounds` (default 5; the namespace and
its ConfigMaps are made again for each round). Prints them; writes
`bench/results/<--name>.json` (default `sandbox_paging`). `BENCH_TREE=../other-checkout`
measures another tree's sandbox with this script. Run:
`.venv/bin/python bench/sandbox_paging.py [--objects N] [--rounds N]`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import stack
from stack import Processes

NAMESPACE = "bench"


class Client:
    """One keep-alive HTTP/1.1 connection to the API server."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                               timeout=120)

    def call(self, method: str, path: str, body: Any = None,
             query: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.conn.request(method, path + ("?" + urlencode(query) if query else ""), data,
                          headers)
        answer = self.conn.getresponse()
        return answer.status, json.loads(answer.read() or b"null")

    def timed(self, method: str, path: str, **kwargs: Any) -> tuple[float, Any]:
        started = time.perf_counter()
        status, body = self.call(method, path, **kwargs)
        if status >= 400:
            raise RuntimeError(f"{method} {path}: {status} {body}")
        return (time.perf_counter() - started) * 1000, body


def fill(client: Client, objects: int) -> None:
    client.call("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    for i in range(objects):
        status, body = client.call("POST", f"/api/v1/namespaces/{NAMESPACE}/configmaps",
                                   {"metadata": {"name": f"cm-{i:05d}", "labels": {"n": str(i)}},
                                    "data": {"key": "value " * 10}})
        if status != 201:
            raise RuntimeError(f"create cm-{i:05d}: {status} {body}")


def read_all_pages(client: Client, page: int) -> tuple[float, float, int]:
    """The whole collection page by page: total and last page's time (ms), items read."""
    path = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    total, last, items, token = 0.0, 0.0, 0, ""
    while True:
        query = {"limit": str(page), **({"continue": token} if token else {})}
        last, body = client.timed("GET", path, query=query)
        total += last
        items += len(body["items"])
        token = body["metadata"].get("continue") or ""
        if not token:
            return total, last, items


def delete_namespace(api: str, client: Client) -> tuple[float, float]:
    """DELETE the namespace and wait until it is gone, while another client GETs: the
    time until it was gone and the longest concurrent GET (ms)."""
    probe, longest, stop = Client(api), [0.0], threading.Event()

    def poll() -> None:
        while not stop.is_set():
            elapsed, _ = probe.timed("GET", "/api/v1/namespaces/default/configmaps/probe")
            longest[0] = max(longest[0], elapsed)

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.1)
    started = time.perf_counter()
    client.timed("DELETE", f"/api/v1/namespaces/{NAMESPACE}")
    while client.call("GET", f"/api/v1/namespaces/{NAMESPACE}")[0] != 404:
        time.sleep(0.005)
    gone = (time.perf_counter() - started) * 1000
    time.sleep(0.1)
    stop.set()
    poller.join()
    return gone, longest[0]


def round_(api: str, objects: int, page: int) -> dict[str, float]:
    client = Client(api)
    fill(client, objects)
    path = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    lists = [client.timed("GET", path)[0] for _ in range(3)]
    firsts = [client.timed("GET", path, query={"limit": str(page)})[0] for _ in range(5)]
    paged, last, items = read_all_pages(client, page)
    if items != objects:
        raise RuntimeError(f"paged list read {items} items of {objects}")
    gone, longest = delete_namespace(api, client)
    return {"list": statistics.median(lists), "first_page": statistics.median(firsts),
            "last_page": last, "paged": paged, "delete_namespace": gone,
            "get_during_delete": longest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--page", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--name", default="sandbox_paging")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Processes(Path(tmp)) as procs:
        cluster = stack.start_sandbox(procs)
        Client(cluster.api).call("POST", "/api/v1/namespaces/default/configmaps",
                                 {"metadata": {"name": "probe"}})
        rounds = []
        for n in range(args.rounds):
            rounds.append(round_(cluster.api, args.objects, args.page))
            print(f"round {n + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in rounds[-1].items()),
                  flush=True)
    medians = {key: round(statistics.median(r[key] for r in rounds), 1) for key in rounds[0]}
    print("medians (ms): " + ", ".join(f"{k} {v}" for k, v in medians.items()))
    path = stack.write_results(args.name, {
        "objects": args.objects, "page": args.page, "medians_ms": medians,
        "rounds": [{k: round(v, 1) for k, v in r.items()} for r in rounds]})
    print(f"wrote {path.relative_to(stack.ROOT)}")


if __name__ == "__main__":
    main()
