"""The reference "ave" audio encoder graph and its contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from lipsync_contract.errors import ContractError
from lipsync_contract.modelio import ENCODER_PRESETS, any_preset, encoder_preset, preset
from lipsync_core.cli_model import model
from lipsync_core.contract_checks import check_onnx
from lipsync_core.export_torch import fit_to_model
from lipsync_core.reference.ave_encoder import BLOCKS, build_ave_encoder, encoder_parameter_count

pytestmark = pytest.mark.unit


def test_thirteen_blocks_and_about_2_81_m_parameters() -> None:
    encoder = build_ave_encoder(seed=0)
    assert len(BLOCKS) == 13
    assert encoder_parameter_count(encoder) == 2_812_672


def test_spatial_sizes_shrink_to_one_vector_per_frame() -> None:
    encoder = build_ave_encoder(seed=0)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(encoder)
    for value in (*fixed.graph.input, *fixed.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(fixed)
    shapes = {
        vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        for vi in (*inferred.graph.value_info, *inferred.graph.output)
    }
    spatial = [shapes[f"audio_encoder.{i}.out"][2:] for i in range(len(BLOCKS))]
    assert sorted(set(spatial), reverse=True) == [(80, 16), (27, 16), (9, 6), (3, 3), (1, 1)]
    assert shapes["features"] == (1, 512)


def test_same_seed_same_bytes_other_seed_other_weights() -> None:
    first = build_ave_encoder(seed=3).SerializeToString()
    assert first == build_ave_encoder(seed=3).SerializeToString()
    assert first != build_ave_encoder(seed=4).SerializeToString()


def test_the_encoder_contract_describes_the_mel_window() -> None:
    contract = encoder_preset("ave")
    assert contract.mel.shape == (1, 80, 16)
    assert contract.window == 16
    assert contract.front_end.frames_per_second == 80.0
    assert any_preset("ave") is ENCODER_PRESETS["ave"]
    assert any_preset("unet328-ave") is preset("unet328-ave")


def test_an_encoder_preset_is_not_a_unet_preset() -> None:
    with pytest.raises(ContractError, match="'ave' is an audio encoder preset"):
        preset("ave")
    with pytest.raises(ContractError, match="unknown audio encoder preset 'wav2vec'"):
        encoder_preset("wav2vec")


def test_reference_audio_writes_a_model_that_matches_its_contract(tmp_path: Path) -> None:
    output = tmp_path / "ave.onnx"
    result = CliRunner().invoke(model, ["reference-audio", "-o", str(output), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "2.81 M parameters" in result.output
    check_onnx(encoder_preset("ave"), output)
    with pytest.raises(ContractError, match="unexpected input tensor 'mel'"):
        check_onnx(preset("unet328-ave"), output)


def test_checkpoint_layouts_fit_the_encoder_keys() -> None:
    model_keys = ["audio_encoder.0.conv_block.0.weight", "audio_encoder.0.conv_block.0.bias"]
    value = np.zeros(1)
    whole = {"audio_encoder.0.conv_block.0.weight": value, "face_encoder.0.weight": value}
    assert list(fit_to_model(whole, model_keys)) == ["audio_encoder.0.conv_block.0.weight"]
    bare = {"0.conv_block.0.weight": value, "0.conv_block.0.bias": value}
    assert list(fit_to_model(bare, model_keys)) == model_keys
    other = {"encoder.weight": value}
    assert fit_to_model(other, model_keys) == other
