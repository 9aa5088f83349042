"""Precision: fp32 as is; fp16 weights with fp32 inputs/outputs; int8 static Q/DQ.

Int8 is static, per-channel, in the Q/DQ format: for ONNX Runtime CPU with unsigned activations
(its u8s8 kernels) and 7-bit weight range, because x86 CPUs without VNNI saturate the 16-bit
intermediate sums of full-range u8s8 products (measured on the reference model: 26 dB PSNR at
full range, 44 dB reduced); for TensorRT with symmetric signed activations and weights, the
explicit quantization TensorRT 10 and 11 take as input, placed as TensorRT recommends: Q/DQ on the
inputs of Conv only, biases left in float (TensorRT's DequantizeLinear takes no int32), checked by
``qdq.tensorrt_qdq_violations`` before the model goes on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import onnx

from lipsync_contract.kinds import Precision
from lipsync_core.backends.onnxruntime import PRECISION_METADATA_KEY
from lipsync_engine_builder.calibration import Sample, SampleReader
from lipsync_engine_builder.errors import BuildFailedError, one_line
from lipsync_engine_builder.qdq import (
    QUANTIZED_OPS,
    keep_float_inputs_float,
    tensorrt_qdq_violations,
)

log = logging.getLogger(__name__)

QuantizationTarget = Literal["onnxruntime", "tensorrt"]


def set_precision_metadata(path: Path, precision: Precision) -> None:
    model = onnx.load(str(path))
    onnx.helper.set_model_props(
        model,
        {
            **{prop.key: prop.value for prop in model.metadata_props},
            PRECISION_METADATA_KEY: precision,
        },
    )
    onnx.save(model, str(path))


def convert_fp16(source: Path, target: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(target))


def quantize_int8(
    source: Path, target: Path, samples: list[Sample], for_target: QuantizationTarget
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not samples:
        raise BuildFailedError("int8 quantization needs at least one calibration sample")
    tensorrt = for_target == "tensorrt"
    extra: dict[str, object] = {"ActivationSymmetric": tensorrt, "WeightSymmetric": True}
    if tensorrt:
        extra |= {
            "QuantizeBias": False,  # an int32 bias DequantizeLinear does not parse in TensorRT
            "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
        }
    try:
        quantize_static(
            str(source),
            str(target),
            SampleReader(samples),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS) if tensorrt else None,
            per_channel=True,
            activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=not tensorrt,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options=extra,
        )
    except Exception as exc:  # the quantizer raises untyped errors from deep inside
        raise BuildFailedError(f"int8 quantization failed: {one_line(exc)}") from None
    if tensorrt:
        model = onnx.load(str(target))
        keep_float_inputs_float(model)
        onnx.save(model, str(target))
        problems = tensorrt_qdq_violations(model)
        if problems:
            shown = "; ".join(problems[:3])
            raise BuildFailedError(f"the Q/DQ model does not fit TensorRT: {shown}")


def apply_precision(
    source: Path,
    target: Path,
    precision: Precision,
    samples: list[Sample],
    for_target: QuantizationTarget,
) -> None:
    """Write ``source`` at ``precision`` to ``target`` and record the precision in its metadata."""
    if precision == "fp16":
        convert_fp16(source, target)
    elif precision == "int8":
        quantize_int8(source, target, samples, for_target)
    else:
        target.write_bytes(source.read_bytes())
    set_precision_metadata(target, precision)
    log.info("%s model: %s (%.1f MB)", precision, target.name, target.stat().st_size / 1e6)
