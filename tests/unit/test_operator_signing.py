"""Build Job signatures: a Job the operator rendered verifies as the API server returns it; a
look-alike, a copy in another namespace, or a Job whose pods would run something else does not."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lipsync_contract.request import BuildRequest
from lipsync_contract.result import BuildResult
from lipsync_operator.builds import shared_build
from lipsync_operator.config import OperatorConfig
from lipsync_operator.manifests.build_job import build_job
from lipsync_operator.manifests.common import Owner
from lipsync_operator.observed import BuildJob
from lipsync_operator.signing import ANNOTATION_SIGNATURE, BuildSigner

pytestmark = pytest.mark.unit

SIGNER = BuildSigner(b"0123456789abcdef0123456789abcdef")
KEY = "sha256:" + "ab" * 32


def rendered() -> dict[str, Any]:
    owner = Owner(name="anna", namespace="tenant-a", uid="uid-1", generation=1)
    request = BuildRequest(
        model="pvc://lipsync-models/unet328.onnx",
        gpu_product="NVIDIA-L4",
        cache="/var/cache/lipsync",
        audio_encoder="file:///models/ave.onnx",
    )
    config = OperatorConfig(
        runtime_image="ghcr.io/lipsync/runtime:1.0", allowed_host_paths=("/models",)
    )
    return build_job(
        owner, request, key=KEY, product_labels=["NVIDIA-L4"], image=config.runtime_image,
        config=config, credentials_secret="anna-source",
    )  # fmt: skip


def as_the_api_server_returns_it(job: dict[str, Any]) -> dict[str, Any]:
    """Defaults and bookkeeping the API server and the Job controller add."""
    stored = copy.deepcopy(job)
    stored["metadata"].update(uid="uid-job", resourceVersion="42", generation=1)
    template = stored["spec"]["template"]
    template["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] = "uid-job"
    pod = template["spec"]
    pod.update(dnsPolicy="ClusterFirst", schedulerName="default-scheduler")
    for container in pod["containers"]:
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        for mount in container["volumeMounts"]:
            mount.setdefault("mountPropagation", "None")
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            volume["persistentVolumeClaim"].setdefault("readOnly", False)
        if "hostPath" in volume:
            volume["hostPath"].setdefault("type", "")
        if "emptyDir" in volume:
            volume["emptyDir"]["sizeLimit"] = "1024Mi"  # a quantity, normalized
    stored["status"] = {"active": 1}
    return stored


def test_a_signed_job_verifies_as_the_api_server_returns_it() -> None:
    job = rendered()
    signed = SIGNER.signed(job)
    assert ANNOTATION_SIGNATURE not in job["metadata"].get("annotations", {})
    assert signed["metadata"]["annotations"]["lipsync.dev/engine-key"] == KEY
    assert SIGNER.verified(as_the_api_server_returns_it(signed))
    assert not SIGNER.verified(job)


def _changed(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    job = copy.deepcopy(SIGNER.signed(rendered()))
    target: Any = job
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return job


POD = ("spec", "template", "spec")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("metadata", "namespace"), "tenant-b"),  # a copy in another namespace
        (("metadata", "name"), "anna-build-other"),
        (("metadata", "annotations", "lipsync.dev/engine-key"), "sha256:" + "cd" * 32),
        ((*POD, "containers", 0, "image"), "attacker/runtime:1.0"),
        ((*POD, "containers", 0, "args", 1), "https://attacker.example/unet.onnx"),
        ((*POD, "containers", 0, "command"), ["sh", "-c", "echo forged"]),
        ((*POD, "volumes", 0, "persistentVolumeClaim", "claimName"), "someone-elses-cache"),
        (
            (*POD, "containers", 0, "env", -1, "valueFrom", "secretKeyRef", "name"),
            "someone-elses-credentials",
        ),
    ],
    ids=["namespace", "name", "key", "image", "args", "command", "volume", "credentials"],
)
def test_a_job_changed_after_signing_does_not_verify(path: tuple[Any, ...], value: Any) -> None:
    assert not SIGNER.verified(_changed(path, value))


def test_another_key_does_not_verify_and_short_keys_are_refused(tmp_path: Path) -> None:
    signed = SIGNER.signed(rendered())
    assert not BuildSigner(b"another-key-of-32-bytes-0123456").verified(signed)
    key_file = tmp_path / "key"
    key_file.write_bytes(b"0123456789abcdef0123456789abcdef\n")  # as a Secret file may end
    assert BuildSigner.from_file(key_file).verified(signed)
    assert not BuildSigner.from_file(None).verified(signed)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        BuildSigner(b"short")


def test_an_unsigned_job_is_never_the_build_a_model_follows_even_its_own() -> None:
    ready = BuildResult(key=KEY, state="Ready", artifact="engine.onnx")
    signed = BuildJob("anna-build-ab", KEY, "NVIDIA-L4", "Succeeded", ready, namespace="a")
    look_alike = replace(signed, name="anna-build-forged", created="0", signed=False)
    assert shared_build([look_alike], KEY) is None
    assert shared_build([look_alike, signed], KEY) == signed


def test_the_source_token_reaches_the_builder_only_from_its_secret() -> None:
    [container] = rendered()["spec"]["template"]["spec"]["containers"]
    token = next(e for e in container["env"] if e["name"] == "LIPSYNC_SOURCE_TOKEN")
    assert token == {
        "name": "LIPSYNC_SOURCE_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "anna-source", "key": "token"}},
    }
    assert not any("anna-source" in arg for arg in container["args"])
