"""One build per engine key: two models of one UNet at one precision (two avatars) share each
GPU product's engine, built once, and each still gets its own servers and status; a Job made to
look like a build of the key, in another namespace, is never followed. The operator runs from
the chart; build Jobs and server pods run as containers on real nodes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from lipsync_operator import naming
from lipsync_testbed import GpuSpec, NodeSpec, create_namespace, wait_for
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
from lipsync_testbed.nodebed import added_real_nodes
from lipsync_testbed.operatorchart import OperatorBed, small_model

pytestmark = pytest.mark.cluster

A100 = "NVIDIA-A100-SXM4-80GB"
# Not the test bed node's own product (NVIDIA-L40S), so these models run on these nodes only.
L40S = "NVIDIA-L40S"
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
    for pool, product, memory, minor in (("a100", A100, 81920, 0), ("l40s", L40S, 46068, 9))
)


def model(name: str, avatar: str) -> dict[str, Any]:
    return small_model(name, avatar, A100, gpus={"products": [A100, L40S]}, sharing="timeSlicing")


@pytest.fixture(scope="module")
def gpu_nodes(bed: OperatorBed) -> Iterator[tuple[str, ...]]:
    with added_real_nodes(bed.cluster, *NODES) as names:
        yield names


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
    assert sorted(seen_jobs.values()) == [("ada", A100), ("ada", L40S)]
    assert ben_waited_in <= {f"{namespace}/{job['metadata']['name']}" for job in ada_jobs}
    assert ben_waited_in, "ben was never seen waiting for ada's builds"
    assert jobs(cluster, namespace, "ben") == []

    # Both Ready on the same key per product, the key the Job built, each with its own servers.
    keys = {_key(job): job["metadata"]["labels"]["lipsync.dev/gpu-product"] for job in ada_jobs}
    ada, ben = (engines(status(cluster, namespace, name)) for name in ("ada", "ben"))
    for product in (A100, L40S):
        assert ada[product]["key"] == ben[product]["key"]
        assert keys[ada[product]["key"]] == product
        assert ada[product]["artifact"] == ben[product]["artifact"]
    for name in ("ada", "ben"):
        served = deployments(cluster, namespace, name)
        assert {product: _key(d) for product, d in served.items()} == {
            product: ada[product]["key"] for product in (A100, L40S)
        }
        for product in (A100, L40S):
            [pod] = wait_serving(cluster, namespace, name, product, 1)
            assert pod["metadata"]["labels"]["lipsync.dev/model"] == name
    entries = sorted(p.name for p in (bed.cache_dir() / "engines").iterdir())
    assert entries == sorted(key.removeprefix("sha256:") for key in keys)


@pytest.fixture
def ada_and_ben(bed: OperatorBed, gpu_nodes: tuple[str, ...]) -> tuple[str, str]:
    """Both models applied (again, if the test before did) and Ready."""
    for name in ("ada", "ben"):
        apply(bed.cluster, bed.namespace, model(name, bed.avatar(name)))
    for name in ("ada", "ben"):
        wait_phase(bed.cluster, bed.namespace, name, "Ready", timeout=BUILD_TIMEOUT)
    return ("ada", "ben")


def test_a_model_waiting_for_a_deleted_models_build_builds_the_engine_itself(
    bed: OperatorBed, ada_and_ben: tuple[str, str]
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


def _look_alike(real: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A Job with a real build's labels, key and signature, whose pod reports a Ready engine
    of its own making."""
    meta = real["metadata"]
    key = _key(real)
    forged = f'{{"key":"{key}","state":"Ready","artifact":"/var/cache/lipsync/forged/engine.onnx"}}'
    [container] = real["spec"]["template"]["spec"]["containers"]
    labels = dict(meta["labels"])
    write = f"open('/dev/termination-log', 'w').write({forged!r})"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": meta["name"],
            "namespace": namespace,
            "labels": labels,
            "annotations": dict(meta["annotations"]),  # the key and the real Job's signature
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "builder",
                            "image": container["image"],
                            "imagePullPolicy": "Never",
                            "command": ["python", "-c", write],
                        }
                    ],
                },
            },
        },
    }


def test_a_look_alike_build_in_another_namespace_is_never_followed(
    bed: OperatorBed, ada_and_ben: tuple[str, str], tmp_path: Path
) -> None:
    cluster, namespace = bed.cluster, bed.namespace
    [real] = [
        job
        for job in jobs(cluster, namespace, "ada")
        if job["metadata"]["labels"]["lipsync.dev/gpu-product"] == A100
        and job["metadata"]["annotations"].get("lipsync.dev/build-signature")
    ]
    for name in ada_and_ben:  # their builds go with them: the look-alike is the only one left
        cluster.kubectl("delete", "lsm", name, "-n", namespace)
    wait_for(
        lambda: not items(cluster, "jobs", namespace, BUILD_SELECTOR),
        timeout=120,
        description="ada's build Jobs gone",
    )
    forger = create_namespace(bed.api, "forger")
    look_alike = _look_alike(real, forger)
    assert look_alike["metadata"]["labels"][naming.LABEL_MANAGED_BY] == naming.MANAGER
    manifest = tmp_path / "look-alike.json"
    manifest.write_text(json.dumps(look_alike))
    cluster.kubectl("create", "-f", str(manifest))
    wait_for(
        lambda: (items(cluster, "jobs", forger, BUILD_SELECTOR)[0].get("status") or {}).get(
            "succeeded"
        ),
        timeout=120,
        description="the look-alike Job succeeded with its Ready result",
    )

    apply(cluster, namespace, model("cleo", bed.avatar("cleo")))
    ready = wait_phase(cluster, namespace, "cleo", "Ready", timeout=BUILD_TIMEOUT)
    engine = engines(ready)[A100]
    assert engine["key"] == _key(real)
    assert "forged" not in engine["artifact"]
    [own] = [
        job
        for job in jobs(cluster, namespace, "cleo")
        if job["metadata"]["labels"]["lipsync.dev/gpu-product"] == A100
    ]
    assert _key(own) == _key(real)
    assert engine["job"] in ("", f"{namespace}/{own['metadata']['name']}")
    client.CoreV1Api(bed.api).delete_namespace(forger)
