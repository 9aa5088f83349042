"""``lipsync model export`` end to end with PyTorch: UNet-328 checkpoint -> verified ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from lipsync_contract.modelio import preset
from lipsync_core.cli_model import model

pytestmark = pytest.mark.component

torch: Any = pytest.importorskip(
    "torch", reason="torch is an optional extra ([torch]); install it to run the export test"
)

TARGET = "lipsync_core.reference.unet328_torch:Model"


def _checkpoint(path: Path, wrapped: bool) -> Path:
    from lipsync_core.reference.unet328_torch import Model

    torch.manual_seed(0)
    weights = Model(n_channels=6, mode="ave").state_dict()
    torch.save({"state_dict": weights, "epoch": 1} if wrapped else weights, str(path))
    return path


@pytest.mark.parametrize("wrapped", [True, False])
def test_export_writes_a_verified_dynamic_batch_model(tmp_path: Path, wrapped: bool) -> None:
    checkpoint = _checkpoint(tmp_path / "ckpt.pth.tar", wrapped)
    output = tmp_path / "model.onnx"
    arguments = ["--module", TARGET, "--checkpoint", str(checkpoint), "-o", str(output)]
    result = CliRunner().invoke(
        model, ["export", *arguments, "--init", "n_channels=6,mode=ave", "--io", "unet328-ave"]
    )
    assert result.exit_code == 0, result.output
    assert "matches unet328-ave" in result.output
    assert "max abs error vs PyTorch" in result.output
    contract = preset("unet328-ave")
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input", "audio"]
    rng = np.random.default_rng(0)
    for batch in (1, 3):  # the batch axis is dynamic
        inputs = {
            spec.name: rng.uniform(0, 1, spec.batch_shape(batch)).astype(np.float32)
            for spec in contract.inputs
        }
        (out,) = session.run(["output"], inputs)
        assert np.asarray(out).shape == (batch, 3, 320, 320)


def test_a_checkpoint_for_another_model_is_refused_by_name(tmp_path: Path) -> None:
    checkpoint = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, str(checkpoint))
    arguments = [
        "--module",
        TARGET,
        "--checkpoint",
        str(checkpoint),
        "-o",
        str(tmp_path / "m.onnx"),
    ]
    result = CliRunner().invoke(model, ["export", *arguments])
    assert result.exit_code == 2
    assert "other.pth does not fit" in result.output
    assert "unexpected encoder.weight" in result.output
