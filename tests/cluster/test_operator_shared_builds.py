"""One build per engine key: two models of one UNet at one precision (two avatars) share each
GPU product's engine, built once, and each still gets its own servers and status. The operator
runs from the chart; build Jobs and server pods run for real on fake GPU nodes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from lipsync_testbed import GpuSpec, NodeSpec, add_node, remove_node, wait_for
from lipsync_testbed.lsm import (
    BUILD_SELECTOR,
    apply,
    deployments,
    engines,
    items,
    jobs,
    patch_spec,
    status,
    wait_phase,
    wait_serving,
)
from lipsync_testbed.operatorchart import MODEL_URI, OperatorBed

pytestmark = pytest.mark.cluster

A100 = "NVIDIA-A100-SXM4-80GB"
L4 = "NVIDIA-L4"
BUILD_TIMEOUT = 480.0  # two ORT CPU builds at once on a shared 2-core machine
# One time-sliced GPU per product (4 slices): room for a build and both models' servers.
NODES = tuple(
    NodeSpec(
        name=f"shared-{pool}-0",
        pool=pool,
        gpu=GpuSpec(
            product=product,
            count=1,
            memory_mib=memory,
            compute_major=8,
            compute_minor=minor,
            sharing_strategy="time-slicing",
            replicas=4,
        ),
    )
    for pool, product, memory, minor in (("a100", A100, 81920, 0), ("l4", L4, 23034, 9))
)


def model(name: str, avatar: str) -> dict[str, Any]:
    return {
        "apiVersion": "lipsync.dev/v1alpha1",
        "kind": "LipSyncModel",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": MODEL_URI},
            "avatar": {"uri": avatar},
            "precision": "fp32",
            "gpus": {"products": [A100, L4]},
            "replicasPerGPU": 1,
            "sharing": "timeSlicing",
            "batching": {"maxBatch": 1},
        },
    }


@pytest.fixture(scope="module")
def gpu_nodes(kube_api: client.ApiClient) -> Iterator[tuple[str, ...]]:
    for node in NODES:
        add_node(kube_api, node)
    yield tuple(node.name for node in NODES)
    for node in NODES:
        remove_node(kube_api, node.name)


def _key(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["annotations"]["lipsync.dev/engine-key"])


def test_two_models_of_one_engine_build_it_once_per_product_and_both_serve_it(
    bed: OperatorBed, gpu_nodes: tuple[str, ...]
) -> None:
    cluster, namespace = bed.cluster, bed.namespace
    apply(cluster, namespace, model("ada", bed.avatar("ada")))

    def ada_builds() -> list[dict[str, Any]] | None:
        found = jobs(cluster, namespace, "ada")
        return found if len(found) == 2 else None

    ada_jobs = wait_for(
        ada_builds, timeout=120, interval=0.5, description="ada's build Jobs, one per product"
    )
    apply(cluster, namespace, model("ben", bed.avatar("ben")))

    seen_jobs: dict[str, tuple[str, str]] = {}  # uid -> (owner, product)
    ben_waited_in: set[str] = set()

    def both_ready() -> bool:
        for job in items(cluster, "jobs", namespace, BUILD_SELECTOR):
            labels = job["metadata"]["labels"]
            owner = labels["lipsync.dev/model"]
            seen_jobs[job["metadata"]["uid"]] = (owner, labels["lipsync.dev/gpu-product"])
        ben = engines(status(cluster, namespace, "ben"))
        ben_waited_in.update(e["job"] for e in ben.values() if e["state"] == "Building")
        phases = {name: status(cluster, namespace, name).get("phase") for name in ("ada", "ben")}
        return set(phases.values()) == {"Ready"}

    wait_for(both_ready, timeout=BUILD_TIMEOUT, interval=1.0, description="ada and ben Ready")

    # One build Job per GPU product, ever: ada's. ben waited for them instead of building.
    assert sorted(seen_jobs.values()) == [("ada", A100), ("ada", L4)]
    assert ben_waited_in <= {f"{namespace}/{job['metadata']['name']}" for job in ada_jobs}
    assert ben_waited_in, "ben was never seen waiting for ada's builds"
    assert jobs(cluster, namespace, "ben") == []

    # Both Ready on the same key per product, the key the Job built, each with its own servers.
    keys = {_key(job): job["metadata"]["labels"]["lipsync.dev/gpu-product"] for job in ada_jobs}
    ada, ben = (engines(status(cluster, namespace, name)) for name in ("ada", "ben"))
    for product in (A100, L4):
        assert ada[product]["key"] == ben[product]["key"]
        assert keys[ada[product]["key"]] == product
        assert ada[product]["artifact"] == ben[product]["artifact"]
    for name in ("ada", "ben"):
        served = deployments(cluster, namespace, name)
        assert {product: _key(d) for product, d in served.items()} == {
            product: ada[product]["key"] for product in (A100, L4)
        }
        for product in (A100, L4):
            [pod] = wait_serving(cluster, namespace, name, product, 1)
            assert pod["metadata"]["labels"]["lipsync.dev/model"] == name
    entries = sorted(p.name for p in (bed.cache_dir() / "engines").iterdir())
    assert entries == sorted(key.removeprefix("sha256:") for key in keys)


def test_a_model_waiting_for_a_deleted_models_build_builds_the_engine_itself(
    bed: OperatorBed,
) -> None:
    cluster, namespace = bed.cluster, bed.namespace
    fp16_on_a100 = {"precision": "fp16", "gpus": {"products": [A100]}}
    patch_spec(cluster, namespace, "ada", fp16_on_a100)

    def ada_building() -> dict[str, Any] | None:
        found = [
            j
            for j in jobs(cluster, namespace, "ada")
            if not (j.get("status") or {}).get("succeeded")
        ]
        return found[0] if found else None

    ada_job = wait_for(ada_building, timeout=120, interval=0.5, description="ada's fp16 build")
    key = _key(ada_job)
    patch_spec(cluster, namespace, "ben", fp16_on_a100)
    waiting_in = f"{namespace}/{ada_job['metadata']['name']}"
    wait_for(
        lambda: engines(status(cluster, namespace, "ben")).get(A100, {}).get("job") == waiting_in,
        timeout=60,
        interval=0.5,
        description="ben waiting for ada's fp16 build",
    )
    cluster.kubectl("delete", "lsm", "ada", "-n", namespace, "--wait=false")

    ben_job = wait_for(
        lambda: next(iter(jobs(cluster, namespace, "ben")), None),
        timeout=120,
        interval=0.5,
        description="ben's own build of the key ada's deleted build left",
    )
    assert _key(ben_job) == key
    ready = wait_phase(cluster, namespace, "ben", "Ready", timeout=BUILD_TIMEOUT)
    assert engines(ready)[A100]["key"] == key
    wait_serving(cluster, namespace, "ben", A100, 1)
