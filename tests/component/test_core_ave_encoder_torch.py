"""The "ave" encoder: the ONNX reference equals the PyTorch reference, and the encoder's
checkpoint layout exports through ``lipsync model export``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from lipsync_core.cli_model import model
from lipsync_core.reference.ave_encoder import build_ave_encoder, seeded_weights

pytestmark = pytest.mark.component

torch: Any = pytest.importorskip(
    "torch", reason="torch is an optional extra ([torch]); install it to run the torch tier"
)

TARGET = "lipsync_core.reference.ave_encoder_torch:AudioEncoder"


def _mel(batch: int) -> np.ndarray:
    rng = np.random.default_rng(batch)
    return np.clip(rng.normal(0.0, 2.0, (batch, 1, 80, 16)), -4, 4).astype(np.float32)


def test_onnx_equals_the_pytorch_reference_with_the_same_weights() -> None:
    from lipsync_core.reference.ave_encoder_torch import AudioEncoder

    weights = seeded_weights(seed=5)
    encoder = AudioEncoder().eval()
    encoder.load_state_dict({name: torch.from_numpy(value) for name, value in weights.items()})
    session = ort.InferenceSession(
        build_ave_encoder(seed=5).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    mel = _mel(4)
    with torch.no_grad():
        expected = encoder(torch.from_numpy(mel)).numpy()
    (got,) = session.run(["features"], {"mel": mel})
    assert expected.shape == (4, 512)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", ["audio_encoder", "with_face_encoder"])
def test_export_takes_the_encoder_checkpoint_layout(tmp_path: Path, layout: str) -> None:
    from lipsync_core.reference.ave_encoder_torch import AudioEncoder

    torch.manual_seed(0)
    state = AudioEncoder().state_dict()
    if layout == "with_face_encoder":
        state = {**state, "face_encoder.0.conv_block.0.weight": torch.zeros(4)}
    checkpoint = tmp_path / "audio_visual_encoder.pth"
    torch.save(state, str(checkpoint))
    output = tmp_path / "ave.onnx"
    arguments = ["--module", TARGET, "--checkpoint", str(checkpoint), "-o", str(output)]
    result = CliRunner().invoke(model, ["export", *arguments, "--io", "ave"])
    assert result.exit_code == 0, result.output
    assert "2.81 M parameters, matches ave" in result.output
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    (features,) = session.run(["features"], {"mel": _mel(3)})
    assert np.asarray(features).shape == (3, 512)
