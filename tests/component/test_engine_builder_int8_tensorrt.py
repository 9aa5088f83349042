"""Int8 for TensorRT on the reference UNet-328: the Q/DQ model TensorRT's parser takes, checked
by placement, and ONNX Runtime still runs it within the int8 accuracy gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from lipsync_contract.modelio import preset
from lipsync_core.samples import random_inputs
from lipsync_engine_builder.accuracy import compare, min_psnr_for
from lipsync_engine_builder.calibration import random_samples
from lipsync_engine_builder.optimize import optimize
from lipsync_engine_builder.precision import quantize_int8
from lipsync_engine_builder.qdq import tensorrt_qdq_violations

pytestmark = pytest.mark.component

CONTRACT = preset("unet328-ave")


def _run(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([CONTRACT.output.name], inputs)[0])


def test_tensorrt_qdq_model_parses_by_placement_and_passes_the_int8_gate(
    reference_model: Path, tmp_path: Path
) -> None:
    optimized = tmp_path / "optimized.onnx"
    optimize(reference_model, optimized, CONTRACT)
    quantized = tmp_path / "int8.onnx"
    quantize_int8(optimized, quantized, random_samples(CONTRACT, 8, 0), "tensorrt")
    model = onnx.load(str(quantized))
    assert tensorrt_qdq_violations(model) == []
    ops = [node.op_type for node in model.graph.node]
    conv_count = ops.count("Conv")
    assert ops.count("QuantizeLinear") == conv_count  # one activation Q per Conv input
    assert ops.count("DequantizeLinear") == 2 * conv_count  # activation + weight, no bias DQ
    rng = np.random.default_rng(5)
    samples = [random_inputs(CONTRACT, 1, rng) for _ in range(3)]
    report = compare([_run(optimized, s) for s in samples], [_run(quantized, s) for s in samples])
    assert report.psnr_db >= min_psnr_for("int8", None)
