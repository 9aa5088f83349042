"""Specs the API server would refuse once rendered into children, caught before any is created."""

from __future__ import annotations

from lipsync_contract.api import LipSyncModelSpec
from lipsync_operator.manifests.autoscaler import quantity
from lipsync_operator.naming import name_problem


def spec_problem(model: str, spec: LipSyncModelSpec) -> str | None:
    """The first reason the model's children cannot be rendered validly, or None."""
    problem = name_problem(model)
    if problem is not None:
        return problem
    policy = spec.autoscaling
    if not policy.enabled:
        return None
    targets = {"targetFps": policy.target_fps} | {
        f"productTargetFps[{product}]": fps for product, fps in policy.product_target_fps.items()
    }
    for field, fps in targets.items():
        if fps is not None and quantity(fps) == "0":
            return (
                f"spec.autoscaling.{field}: {fps} is below the smallest "
                "quantity an HPA target can hold (0.001)"
            )
    return None
