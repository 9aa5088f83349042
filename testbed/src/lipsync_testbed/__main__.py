"""Command line: python -m lipsync_testbed up|down|status|logs|kubelet|proxy|gpu-discovery."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from lipsync_testbed import hostclean, processes
from lipsync_testbed.autoscaling import CATALOG_FILE, STATIC_NODES, AutoscalingOptions, read_catalog
from lipsync_testbed.cluster import KUBELET_DIR, ClusterState, LocalCluster, default_state_dir
from lipsync_testbed.gfd import GpuFeatureDiscovery
from lipsync_testbed.hostclean import HostRecord
from lipsync_testbed.hostnet import HostNetwork
from lipsync_testbed.kubelet import PodRunner, pod_log_path
from lipsync_testbed.nodebed import REAL_NODE, project_images
from lipsync_testbed.versions import Binaries, ClusterSetupError, default_bin_dir

log = logging.getLogger("lipsync_testbed")


def _up(args: argparse.Namespace) -> int:
    node_pool = args.nodepool
    if node_pool is None and args.autoscaling:
        node_pool = list(STATIC_NODES)
    if node_pool is None and args.real_node:
        node_pool = []
    cluster = LocalCluster(
        args.dir,
        binaries=Binaries(args.bin_dir),
        node_pool=node_pool,
        startup_timeout=args.timeout,
        run_kubelet=not (args.no_kubelet or args.real_node),
        autoscaling=AutoscalingOptions() if args.autoscaling else None,
        real_nodes=[REAL_NODE] if args.real_node else (),
        images=project_images() if args.real_node else (),
    )
    cluster.start()
    sys.stdout.write(
        f"test bed up: {cluster.server}\n"
        f"  logs: {cluster.log_dir}\n"
        f"  export KUBECONFIG={cluster.kubeconfig}\n"
        f"  export PATH={cluster.binaries.bin_dir}:$PATH\n"
    )
    if args.autoscaling:
        endpoints = cluster.autoscaling_endpoints
        sys.stdout.write(
            f"  prometheus: {endpoints.prometheus_url}\n"
            f"  keda metrics API: {endpoints.keda_metrics_api}\n"
            f"  karpenter metrics: {endpoints.karpenter_metrics}\n"
        )
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


def _kubelet(args: argparse.Namespace) -> int:
    """The local kubelet of `up`: runs the local pods of every namespace until SIGTERM."""
    cluster = LocalCluster.attach(args.dir)
    stop = _stop_event()
    runner = PodRunner(
        cluster.new_api_client(), rule=cluster.local_pods, work_dir=args.dir / KUBELET_DIR
    )
    runner.start()
    log.warning(
        "kubelet: running local pods (addresses: %s, mount namespaces: %s)",
        runner.address_kind,
        runner.mount_namespaces,
    )
    stop.wait()
    runner.stop()
    return 0


def _logs(args: argparse.Namespace) -> int:
    path = pod_log_path(
        args.dir / KUBELET_DIR, args.namespace, args.pod, args.container, previous=args.previous
    )
    if path is None:
        sys.stderr.write(f"error: no log of pod {args.namespace}/{args.pod} in {args.dir}\n")
        return 1
    sys.stdout.write(path.read_text(encoding="utf-8", errors="replace"))
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


def _proxy(args: argparse.Namespace) -> int:
    """Forward a loopback address to a Service's ready endpoints until interrupted."""
    import time

    from kubernetes import config

    from lipsync_testbed.serviceproxy import ServiceProxy

    state = ClusterState.load(args.dir)
    if state is None:
        sys.stderr.write(f"error: no test bed state in {args.dir} (run `make cluster-up`)\n")
        return 1
    namespace, service = args.namespace, args.pod
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
    parser.add_argument(
        "command",
        choices=("up", "down", "status", "logs", "kubelet", "proxy", "gpu-discovery"),
    )
    parser.add_argument("namespace", nargs="?", help="logs, proxy: the namespace")
    parser.add_argument("pod", nargs="?", help="logs: the pod's name; proxy: the Service's name")
    parser.add_argument("--port", default="grpc", help="proxy: Service port name or number")
    parser.add_argument(
        "--listen-port", type=int, default=0, help="proxy: local port (default: a free one)"
    )
    parser.add_argument("-c", "--container", default=None, help="logs: container name")
    parser.add_argument("--previous", action="store_true", help="logs: the run before the last")
    parser.add_argument(
        "--no-kubelet",
        action="store_true",
        help="up: do not run local pods (KWOK still skips them; pods stay Pending)",
    )
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="up: one real node (kubelet + containerd) running the images of `make images`, "
        'instead of KWOK nodes and local pods (hack/cluster/README.md, "Real nodes")',
    )
    parser.add_argument(
        "--autoscaling",
        action="store_true",
        help="up: also run Prometheus, KEDA and Karpenter, starting from one CPU node "
        "(hack/cluster/README.md)",
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
        if args.command in ("logs", "proxy") and not (args.namespace and args.pod):
            what = "POD" if args.command == "logs" else "SERVICE"
            parser.error(f"{args.command} needs NAMESPACE and {what}")
        handler = {
            "up": _up,
            "down": _down,
            "status": _status,
            "logs": _logs,
            "kubelet": _kubelet,
            "proxy": _proxy,
            "gpu-discovery": _gpu_discovery,
        }[args.command]
        return handler(args)
    except ClusterSetupError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
