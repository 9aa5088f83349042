"""The Q/DQ placement TensorRT parses: INT8/FP8 into every DequantizeLinear, Q/DQ on Conv inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lipsync_engine_builder.qdq import keep_float_inputs_float, tensorrt_qdq_violations

pytestmark = pytest.mark.unit


def _conv_add_graph(bias_type: int, dq_feeds_add: bool) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(w_q, b) -> y; Add(x or DQ(x), y) -> out."""
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
        numpy_helper.from_array(np.ones((1, 1, 1, 1), np.int8), "w_q"),
        helper.make_tensor("b_q", bias_type, [1], [1]),
        numpy_helper.from_array(
            np.array(0, np.int32 if bias_type == TensorProto.INT32 else np.int8), "b_zp"
        ),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["x_q"], name="q_x"),
        helper.make_node("DequantizeLinear", ["x_q", "s", "zp"], ["x_dq"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w_q", "s", "zp"], ["w"], name="dq_w"),
        helper.make_node("DequantizeLinear", ["b_q", "s", "b_zp"], ["b"], name="dq_b"),
        helper.make_node("Conv", ["x_dq", "w", "b"], ["y"], name="conv"),
        helper.make_node("Add", ["x_dq" if dq_feeds_add else "x", "y"], ["out"], name="add"),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "g", [value("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [value("out", TensorProto.FLOAT, [1, 1, 4, 4])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_int8_everywhere_on_conv_inputs_only_passes() -> None:
    assert tensorrt_qdq_violations(_conv_add_graph(TensorProto.INT8, dq_feeds_add=False)) == []


def test_an_int32_bias_dequantize_is_named() -> None:
    problems = tensorrt_qdq_violations(_conv_add_graph(TensorProto.INT32, dq_feeds_add=False))
    assert problems == [
        "DequantizeLinear 'dq_b' reads 'b_q' of type INT32; TensorRT dequantizes INT8 or FP8 only"
    ]


def test_a_quantize_without_zero_point_writes_uint8_which_is_refused() -> None:
    model = _conv_add_graph(TensorProto.INT8, dq_feeds_add=False)
    del model.graph.node[0].input[2]
    problems = tensorrt_qdq_violations(model)
    assert any("'x_q' of type UINT8" in problem for problem in problems)


def test_q_dq_feeding_an_add_is_misplaced_and_rewiring_fixes_it() -> None:
    model = _conv_add_graph(TensorProto.INT8, dq_feeds_add=True)
    assert tensorrt_qdq_violations(model) == [
        "DequantizeLinear 'dq_x' feeds Add; TensorRT's placement quantizes only the inputs of Conv"
    ]
    assert keep_float_inputs_float(model) == 1
    add = next(node for node in model.graph.node if node.op_type == "Add")
    assert list(add.input) == ["x", "y"]
    assert tensorrt_qdq_violations(model) == []


def test_a_dequantized_graph_output_is_named() -> None:
    model = _conv_add_graph(TensorProto.INT8, dq_feeds_add=False)
    model.graph.output[0].name = "x_dq"
    assert "graph output 'x_dq' is dequantized" in tensorrt_qdq_violations(model)
