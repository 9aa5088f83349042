"""Command line: python -m lipsync_testbed up|down|status|proxy."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from lipsync_testbed import processes
from lipsync_testbed.cluster import ClusterState, LocalCluster, default_state_dir
from lipsync_testbed.versions import Binaries, ClusterSetupError, default_bin_dir

log = logging.getLogger("lipsync_testbed")


def _up(args: argparse.Namespace) -> int:
    cluster = LocalCluster(
        args.dir,
        binaries=Binaries(args.bin_dir),
        node_pool=args.nodepool,
        startup_timeout=args.timeout,
    )
    cluster.start()
    sys.stdout.write(
        f"test bed up: {cluster.server}\n"
        f"  logs: {cluster.log_dir}\n"
        f"  export KUBECONFIG={cluster.kubeconfig}\n"
        f"  export PATH={cluster.binaries.bin_dir}:$PATH\n"
    )
    return 0


def _down(args: argparse.Namespace) -> int:
    state = ClusterState.load(args.dir)
    if state is None:
        sys.stdout.write(f"no test bed state in {args.dir}\n")
        return 0
    failed = []
    for proc in reversed(state.processes):
        try:
            processes.stop(proc)
        except (RuntimeError, OSError) as exc:
            failed.append(f"{proc.name} (pid {proc.pid}): {exc}")
    if failed:
        sys.stderr.write("could not stop: " + "; ".join(failed) + "\n")
        return 1
    sys.stdout.write("test bed stopped\n")
    return 0


def _status(args: argparse.Namespace) -> int:
    state = ClusterState.load(args.dir)
    if state is None:
        sys.stdout.write(f"no test bed state in {args.dir}\n")
        return 1
    running = 0
    for proc in state.processes:
        alive = processes.is_same_process(proc)
        running += alive
        sys.stdout.write(f"{proc.name:<24} pid {proc.pid:<8} {'running' if alive else 'stopped'}\n")
    sys.stdout.write(f"server: {state.server}\nkubeconfig: {state.kubeconfig}\n")
    return 0 if state.processes and running == len(state.processes) else 1


def _proxy(args: argparse.Namespace) -> int:
    """Forward a loopback address to a Service's ready endpoints until interrupted."""
    import time

    from kubernetes import config

    from lipsync_testbed.serviceproxy import ServiceProxy

    state = ClusterState.load(args.dir)
    if state is None:
        sys.stderr.write(f"error: no test bed state in {args.dir} (run `make cluster-up`)\n")
        return 1
    if not args.service or args.service.count("/") != 1:
        sys.stderr.write("error: proxy takes NAMESPACE/SERVICE, e.g. default/anna\n")
        return 2
    namespace, service = args.service.split("/")
    loader: Any = config.new_client_from_config  # untyped in the client
    api: Any = loader(str(state.kubeconfig))
    port: str | int = int(args.port) if args.port.isdigit() else args.port
    proxy = ServiceProxy(api, namespace, service, port, listen_port=args.listen_port)
    proxy.start()
    ready = len(proxy.endpoints())
    sys.stdout.write(f"{proxy.target} -> {namespace}/{service} port {port} ({ready} ready)\n")
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
        api.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lipsync_testbed", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status", "proxy"))
    parser.add_argument("service", nargs="?", help="proxy: NAMESPACE/SERVICE")
    parser.add_argument("--port", default="grpc", help="proxy: Service port name or number")
    parser.add_argument(
        "--listen-port", type=int, default=0, help="proxy: local port (default: a free one)"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="state directory (default: $LIPSYNC_CLUSTER_DIR or ~/.cache/lipsync/cluster)",
    )
    parser.add_argument(
        "--bin-dir", type=Path, default=None, help="binaries (default: build.sh's output)"
    )
    parser.add_argument(
        "--nodepool",
        type=Path,
        default=None,
        help="node-pool YAML (default: hack/cluster/nodepool.yaml)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="startup timeout in seconds")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    args.dir = args.dir or default_state_dir()
    if args.command == "up":
        args.bin_dir = args.bin_dir or default_bin_dir()
    try:
        handler = {"up": _up, "down": _down, "status": _status, "proxy": _proxy}[args.command]
        return handler(args)
    except ClusterSetupError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
