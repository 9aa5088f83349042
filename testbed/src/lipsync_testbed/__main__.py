"""Command line: python -m lipsync_testbed up|down|status|gpu-discovery."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from lipsync_testbed import hostclean, processes
from lipsync_testbed.autoscaling import CATALOG_FILE, CPU_NODE, AutoscalingOptions, read_catalog
from lipsync_testbed.cluster import ClusterState, LocalCluster, default_state_dir
from lipsync_testbed.gfd import GpuFeatureDiscovery
from lipsync_testbed.hostclean import HostRecord
from lipsync_testbed.hostnet import HostNetwork
from lipsync_testbed.nodebed import REAL_NODE, project_images
from lipsync_testbed.nodes import NodeSpec
from lipsync_testbed.versions import Binaries, ClusterSetupError, default_bin_dir

log = logging.getLogger("lipsync_testbed")


def _up(args: argparse.Namespace) -> int:
    if args.autoscaling:
        node_pool: list[NodeSpec] | Path | None = []
        real_nodes = [CPU_NODE]
    elif args.real_node:
        node_pool, real_nodes = [], [REAL_NODE]
    else:
        node_pool, real_nodes = args.nodepool, []
    cluster = LocalCluster(
        args.dir,
        binaries=Binaries(args.bin_dir),
        node_pool=node_pool,
        startup_timeout=args.timeout,
        autoscaling=AutoscalingOptions() if args.autoscaling else None,
        real_nodes=real_nodes,
        images=project_images() if real_nodes else (),
    )
    cluster.start()
    sys.stdout.write(
        f"test bed up: {cluster.server}\n"
        f"  logs: {cluster.log_dir}\n"
        f"  export KUBECONFIG={cluster.kubeconfig}\n"
        f"  export PATH={cluster.binaries.bin_dir}:$PATH\n"
    )
    if not args.autoscaling:
        return 0
    endpoints = cluster.autoscaling_endpoints
    sys.stdout.write(
        f"  prometheus: {endpoints.prometheus_url}\n"
        f"  keda metrics API: {endpoints.keda_metrics_api}\n"
        f"  karpenter metrics: {endpoints.karpenter_metrics}\n"
        "Karpenter's nodes boot as real nodes while this runs; Ctrl-C stops the test bed.\n"
    )
    sys.stdout.flush()
    _stop_event().wait()
    cluster.stop()
    return 0


def _stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT (for the background processes of `up`)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _gpu_discovery(args: argparse.Namespace) -> int:
    """GPU Feature Discovery for Karpenter's nodes (`up --autoscaling`), until SIGTERM."""
    cluster = LocalCluster.attach(args.dir)
    stop = _stop_event()
    logging.getLogger("lipsync_testbed.gfd").setLevel(logging.INFO)  # one line per node
    catalog = read_catalog(args.dir / "config" / CATALOG_FILE)
    discovery = GpuFeatureDiscovery(cluster.new_api_client(), catalog).start()
    stop.wait()
    discovery.stop()
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
    record = hostclean.RECORD_DIR / f"{HostNetwork.for_state_dir(args.dir).tag}.json"
    if record.is_file():
        failed += [f"left on the host: {item}" for item in hostclean.clean(HostRecord.load(record))]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lipsync_testbed", description=__doc__)
    parser.add_argument(
        "command",
        choices=("up", "down", "status", "gpu-discovery"),
    )
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="up: one real node (kubelet + containerd) running the images of `make images`, "
        'instead of KWOK nodes, where pods do not run (hack/cluster/README.md, "Real nodes")',
    )
    parser.add_argument(
        "--autoscaling",
        action="store_true",
        help="up: also run Prometheus, KEDA and Karpenter, starting from one real CPU node; "
        "Karpenter's nodes boot as real nodes; stays in the foreground (hack/cluster/README.md)",
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
    if args.nodepool is not None and (args.autoscaling or args.real_node):
        parser.error("--nodepool makes KWOK nodes; --real-node and --autoscaling start real ones")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    args.dir = args.dir or default_state_dir()
    if args.command == "up":
        args.bin_dir = args.bin_dir or default_bin_dir()
    try:
        handler = {
            "up": _up,
            "down": _down,
            "status": _status,
            "gpu-discovery": _gpu_discovery,
        }[args.command]
        return handler(args)
    except ClusterSetupError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
