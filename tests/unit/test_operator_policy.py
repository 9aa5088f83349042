"""The operator's isolation policy: what a LipSyncModel may name, run and take."""

from __future__ import annotations

from typing import Any

import pytest

from lipsync_contract.api import LipSyncModelSpec
from lipsync_operator.config import ConfigError, OperatorConfig
from lipsync_operator.policy import (
    PolicyError,
    allot_gpus,
    cache_subdir,
    check_spec,
    check_uri,
    gpu_limit,
    image_identity,
    runtime_identity,
    spec_uris,
    trusted_builder,
    under_prefix,
)

pytestmark = pytest.mark.unit

RUNTIME = "registry.example/lipsync-runtime:1.0"
DIGEST = "sha256:" + "ab" * 32
OPEN = OperatorConfig(runtime_image=RUNTIME, allow_image_overrides=True)


def spec(**changes: Any) -> LipSyncModelSpec:
    base = {"model": {"uri": "pvc://models/unet.onnx"}, "avatar": {"uri": "pvc://avatars/anna"}}
    return LipSyncModelSpec.model_validate({**base, **changes})


@pytest.mark.parametrize(
    "uri",
    [
        "pvc://c/../x",
        "pvc://c/a/../../x",
        "pvc://c/./x",
        "pvc://c/a/%2e%2e/x",  # percent-encoded '..'
        "https://m.example/bucket/../x",
    ],
)
def test_dot_segments_are_refused_in_every_scheme(uri: str) -> None:
    with pytest.raises(PolicyError, match=r"spec\.avatar\.uri .*'\.\.' path segments"):
        check_uri("spec.avatar.uri", uri, ["/srv"])


def test_pvc_uris_need_a_valid_claim_and_plain_paths_pass() -> None:
    check_uri("f", "pvc://lipsync-models/unet328/unet_328.onnx", [])
    check_uri("f", "pvc://claim", [])
    check_uri("f", "https://example.com/a..b/unet.onnx", [])  # '..' inside a name is a name
    with pytest.raises(PolicyError, match="needs a claim name"):
        check_uri("f", "pvc://Bad_Claim/x", [])


def test_file_uris_are_refused_unless_the_admin_allows_their_prefix() -> None:
    with pytest.raises(PolicyError, match=r"file:// \(node paths\) is disabled.*allowedHostPaths"):
        check_uri("spec.avatar.uri", "file:///", [])
    with pytest.raises(PolicyError, match="must be under /srv/avatars"):
        check_uri("spec.avatar.uri", "file:///", ["/srv/avatars"])
    with pytest.raises(PolicyError, match="must be under /srv/avatars"):
        check_uri("spec.avatar.uri", "file:///srv/avatars-other/anna", ["/srv/avatars"])
    check_uri("spec.avatar.uri", "file:///srv/avatars/anna", ["/srv/avatars"])
    check_uri("spec.avatar.uri", "file:///srv/avatars", ["/srv/avatars/"])


def test_relative_file_uris_are_refused() -> None:
    for uri in ("file://srv/avatars/anna", "file://host/srv/avatars/anna"):
        with pytest.raises(PolicyError, match=r"absolute node paths \(file:///path\)"):
            check_uri("f", uri, ["/srv"])


def test_a_path_is_under_a_prefix_by_whole_segments() -> None:
    assert under_prefix("/srv/a/b", "/srv/a")
    assert under_prefix("/srv/a", "/srv/a/")
    assert not under_prefix("/srv/ab", "/srv/a")
    assert not under_prefix("/srv", "/srv/a")


def test_every_uri_of_a_spec_is_checked() -> None:
    model = spec(
        audioEncoder={"uri": "pvc://models/ave.onnx"},
        precision="int8",
        calibration={"uri": "pvc://c/../calib"},
    )
    assert [field for field, _ in spec_uris(model)] == [
        "spec.model.uri",
        "spec.avatar.uri",
        "spec.audioEncoder.uri",
        "spec.calibration.uri",
    ]
    with pytest.raises(PolicyError, match=r"^spec\.calibration\.uri"):
        check_spec(model, OperatorConfig())


