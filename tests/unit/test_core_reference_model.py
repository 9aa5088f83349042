from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from lipsync_contract.modelio import PRESETS
from lipsync_core.contract_checks import check_onnx
from lipsync_core.reference.graph import OPSET
from lipsync_core.reference.unet328 import build_unet328, conv_flops_per_frame, parameter_count

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def model(reference_model: Path) -> onnx.ModelProto:
    return onnx.load(str(reference_model))


def test_parameter_count_is_12_2_million_within_3_percent(model: onnx.ModelProto) -> None:
    assert parameter_count(model) == pytest.approx(12.2e6, rel=0.03)


def test_flops_per_frame_are_about_9_8_gflop(model: onnx.ModelProto) -> None:
    assert conv_flops_per_frame(model) == pytest.approx(9.8e9, rel=0.03)


def test_signature_follows_the_ave_contract_with_dynamic_batch(
    model: onnx.ModelProto, reference_model: Path
) -> None:
    check_onnx(PRESETS["unet328-ave"], reference_model)
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.opset_import[0].version == OPSET >= 17


def test_architecture_has_the_described_blocks(model: onnx.ModelProto) -> None:
    ops = [node.op_type for node in model.graph.node]
    depthwise = [
        node
        for node in model.graph.node
        if node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)
    ]
    resizes = [node for node in model.graph.node if node.op_type == "Resize"]
    assert len(resizes) == 5  # five decoder stages, bilinear x2 with align_corners
    for node in resizes:
        attrs = {a.name: a.s.decode() for a in node.attribute}
        assert attrs == {"mode": "linear", "coordinate_transformation_mode": "align_corners"}
    # IR blocks: encoder 1 + 5x2, audio 5, bottleneck 2x2, decoder 5x2 -> 30 depthwise convs.
    assert len(depthwise) == 30
    assert ops.count("Concat") == 6  # audio at the bottleneck + five skips
    assert ops[-1] == "Sigmoid"


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first = build_unet328(seed=7).SerializeToString()
    assert first == build_unet328(seed=7).SerializeToString()
    assert first != build_unet328(seed=8).SerializeToString()


def test_unknown_audio_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown audio encoder"):
        build_unet328(audio_encoder="hubert")  # type: ignore[arg-type]
