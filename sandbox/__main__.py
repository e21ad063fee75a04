"""`python -m sandbox serve`: run a sandbox cluster until SIGTERM/SIGINT.

Owns the command line: writes the kubeconfig, prints one JSON line
`{"api": URL, "ingress": URL, "kubeconfig": PATH}` on stdout once everything
answers, logs to stderr, and on a signal stops every part (pod processes
included) and exits 0. The cluster itself is `sandbox.cluster.Cluster`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from sandbox.cluster import Cluster


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox",
                                     description="A simulated Kubernetes + Istio cluster.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API server, kubelet and ingress")
    serve.add_argument("--kubeconfig", required=True, type=Path,
                       help="where to write a kubeconfig pointing at this cluster")
    serve.add_argument("--api-port", type=int, default=0, help="API server port (0: any free)")
    serve.add_argument("--ingress-port", type=int, default=0, help="ingress port (0: any free)")
    serve.add_argument("--workdir", type=Path, default=None,
                       help="pod working directories and logs (default: a temporary one, "
                            "removed on exit)")
    serve.add_argument("--no-kubelet", action="store_true",
                       help="API only: run no controllers and no pods (for debugging)")
    serve.add_argument("--no-ingress", action="store_true", help="run no ingress (for debugging)")
    serve.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


def serve(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sandbox-"))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    cluster = Cluster(workdir, api_port=args.api_port, ingress_port=args.ingress_port,
                      kubelet=not args.no_kubelet, ingress=not args.no_ingress)
    try:
        cluster.start()
        kubeconfig = args.kubeconfig.resolve()
        cluster.write_kubeconfig(kubeconfig)
        print(json.dumps({"api": cluster.api_url, "ingress": cluster.ingress_url,
                          "kubeconfig": str(kubeconfig)}), flush=True)
        while not stop.wait(0.5):
            pass
        logging.getLogger("sandbox").info("stopping")
    finally:
        cluster.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