def test_image_overrides_are_refused_by_default_and_accepted_when_allowed() -> None:
    for field in ("server", "builder"):
        model = spec(images={field: "evil.example/x:1"})
        with pytest.raises(PolicyError, match=rf"spec\.images\.{field} .*images\.allowOverrides"):
            check_spec(model, OperatorConfig())
        check_spec(model, OPEN)


def test_the_engine_key_runtime_is_the_image_that_builds_by_digest_when_given() -> None:
    assert runtime_identity(spec(), OPEN) == RUNTIME
    assert runtime_identity(spec(images={"builder": "r.example/b:2"}), OPEN) == "r.example/b:2"
    pinned = spec(images={"builder": f"r.example:5000/team/b:2@{DIGEST}"})
    assert runtime_identity(pinned, OPEN) == f"r.example:5000/team/b@{DIGEST}"
    # A private build's key is its model's own.
    assert runtime_identity(pinned, OPEN, "private/a/b") == (
        f"r.example:5000/team/b@{DIGEST} in private/a/b"
    )


def test_image_identity_keeps_the_digest_and_drops_a_tag_beside_it() -> None:
    assert image_identity("b:2") == "b:2"
    assert image_identity(f"b:2@{DIGEST}") == f"b@{DIGEST}"
    assert image_identity(f"localhost:5000/b@{DIGEST}") == f"localhost:5000/b@{DIGEST}"


def test_only_trusted_builders_write_the_shared_cache() -> None:
    config = OperatorConfig(
        runtime_image=RUNTIME,
        allow_image_overrides=True,
        trusted_builder_images=("r.example/trusted:1", f"r.example/pinned@{DIGEST}"),
    )
    assert trusted_builder(RUNTIME, config)
    assert trusted_builder("r.example/trusted:1", config)
    assert trusted_builder(f"r.example/pinned:3@{DIGEST}", config)
    assert not trusted_builder("r.example/pinned:3", config)  # a tag is not the pinned digest
    assert cache_subdir(spec(), config, "team-a", "anna") == ""
    assert cache_subdir(spec(images={"builder": "r.example/trusted:1"}), config, "a", "b") == ""
    untrusted = spec(images={"builder": "r.example/own:1"})
    assert cache_subdir(untrusted, config, "team-a", "anna") == "private/team-a/anna"


def test_the_gpu_limit_is_the_operators_and_a_spec_may_only_lower_it() -> None:
    capped = OperatorConfig(max_gpus_per_model=8)
    assert gpu_limit(spec(), capped) == 8
    assert gpu_limit(spec(gpus={"max": 3}), capped) == 3
    assert gpu_limit(spec(), OperatorConfig()) is None
    assert gpu_limit(spec(gpus={"max": 64}), OperatorConfig()) == 64
    with pytest.raises(PolicyError, match=r"spec\.gpus\.max 9: .*at most 8 GPUs per model"):
        gpu_limit(spec(gpus={"max": 9}), capped)


def test_gpus_are_allotted_to_products_in_order_up_to_the_limit() -> None:
    gpus = {"b": 4, "a": 3, "c": 2}
    assert allot_gpus(gpus, None) == gpus
    assert allot_gpus(gpus, 5) == {"a": 3, "b": 2, "c": 0}
    assert allot_gpus(gpus, 100) == gpus


def test_list_settings_come_from_comma_separated_variables() -> None:
    config = OperatorConfig.from_env(
        {
            "LIPSYNC_ALLOWED_HOST_PATHS": "/srv/avatars, /data",
            "LIPSYNC_TRUSTED_BUILDER_IMAGES": "",
            "LIPSYNC_ALLOW_IMAGE_OVERRIDES": "true",
            "LIPSYNC_MAX_GPUS_PER_MODEL": "16",
        }
    )
    assert config.allowed_host_paths == ("/srv/avatars", "/data")
    assert config.trusted_builder_images == ()
    assert config.allow_image_overrides
    assert config.max_gpus_per_model == 16
    with pytest.raises(ConfigError, match=r"allowed_host_paths.*not an absolute node path"):
        OperatorConfig.from_env({"LIPSYNC_ALLOWED_HOST_PATHS": "srv/avatars"})
