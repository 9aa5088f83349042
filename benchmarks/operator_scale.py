"""Operator scale benchmark: many KWOK GPU nodes, many LipSyncModels, node events timed.

A local control plane (etcd, kube-apiserver, controller-manager, scheduler, KWOK) gets
``--nodes`` fake GPU nodes over ``--products`` GPU products (default: one per two models) and
``--models`` LipSyncModels over ``--namespaces`` namespaces, each model on one product. The
operator runs as a process of the Python given by ``--operator-python`` (so one script measures
two checkouts) with images that the test bed's kubelet does not run: KWOK fakes every server pod,
and this script finishes every build Job pod with a Ready build result, so the machine measures
the operator, not 100 servers.

Once every model's status plans a server on every node of its product, it times node events one
after another (add a node, remove one, move one to another product): from the API call to the
status of every model on the products involved showing the new replica count, seen through a
watch. It reports p50/p99 of those latencies, the API requests the apiserver counted
(``apiserver_request_total``) per affected model, the LIST requests of each client (from an
audit log of lists: the operator's are ``kopf``'s), the operator's peak RSS and CPU time, as JSON.

KWOK renews node leases every ``--node-lease-seconds / 4`` and the controller-manager waits
``--node-grace-seconds`` before marking a node NotReady (the test bed's defaults, 40 s and 50 s,
are too tight for a thousand leases on a small machine: healthy nodes flap NotReady and every
flap re-plans the models on their product, which the timed events would then wait behind).

    uv run python benchmarks/operator_scale.py --nodes 1000 --models 100 --namespaces 10 \\
        --operator-python .venv/bin/python --out benchmarks/results/operator_scale_after.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from lipsync_contract.result import BuildResult
from lipsync_testbed import (
    GpuSpec,
    LocalCluster,
    NodeSpec,
    create_namespace,
    finish_pod,
    relabel_node,
    remove_node,
)
from lipsync_testbed.audit import count_lists
from lipsync_testbed.heartbeats import NodeHeartbeats, minimum_grace_seconds
from lipsync_testbed.nodes import add_nodes
from lipsync_testbed.resources import prebound_claim
from lipsync_testbed.versions import repo_root
from lipsync_testbed.waiting import wait_for

log = logging.getLogger("operator_scale")

GROUP, VERSION, PLURAL = "lipsync.dev", "v1alpha1", "lipsyncmodels"
PRODUCT_LABEL = "nvidia.com/gpu.product"
# Compute capabilities the synthetic products cycle through (one engine build each).
CAPABILITIES = ((8, 0), (9, 0), (8, 9), (7, 5))
# Images the test bed's kubelet leaves to KWOK (it runs only ghcr.io/lipsync/* as processes).
FAKE_IMAGE = "registry.invalid/lipsync/runtime:bench"
CLAIMS = ("lipsync-models", "lipsync-avatars")  # what the models' pvc:// URIs name
OPERATOR_RESOURCES = (
    "nodes", "pods", "jobs", "deployments", "services", "poddisruptionbudgets",
    "horizontalpodautoscalers", "lipsyncmodels", "events",
)  # fmt: skip


@dataclass(frozen=True)
class Fleet:
    """``products`` GPU products over the nodes, ``models // products`` models on each.

    Nodes time-slice their one GPU into enough slices for every model on the product plus a
    build, so each model serves one pod per node of its product and all of them get Ready:
    ``models x nodes / products`` server pods in all.
    """

    products: int
    models_per_product: int

    def product(self, index: int) -> str:
        return f"NVIDIA-BENCH-{index:03d}"

    def node_spec(self, index: int, product: int) -> NodeSpec:
        major, minor = CAPABILITIES[product % len(CAPABILITIES)]
        gpu = GpuSpec(product=self.product(product), count=1, memory_mib=81920,
                      compute_major=major, compute_minor=minor,
                      sharing_strategy="time-slicing",
                      replicas=self.models_per_product + 2)  # fmt: skip
        return NodeSpec(name=f"gpu-{index}", pool=f"p{product}", gpu=gpu)

    def model_document(self, index: int, product: int) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LipSyncModel",
            "metadata": {"name": f"m{index}"},
            "spec": {
                "model": {"uri": "pvc://lipsync-models/unet328/unet_328.onnx"},
                "avatar": {"uri": f"pvc://lipsync-avatars/a{index}"},
                "precision": "fp16",
                "gpus": {"products": [self.product(product)]},
                "replicasPerGPU": 1,
                "sharing": "timeSlicing",
            },
        }


# -- the operator process ----------------------------------------------------------------------


@dataclass
class OperatorProcess:
    """The operator under test, sampled for RSS and CPU from /proc."""

    python: Path
    kubeconfig: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    peak_rss_mib: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "LIPSYNC_RUNTIME_IMAGE": FAKE_IMAGE,
            "LIPSYNC_SERVER_IMAGE": FAKE_IMAGE,
            "LIPSYNC_BUILDER_IMAGE": FAKE_IMAGE,
            "LIPSYNC_CACHE_KIND": "hostPath",
        }
        lipsync = self.python.parent / "lipsync"
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [str(lipsync), "operator", "run", "--liveness", ""],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._stop.clear()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            rss = self._status_kib("VmRSS")
            if rss is not None:
                self.peak_rss_mib = max(self.peak_rss_mib, rss / 1024)

    def _status_kib(self, field_name: str) -> int | None:
        if self.process is None:
            return None
        try:
            text = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        found = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
        return int(found.group(1)) if found else None

    def cpu_seconds(self) -> float:
        if self.process is None:
            return 0.0
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self._stop.set()
        if self.process is not None and self.process.poll() is None:
            hwm = self._status_kib("VmHWM")
            if hwm is not None:
                self.peak_rss_mib = max(self.peak_rss_mib, hwm / 1024)
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- what the cluster does for the operator's children ----------------------------------------


def finish_builds(api: client.ApiClient, stop: threading.Event) -> None:
    """Finish every build Job pod with a Ready result for its Job's engine key."""
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    done: set[str] = set()
    while not stop.is_set():
        pods = core.list_pod_for_all_namespaces(
            label_selector="app.kubernetes.io/component=engine-build"
        ).items
        for pod in pods:
            meta = pod.metadata
            if meta is None or meta.uid in done or pod.status is None:
                continue
            if pod.status.phase not in ("Running",):
                continue
            job_name = (meta.labels or {}).get("job-name", "")
            namespace, name = str(meta.namespace), str(meta.name)
            try:
                job = batch.read_namespaced_job(job_name, namespace)
            except ApiException:
                continue
            key = ((job.metadata.annotations if job.metadata else None) or {}).get(
                "lipsync.dev/engine-key", ""
            )
            result = BuildResult(key=key, state="Ready", artifact="engine.onnx", psnr_db=50.0)
            try:
                finish_pod(api, namespace, name, succeeded=True,
                           message=result.to_json(), container="builder")  # fmt: skip
                done.add(str(meta.uid))
            except ApiException as exc:
                log.debug("finish %s: %s", meta.name, exc)
        stop.wait(1.0)


