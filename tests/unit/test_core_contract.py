from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lipsync_contract.errors import ContractError, ModelFileError
from lipsync_contract.modelio import PRESETS, preset
from lipsync_core.contract_checks import check_batch, check_onnx

pytestmark = pytest.mark.unit


def _write_identityish_model(path: Path, image_name: str, audio_shape: list[int]) -> Path:
    """A tiny model with the UNet-328 input/output signature (no weights)."""
    inputs = [
        helper.make_tensor_value_info(image_name, TensorProto.FLOAT, ["B", 6, 320, 320]),
        helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["B", *audio_shape]),
    ]
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", 3, 320, 320])
    nodes = [
        helper.make_node("Slice", [image_name, "starts", "ends", "axes"], ["output"]),
    ]
    inits = [
        helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [3]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
    ]
    graph = helper.make_graph(nodes, "tiny", inputs, [output], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_presets_describe_the_unet328_shapes() -> None:
    ave = preset("unet328-ave")
    assert ave.image.batch_shape(2) == (2, 6, 320, 320)
    assert ave.audio.batch_shape(2) == (2, 32, 16, 16)
    assert ave.output.batch_shape(2) == (2, 3, 320, 320)
    export = preset("unet328-export")
    assert export.image.name == "image"
    assert export.audio.shape == (512, 1, 8)


def test_unknown_preset_lists_known_ones() -> None:
    with pytest.raises(ContractError, match="unet328-ave"):
        preset("nope")


def test_matching_model_passes(tmp_path: Path) -> None:
    path = _write_identityish_model(tmp_path / "m.onnx", "input", [32, 16, 16])
    check_onnx(PRESETS["unet328-ave"], path)


def test_seed_export_shape_is_caught_with_tensor_and_shapes(tmp_path: Path) -> None:
    # The original export fed audio [B, 512, 1, 8], which the "ave" audio branch cannot take.
    path = _write_identityish_model(tmp_path / "m.onnx", "input", [512, 1, 8])
    with pytest.raises(ContractError) as info:
        check_onnx(PRESETS["unet328-ave"], path)
    message = str(info.value)
    assert "'audio'" in message
    assert "[B,512,1,8]" in message
    assert "[B,32,16,16]" in message
    assert "\n" not in message


def test_wrong_input_name_is_named(tmp_path: Path) -> None:
    path = _write_identityish_model(tmp_path / "m.onnx", "image", [32, 16, 16])
    with pytest.raises(ContractError, match="unexpected input tensor 'image'"):
        check_onnx(PRESETS["unet328-ave"], path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "not found"), (b"", "empty"), (b"\x08\x01garbage\xff\xff", "not a valid ONNX model")],
)
def test_bad_files_give_one_line_reasons(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError) as info:
        check_onnx(PRESETS["unet328-ave"], path)
    assert reason in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_model_is_rejected(tmp_path: Path, reference_model: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(reference_model.read_bytes()[:100_000])
    with pytest.raises(ModelFileError, match=r"truncated\.onnx"):
        check_onnx(PRESETS["unet328-ave"], truncated)


def test_check_batch_names_the_bad_tensor() -> None:
    contract = PRESETS["unet328-ave"]
    good = {
        "input": np.zeros((2, 6, 320, 320), np.float32),
        "audio": np.zeros((2, 32, 16, 16), np.float32),
    }
    assert check_batch(contract, good) == 2
    with pytest.raises(ContractError, match="'audio' has shape"):
        check_batch(contract, {**good, "audio": np.zeros((2, 512, 1, 8), np.float32)})
    with pytest.raises(ContractError, match="'input' has dtype float64"):
        check_batch(contract, {**good, "input": np.zeros((2, 6, 320, 320))})
    with pytest.raises(ContractError, match="missing input tensor 'audio'"):
        check_batch(contract, {"input": good["input"]})
    with pytest.raises(ContractError, match="exceeds the maximum batch size 1"):
        check_batch(contract, good, max_batch=1)
