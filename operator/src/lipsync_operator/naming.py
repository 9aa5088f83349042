"""Deterministic names and labels of the objects the operator owns.

A retried or restarted operator derives the same names from the same inputs, so it finds what it
created instead of creating a twin.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63  # DNS-1123 label; Job names also become the job-name label value

LABEL_MODEL = "lipsync.dev/model"
LABEL_PRODUCT = "lipsync.dev/gpu-product"
LABEL_ENGINE = "lipsync.dev/engine"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_ENGINE_KEY = "lipsync.dev/engine-key"
ANNOTATION_ARTIFACT = "lipsync.dev/engine-artifact"
ANNOTATION_ENCODER_KEY = "lipsync.dev/audio-encoder-key"
ANNOTATION_ENCODER_ARTIFACT = "lipsync.dev/audio-encoder-artifact"
ANNOTATION_ARTIFACT_SHA256 = "lipsync.dev/engine-artifact-sha256"
ANNOTATION_ENCODER_ARTIFACT_SHA256 = "lipsync.dev/audio-encoder-artifact-sha256"
# The spec the pod template was rendered from: the template keeps it while a new engine builds.
ANNOTATION_SERVING_SPEC = "lipsync.dev/serving-spec"
# GPUs on node-autoscaled nodes a Deployment without an autoscaler may serve on.
ANNOTATION_AUTOSCALED_GPUS = "lipsync.dev/autoscaled-gpus"

MANAGER = "lipsync-operator"
COMPONENT_BUILD = "engine-build"
COMPONENT_SERVER = "server"


def _digest(text: str, length: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def slug(text: str) -> str:
    """Lower-case DNS label characters: ``NVIDIA-H100-80GB-HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def name_problem(model: str) -> str | None:
    """Why a LipSyncModel name cannot name its children (None when it can).

    The Service is named after the model and Service names are DNS-1035 labels: they start with
    a letter. Other characters (dots, length) are handled by `model_base`.
    """
    if not model[:1].isalpha() or not model[:1].isascii():
        return (
            f"metadata.name {model!r} cannot name a Service: "
            "it must start with a letter (DNS-1035 label)"
        )
    return None


def model_base(model: str) -> str:
    """The model's part of its children's names, distinct for distinct models.

    A name that is already a DNS-1035 label is used as it is; any other (``anna.v2``) is slugged
    and gets a digest of the original, so it cannot meet the name of another model
    (``anna-v2``).
    """
    if _DNS_1035_LABEL.fullmatch(model) and len(model) <= MAX_NAME:
        return model
    return f"{slug(model)}-{_digest(model)}"


def child_name(*parts: str, max_length: int = MAX_NAME) -> str:
    """Join parts with '-'; over the limit, truncate and append a digest of the full name."""
    full = "-".join(slug(part) for part in parts if part)
    if len(full) <= max_length:
        return full
    suffix = _digest(full)
    return f"{full[: max_length - len(suffix) - 1].rstrip('-')}-{suffix}"


def label_value(text: str) -> str:
    """A valid label value for any name (names may be longer than 63 characters)."""
    if len(text) <= MAX_NAME:
        return text
    suffix = _digest(text)
    return f"{text[: MAX_NAME - len(suffix) - 1].rstrip('-.')}-{suffix}"


def job_name(model: str, key_short: str) -> str:
    return child_name(model_base(model), "build", key_short)


def deployment_name(model: str, product: str) -> str:
    return child_name(model_base(model), product)


def service_name(model: str) -> str:
    return child_name(model_base(model))


def model_labels(model: str) -> dict[str, str]:
    return {LABEL_NAME: "lipsync", LABEL_MODEL: label_value(model), LABEL_MANAGED_BY: MANAGER}


def server_selector(model: str, product: str | None = None) -> dict[str, str]:
    selector = {LABEL_COMPONENT: COMPONENT_SERVER, LABEL_MODEL: label_value(model)}
    if product is not None:
        selector[LABEL_PRODUCT] = label_value(product)
    return selector
