"""Operator settings from the environment the Helm chart sets; the handlers module imports."""

from __future__ import annotations

from typing import Any

import pytest

from lipsync_operator.config import ConfigError, OperatorConfig

pytestmark = pytest.mark.unit


def test_settings_from_the_charts_environment() -> None:
    config = OperatorConfig.from_env(
        {
            "LIPSYNC_RUNTIME_IMAGE": "registry/runtime:2",
            "LIPSYNC_SERVER_IMAGE": "",
            "LIPSYNC_BACKEND": "onnxruntime-cpu",
            "LIPSYNC_BUILD_TTL_SECONDS": "600",
            "LIPSYNC_CACHE_KIND": "hostPath",
            "LIPSYNC_NODE_GRACE_SECONDS": "60",
        }
    )
    assert config.default_server_image == "registry/runtime:2"
    assert config.default_builder_image == "registry/runtime:2"
    assert config.runtime_id == "registry/runtime:2"
    assert config.backend == "onnxruntime-cpu"
    assert config.build_ttl_seconds == 600
    assert config.cache.kind == "hostPath"
    assert config.node_grace_seconds == 60


def test_pod_sizes_from_the_charts_environment_keep_unset_defaults() -> None:
    config = OperatorConfig.from_env(
        {
            "LIPSYNC_SERVER_RESOURCES_CPU": "500m",
            "LIPSYNC_SERVER_RESOURCES_MEMORY_LIMIT": "2Gi",
            "LIPSYNC_BUILDER_RESOURCES_MEMORY": "1Gi",
        }
    )
    defaults = OperatorConfig()
    assert config.server_resources.cpu == "500m"
    assert config.server_resources.memory == defaults.server_resources.memory
    assert config.server_resources.memory_limit == "2Gi"
    assert config.builder_resources.memory == "1Gi"
    assert config.builder_resources.cpu == defaults.builder_resources.cpu
    assert config.server_resources.manifest("nvidia.com/gpu")["requests"]["cpu"] == "500m"


def test_bad_setting_is_one_readable_line() -> None:
    with pytest.raises(ConfigError, match="operator setting backend"):
        OperatorConfig.from_env({"LIPSYNC_BACKEND": "magic"})


def test_handlers_module_imports_without_a_cluster() -> None:
    from lipsync_operator import handlers

    # Importing registers the handlers; it must not connect to anything.
    assert handlers.on_lipsyncmodel_change.__module__ == "lipsync_operator.handlers"
    assert handlers.reconciles_are_live.__module__ == "lipsync_operator.handlers"


def test_a_reconcile_reads_a_snapshot_of_the_body_not_the_live_one() -> None:
    import kopf

    from lipsync_operator.handlers import snapshot

    metadata: dict[str, Any] = {"name": "anna", "generation": 1}
    raw: Any = {"metadata": metadata, "spec": {"precision": "fp16"}}
    live = kopf.Body(raw)
    taken = snapshot(live)
    metadata["generation"] = 2  # what the next event brings, in place or not
    raw["spec"] = {"precision": "int8"}
    assert taken == {"metadata": {"name": "anna", "generation": 1}, "spec": {"precision": "fp16"}}
