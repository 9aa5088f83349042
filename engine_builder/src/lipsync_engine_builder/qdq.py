"""What a Q/DQ (explicitly quantized) ONNX model must look like for TensorRT's ONNX parser.

TensorRT's ``DequantizeLinear`` takes INT8 or FP8 inputs only (an int32 bias behind a DQ, which
ONNX Runtime's quantizer writes by default, fails to parse), and TensorRT's recommended placement
quantizes the inputs of the layers that run in int8 (here: Conv) and nothing else: no Q/DQ on a
layer's output, on Add/Concat/Resize or on a graph output; TensorRT fuses the rest itself.
"""

from __future__ import annotations

from collections import defaultdict

import onnx

# DequantizeLinear inputs TensorRT's parser accepts (ONNX TensorProto element types).
TENSORRT_DQ_INPUT_TYPES = {
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.FLOAT8E4M3FN: "FP8",
}
QUANTIZED_OPS = ("Conv",)


def _quantize_output_type(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> int:
    """The element type a QuantizeLinear writes: ``output_dtype``, else its zero point's, else
    uint8 (the ONNX default)."""
    for attribute in node.attribute:
        if attribute.name == "output_dtype" and attribute.i:
            return int(attribute.i)
    if len(node.input) > 2 and node.input[2] in initializers:
        return int(initializers[node.input[2]].data_type)
    return onnx.TensorProto.UINT8


def keep_float_inputs_float(model: onnx.ModelProto) -> int:
    """Give the non-quantized consumers of a quantized tensor the float tensor back.

    ONNX Runtime's QDQ quantizer points every consumer of a tensor it quantized for a Conv at the
    DequantizeLinear output, so Add, Concat or Resize beside that Conv would read Q/DQ too. Rewires
    those inputs to the QuantizeLinear's float input, in place; returns how many it rewired.
    """
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    float_of: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in producers:
            quantize = producers[node.input[0]]
            if quantize.op_type == "QuantizeLinear":
                float_of[node.output[0]] = quantize.input[0]
    rewired = 0
    for node in graph.node:
        if node.op_type in QUANTIZED_OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, name in enumerate(node.input):
            if name in float_of:
                node.input[index] = float_of[name]
                rewired += 1
    return rewired


def tensorrt_qdq_violations(model: onnx.ModelProto) -> list[str]:
    """Every place where ``model`` departs from what TensorRT parses and recommends, one line
    each; empty when the model is fine."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {output.name for output in graph.output}
    problems = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        if source in initializers:
            element = int(initializers[source].data_type)
        elif source in producers and producers[source].op_type == "QuantizeLinear":
            element = _quantize_output_type(producers[source], initializers)
        else:
            element = onnx.TensorProto.UNDEFINED
        if element not in TENSORRT_DQ_INPUT_TYPES:
            kind = onnx.TensorProto.DataType.Name(element)
            problems.append(
                f"DequantizeLinear {node.name or node.output[0]!r} reads {source!r} of type "
                f"{kind}; TensorRT dequantizes INT8 or FP8 only"
            )
        users = consumers.get(node.output[0], [])
        others = sorted({user.op_type for user in users} - set(QUANTIZED_OPS))
        if others:
            problems.append(
                f"DequantizeLinear {node.name or node.output[0]!r} feeds {', '.join(others)}; "
                f"TensorRT's placement quantizes only the inputs of {', '.join(QUANTIZED_OPS)}"
            )
        if node.output[0] in graph_outputs:
            problems.append(f"graph output {node.output[0]!r} is dequantized")
    return problems
