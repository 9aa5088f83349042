"""What every reference ONNX graph shares: the opset, dynamic-batch tensors, the model wrapper."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

OPSET = 17


def batch_tensor(name: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    """A float32 graph input or output with a dynamic leading ``batch`` axis."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])


def finish_model(graph: onnx.GraphProto, doc_string: str) -> onnx.ModelProto:
    """The checked model around ``graph`` (opset 17, IR version 8)."""
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="lipsync-core",
        doc_string=doc_string,
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
