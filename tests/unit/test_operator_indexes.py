"""Which kopf indexes the operator registers for which configuration."""

from __future__ import annotations

import kopf
import pytest

from lipsync_operator import indexes
from lipsync_operator.config import OperatorConfig

pytestmark = pytest.mark.unit

KEDA = OperatorConfig(autoscaler="keda", prometheus_address="http://prometheus:9090")


def scaled_object_indexes(registry: kopf.OperatorRegistry) -> list[tuple[str, str, str]]:
    return [
        (
            h.selector.group or "",
            h.selector.version or "",
            str(h.selector.any_name),
        )
        for h in registry._indexing.get_all_handlers()
        if h.selector is not None and h.selector.group == "keda.sh"
    ]


def test_scaled_objects_are_indexed_only_when_the_operator_uses_keda() -> None:
    plain = kopf.OperatorRegistry()
    indexes.register_optional(OperatorConfig(), plain)
    assert scaled_object_indexes(plain) == []
    keda = kopf.OperatorRegistry()
    indexes.register_optional(KEDA, keda)
    indexes.register_optional(KEDA, keda)  # a second start in one process adds nothing
    assert scaled_object_indexes(keda) == [("keda.sh", "v1alpha1", "scaledobjects")]


def test_the_view_has_no_scaled_objects_without_their_index() -> None:
    view = indexes.view(
        {name: {} for name in ("lipsync_nodes", "lipsync_pods", "lipsync_build_pods",
                               "lipsync_jobs", "lipsync_deployments", "lipsync_hpas",
                               "lipsync_models", "lipsync_builds", "lipsync_waiting",
                               "lipsync_published", "lipsync_pod_problems")}
    )  # fmt: skip
    assert view.scaled_objects == {}
    assert view.observed("default", "anna", "uid-1").scaled_objects == frozenset()