# -- status changes seen through a watch ------------------------------------------------------


@dataclass
class StatusWatch:
    """The latest status of every model and when it last changed."""

    api: client.ApiClient
    statuses: dict[str, str] = field(default_factory=dict)
    replicas_since: dict[str, tuple[int, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        objects = client.CustomObjectsApi(self.api)
        while not self._stop.is_set():
            watcher = watch.Watch()  # type: ignore[no-untyped-call]
            stream = watcher.stream(  # type: ignore[no-untyped-call]
                objects.list_cluster_custom_object, GROUP, VERSION, PLURAL, timeout_seconds=60
            )
            for event in stream:
                seen = time.monotonic()
                obj = event["object"]
                name = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
                text = json.dumps(obj.get("status") or {}, sort_keys=True)
                replicas = int((obj.get("status") or {}).get("replicas", 0))
                with self.lock:
                    if self.statuses.get(name) != text:
                        self.statuses[name] = text
                    if self.replicas_since.get(name, (None, 0.0))[0] != replicas:
                        self.replicas_since[name] = (replicas, seen)
                if self._stop.is_set():
                    return

    def phases(self) -> Counter[str]:
        with self.lock:
            return Counter(json.loads(s).get("phase", "-") for s in self.statuses.values())

    def replicas(self, name: str) -> int | None:
        with self.lock:
            text = self.statuses.get(name)
        return None if text is None else int(json.loads(text).get("replicas", 0))

    def reached(self, name: str, replicas: int, since: float) -> float | None:
        """Seconds from ``since`` to the status change that made ``replicas`` true."""
        with self.lock:
            current, at = self.replicas_since.get(name, (None, 0.0))
        if current != replicas:
            return None
        return max(0.0, at - since)

    def stop(self) -> None:
        self._stop.set()


# -- apiserver request counts -----------------------------------------------------------------

_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def request_counts(cluster: LocalCluster) -> Counter[tuple[str, str, str]]:
    """apiserver_request_total by (verb, resource, subresource), for the operator's resources."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in text.splitlines():
        found = _SAMPLE.match(line)
        if not found:
            continue
        labels = dict(_LABEL.findall(found.group("labels")))
        if labels.get("resource") in OPERATOR_RESOURCES:
            key = (labels["verb"], labels["resource"], labels.get("subresource", ""))
            counts[key] += int(float(found.group("value")))
    return counts


def delta(
    after: Counter[tuple[str, str, str]], before: Counter[tuple[str, str, str]]
) -> dict[str, int]:
    out = {" ".join(p for p in key if p): after[key] - before[key] for key in after}
    return {key: value for key, value in sorted(out.items()) if value > 0}


def lists_by_client(cluster: LocalCluster, since: float, until: float) -> dict[str, dict[str, int]]:
    """LIST requests in [since, until] (Unix seconds) from the audit log, by client program."""
    with cluster.audit_log.open(encoding="utf-8") as lines:
        counts = count_lists(lines, since, until)
    out: dict[str, dict[str, int]] = {}
    for (program, resource), n in sorted(counts.items()):
        out.setdefault(program, {})[resource] = n
    return out


def node_not_ready_events(api: client.ApiClient) -> int:
    """How often the node lifecycle controller marked a node NotReady (its NodeNotReady Events)."""
    events = (
        client.CoreV1Api(api)
        .list_event_for_all_namespaces(field_selector="reason=NodeNotReady")
        .items
    )
    return sum(event.count or 1 for event in events)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Bed:
    cluster: LocalCluster
    fleet: Fleet
    namespaces: list[str]
    model_product: dict[str, int]  # "ns/name" -> product index
    node_product: dict[str, int]  # node name -> product index

    def affected(self, *products: int) -> list[str]:
        return [name for name, p in self.model_product.items() if p in products]

    def expected_replicas(self, model: str) -> int:
        """One server per node of the model's product (replicasPerGPU 1, a slice to spare)."""
        product = self.model_product[model]
        return sum(1 for p in self.node_product.values() if p == product)


def setup(cluster: LocalCluster, fleet: Fleet, nodes: int, models: int, namespaces: int) -> Bed:
    api = cluster.api_client
    crd = repo_root() / "crds" / "lipsyncmodels.lipsync.dev.yaml"
    cluster.kubectl("apply", "-f", str(crd))
    cluster.kubectl("wait", "--for=condition=Established", "crd/lipsyncmodels.lipsync.dev")
    names = [create_namespace(api, f"bench{i}") for i in range(namespaces)]
    for name in names:
        for claim in CLAIMS:
            prebound_claim(api, name, claim, f"/srv/bench/{claim}", access_mode="ReadOnlyMany")
    specs = [fleet.node_spec(i, i % fleet.products) for i in range(nodes)]
    add_nodes(api, specs, timeout=600)
    objects = client.CustomObjectsApi(api)
    placed: dict[str, int] = {}
    for index in range(models):
        namespace = names[index % namespaces]
        product = index % fleet.products
        objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, fleet.model_document(index, product)
        )
        placed[f"{namespace}/m{index}"] = product
    return Bed(
        cluster, fleet, names, placed, {s.name: i % fleet.products for i, s in enumerate(specs)}
    )


def node_events(bed: Bed, count: int) -> Iterator[tuple[str, list[str], Any]]:
    """(kind, affected models, action) in a fixed cycle: add, remove, relabel."""
    api = bed.cluster.api_client
    for index in range(count):
        product = index % bed.fleet.products
        kind = ("add", "remove", "relabel")[index % 3]
        if kind == "add":
            spec = bed.fleet.node_spec(100_000 + index, product)
            bed.node_product[spec.name] = product

            def action(spec: NodeSpec = spec) -> None:
                client.CoreV1Api(api).create_node(client.V1Node.model_validate(spec.manifest()))

            yield kind, bed.affected(product), action
        elif kind == "remove":
            name = next(n for n, p in bed.node_product.items() if p == product)
            del bed.node_product[name]
            yield kind, bed.affected(product), lambda name=name: remove_node(api, name, wait=False)
        else:
            name = next(n for n, p in bed.node_product.items() if p == product)
            target = (product + 1) % bed.fleet.products
            bed.node_product[name] = target
            labels = {PRODUCT_LABEL: bed.fleet.product(target)}
            yield (kind, bed.affected(product, target),
                   lambda name=name, labels=labels: relabel_node(api, name, labels))  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="lipsync-scale-"))
    heartbeats = NodeHeartbeats(
        args.node_lease_seconds,
        args.node_grace_seconds or minimum_grace_seconds(args.node_lease_seconds),
    )
    cluster = LocalCluster(
        work / "cluster", node_pool=[], die_with_parent=True, heartbeats=heartbeats,
        audit_lists=True,
    )  # fmt: skip
    cluster.start()
    builds = threading.Event()  # set once every model is Ready: no more builds to finish
    operator = OperatorProcess(
        Path(args.operator_python), cluster.kubeconfig, work / "operator.log"
    )
    statuses = StatusWatch(cluster.new_api_client())
    result: dict[str, Any] = {
        "nodes": args.nodes, "models": args.models, "namespaces": args.namespaces,
        "operator_python": args.operator_python, "log": str(work / "operator.log"),
        "node_lease_seconds": heartbeats.lease_seconds,
        "node_monitor_grace_seconds": heartbeats.grace_seconds,
    }  # fmt: skip
    try:
        products = args.products or max(1, args.models // 2)
        fleet = Fleet(products, -(-args.models // products))
        result["products"] = products
        bed = setup(cluster, fleet, args.nodes, args.models, args.namespaces)
        threading.Thread(
            target=finish_builds, args=(cluster.new_api_client(), builds), daemon=True
        ).start()
        statuses.start()
        before_start = request_counts(cluster)
        started = time.monotonic()
        started_wall = time.time()
        operator.start()
        cpu_before = 0.0

        def all_planned() -> bool:
            phases = statuses.phases()
            planned = [m for m in bed.model_product
                       if statuses.replicas(m) == bed.expected_replicas(m)]  # fmt: skip
            log.info("phases %s, %d models planned", dict(phases), len(planned))
            return len(planned) == args.models and not {"-", "Pending", "Building"} & set(phases)

        try:
            wait_for(all_planned, timeout=args.ready_timeout, interval=5.0,
                     description="every model serving on every node of its product")  # fmt: skip
            result["startup_seconds"] = round(time.monotonic() - started, 1)
            builds.set()
        except Exception:
            result["startup_seconds"] = None
            result["startup_phases"] = dict(statuses.phases())
            result["startup_requests"] = delta(request_counts(cluster), before_start)
            result["peak_rss_mib"] = round(operator.peak_rss_mib, 1)
            result["cpu_seconds"] = round(operator.cpu_seconds(), 1)
            return result
        result["startup_requests"] = delta(request_counts(cluster), before_start)
        result["startup_lists_by_client"] = lists_by_client(cluster, started_wall, time.time())
        result["startup_cpu_seconds"] = round(operator.cpu_seconds(), 1)
        time.sleep(args.settle)
        cpu_before = operator.cpu_seconds()
        latencies: dict[str, list[float]] = {"add": [], "remove": [], "relabel": []}
        missed = 0
        affected_total = 0
        before_events = request_counts(cluster)
        window = time.monotonic()
        window_wall = time.time()
        for kind, affected, action in node_events(bed, args.events):
            t0 = time.monotonic()
            action()
            pending = set(affected)
            wanted = {name: bed.expected_replicas(name) for name in affected}
            deadline = t0 + args.event_timeout
            while pending and time.monotonic() < deadline:
                for name in list(pending):
                    took = statuses.reached(name, wanted[name], t0)
                    if took is not None:
                        latencies[kind].append(took)
                        pending.discard(name)
                time.sleep(0.02)
            missed += len(pending)
            affected_total += len(affected)
            log.info("%s: %d models, %d missed", kind, len(affected), len(pending))
            time.sleep(args.settle)
        window = time.monotonic() - window
        requests = delta(request_counts(cluster), before_events)
        result["event_lists_by_client"] = lists_by_client(cluster, window_wall, time.time())
        every = [x for values in latencies.values() for x in values]
        result.update(
            events=args.events,
            affected_model_updates=affected_total,
            missed=missed,
            p50_seconds=round(percentile(every, 0.50), 3),
            p99_seconds=round(percentile(every, 0.99), 3),
            max_seconds=round(max(every, default=float("nan")), 3),
            by_kind={
                kind: {
                    "n": len(v),
                    "p50": round(percentile(v, 0.5), 3),
                    "p99": round(percentile(v, 0.99), 3),
                }
                for kind, v in latencies.items()
            },
            event_requests=requests,
            event_requests_per_affected_model=round(
                sum(requests.values()) / max(1, affected_total), 1
            ),
            event_list_requests=sum(v for k, v in requests.items() if k.startswith("LIST ")),
            event_cpu_seconds=round(operator.cpu_seconds() - cpu_before, 1),
            event_window_seconds=round(window, 1),
            mean_latency_seconds=round(statistics.fmean(every), 3) if every else None,
        )
        result["peak_rss_mib"] = round(operator.peak_rss_mib, 1)
        result["cpu_seconds"] = round(operator.cpu_seconds(), 1)
        # A restart over converged models: what the operator sends until it is idle again.
        operator.stop()
        before_restart = request_counts(cluster)
        restart_wall = time.time()
        operator.start()
        time.sleep(args.restart_window)
        restart = delta(request_counts(cluster), before_restart)
        result["restart_lists_by_client"] = lists_by_client(cluster, restart_wall, time.time())
        result["restart_window_seconds"] = args.restart_window
        result["restart_requests"] = restart
        result["restart_status_patches_per_model"] = round(
            restart.get("PATCH lipsyncmodels status", 0) / args.models, 2
        )
        result["restart_list_requests"] = sum(
            v for k, v in restart.items() if k.startswith("LIST ")
        )
        return result
    finally:
        builds.set()
        statuses.stop()
        operator.stop()
        result["peak_rss_mib"] = round(operator.peak_rss_mib, 1)
        # Healthy nodes marked NotReady re-plan models mid-measurement: none means valid timings.
        result["node_not_ready_events"] = node_not_ready_events(cluster.api_client)
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--products", type=int, default=0, help="GPU products (models / 2)")
    parser.add_argument("--events", type=int, default=12, help="node events, cycling kinds")
    parser.add_argument("--operator-python", default=sys.executable)
    parser.add_argument("--ready-timeout", type=float, default=1800.0)
    parser.add_argument("--event-timeout", type=float, default=120.0)
    parser.add_argument("--settle", type=float, default=3.0, help="pause between events")
    parser.add_argument("--restart-window", type=float, default=90.0, help="after a restart")
    # Fewer lease renewals and a grace period to match, so that a machine too small to renew a
    # thousand leases every 10 s does not flap healthy nodes NotReady mid-measurement.
    parser.add_argument(
        "--node-lease-seconds",
        type=int,
        default=240,
        help="KWOK node lease duration (renewed every quarter of it)",
    )
    parser.add_argument(
        "--node-grace-seconds",
        type=int,
        default=0,
        help="controller-manager --node-monitor-grace-period (0: five renewals of the lease)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
