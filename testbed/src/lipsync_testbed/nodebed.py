"""The operator's chart on real nodes: the project's images (`make images`) run as containers
by a real kubelet + containerd, under the chart's securityContext, in namespaces where
PodSecurity admission enforces `restricted`.

`node_operator_bed(cluster, work_dir, reference_model, values)` is a generator for a module
fixture: the models, avatars and the engine cache are
PersistentVolumeClaims bound to hostPath volumes under `work_dir` (hostPath volumes in pods are
not allowed under `restricted`), and the chart gets only the documented image, cache and
resource settings (`NODE_VALUES`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from lipsync_testbed.cluster import LocalCluster
from lipsync_testbed.nodes import GpuSpec, NodeSpec
from lipsync_testbed.operatorchart import (
    CHART,
    FAST_BUILD_VALUES,
    MODEL_PATH,
    RELEASE_NAMESPACE,
    OperatorBed,
    installed_bed,
)
from lipsync_testbed.resources import create_namespace, delete_namespace
from lipsync_testbed.versions import ClusterSetupError, repo_root

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
# The uid the images and the chart run as (images/*.Dockerfile, the chart's securityContext).
IMAGE_UID = 10001
# A test bed node: 2 cores; one L4 (fake nvidia.com/gpu) so GPU pods are scheduled there.
REAL_NODE = NodeSpec(
    name="node-0",
    gpu=GpuSpec(
        product="NVIDIA-L4",
        count=1,
        memory_mib=23034,
        compute_major=8,
        compute_minor=9,
        family="ada-lovelace",
    ),
)
REAL_NODE_PRODUCT = "NVIDIA-L4"


def app_version() -> str:
    match = re.search(r'^appVersion:\s*"?([^"\n]+)"?', (CHART / "Chart.yaml").read_text(), re.M)
    if not match:
        raise ClusterSetupError(f"{CHART / 'Chart.yaml'} has no appVersion")
    return match.group(1)


def image_dir() -> Path:
    """Where `make images` writes the OCI archives ($LIPSYNC_IMAGE_DIR overrides)."""
    return Path(os.environ.get("LIPSYNC_IMAGE_DIR") or repo_root() / "out" / "images")


def project_images() -> list[Path]:
    """The operator and runtime-cpu archives; a clear error when `make images` has not run."""
    archives = [image_dir() / "operator.oci.tar", image_dir() / "runtime-cpu.oci.tar"]
    missing = [str(a) for a in archives if not a.is_file()]
    if missing:
        raise ClusterSetupError(f"image archives missing: {', '.join(missing)}; run `make images`")
    return archives


TESTBED_VALUES_FILE = repo_root() / "examples" / "testbed" / "values.yaml"


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def node_values() -> dict[str, str]:
    """The chart's defaults plus what a user's one-node test bed sets (examples/testbed/
    values.yaml: the runtime's CPU flavour, pods sized for 2 cores) and one-frame build checks."""
    documented = yaml.safe_load(TESTBED_VALUES_FILE.read_text(encoding="utf-8"))
    return {**_flatten(documented), **FAST_BUILD_VALUES}


def node_operator_bed(
    cluster: LocalCluster,
    work_dir: Path,
    reference_model: Path,
    values: Mapping[str, str] | None = None,
    *,
    namespaced: bool = False,
    namespace_labels: Mapping[str, str] = RESTRICTED,
) -> Iterator[OperatorBed]:
    """`helm install` onto the real nodes with the claims the examples name; all removed after.

    ``namespaced``: the chart watches only the models namespace. ``namespace_labels``: that
    namespace's (PodSecurity `restricted` unless a test needs what it forbids).
    """
    claims = work_dir / "claims"
    model = claims / "lipsync-models" / MODEL_PATH
    model.parent.mkdir(parents=True)
    shutil.copyfile(reference_model, model)  # a link would point outside the volume
    (claims / "lipsync-avatars").mkdir()
    cache = work_dir / "cache"
    cache.mkdir()
    os.chown(cache, IMAGE_UID, IMAGE_UID)
    api = cluster.api_client
    try:
        create_namespace(api, RELEASE_NAMESPACE, labels=RESTRICTED, exact=True)
    except ApiException as exc:
        if exc.status != 409:
            raise
    try:
        yield from installed_bed(
            cluster,
            work_dir,
            {**node_values(), **(values or {})},
            namespaced=namespaced,
            claim_root=str(claims),
            namespace_labels=namespace_labels,
            cache_claim=str(cache),
        )
    finally:
        delete_namespace(api, RELEASE_NAMESPACE)


@contextlib.contextmanager
def added_real_nodes(cluster: LocalCluster, *specs: NodeSpec) -> Iterator[tuple[str, ...]]:
    """Real nodes for `specs` while in the block (a node autoscaler adding machines); those
    a test has not taken away itself are removed on exit."""
    try:
        for spec in specs:
            cluster.add_real_node(spec)
        yield tuple(spec.name for spec in specs)
    finally:
        for spec in specs:
            cluster.remove_real_node(spec.name, missing_ok=True)
