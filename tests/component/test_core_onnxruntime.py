from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lipsync_contract.errors import BackendError
from lipsync_contract.modelio import PRESETS
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.backends.select import choose_kind
from lipsync_core.samples import random_inputs

pytestmark = pytest.mark.component


@pytest.mark.parametrize("batch", [1, 8])
def test_ort_cpu_runs_the_reference_model(reference_model: Path, batch: int) -> None:
    contract = PRESETS["unet328-ave"]
    backend = load_backend(reference_model, contract, BackendConfig(max_batch=8))
    info = backend.describe()
    assert (info.kind, info.precision, info.device) == ("onnxruntime-cpu", "fp32", "cpu")
    assert "ORT on CPU" in info.reason
    output = backend.infer(random_inputs(contract, batch, np.random.default_rng(batch)))
    backend.close()
    assert output.shape == (batch, 3, 320, 320)
    assert output.dtype == np.float32
    assert 0.0 <= output.min() < output.max() <= 1.0


def test_frames_in_a_batch_are_independent(reference_model: Path) -> None:
    contract = PRESETS["unet328-ave"]
    backend = load_backend(reference_model, contract, BackendConfig())
    inputs = random_inputs(contract, 2, np.random.default_rng(3))
    together = backend.infer(inputs)
    alone = backend.infer({name: array[1:] for name, array in inputs.items()})
    np.testing.assert_allclose(together[1:], alone, atol=1e-5)


def test_automatic_choice_prefers_tensorrt_then_cuda_then_cpu(tmp_path: Path) -> None:
    assert choose_kind(tmp_path / "m.plan", [], tensorrt_loadable=True)[0] == "tensorrt"
    assert choose_kind(tmp_path / "m.onnx", ["onnxruntime-cuda"], False)[0] == "onnxruntime-cuda"
    assert choose_kind(tmp_path / "m.onnx", ["onnxruntime-cpu"], False)[0] == "onnxruntime-cpu"
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        choose_kind(tmp_path / "m.plan", [], tensorrt_loadable=False)


def test_explicit_unavailable_backend_is_a_clear_error(reference_model: Path) -> None:
    with pytest.raises(BackendError, match="no CUDAExecutionProvider"):
        load_backend(
            reference_model, PRESETS["unet328-ave"], BackendConfig(kind="onnxruntime-cuda")
        )


def _lipsync(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from lipsync_contract.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_cli_writes_reference_model_and_runs_it(tmp_path: Path) -> None:
    path = tmp_path / "unet328.onnx"
    written = _lipsync("model", "reference", "-o", str(path), "--seed", "3")
    assert written.returncode == 0, written.stderr
    assert "12.19 M parameters" in written.stdout
    ran = _lipsync("model", "run", str(path), "--batch", "1", "--frames", "1")
    assert ran.returncode == 0, ran.stderr
    assert "output[1, 3, 320, 320]" in ran.stdout
    assert "ms/frame" in ran.stdout


def test_cli_check_reports_mismatch_in_one_line(reference_model: Path) -> None:
    result = _lipsync("model", "check", "--io", "unet328-export", str(reference_model))
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "'input'" in error_lines[0]
