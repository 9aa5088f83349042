"""The reference UNet-328 lip-sync model, written as ONNX with seeded random weights (no PyTorch).

Architecture (a MobileNetV2-style UNet):
``IR(in, out, stride, residual, e)``: 1x1 conv in->in*e, BN, ReLU; 3x3 depthwise conv, BN, ReLU;
1x1 conv in*e->out, BN; plus the input when residual. ``DW2(in, out, s)`` is
``IR(in, out, s, no, 2)`` then ``IR(out, out, 1, yes, 2)``. An image encoder (5 stride-2 stages),
an audio branch concatenated at the 10x10 bottleneck, a decoder with bilinear x2 upsampling
(align_corners) and skip concatenation, and a 1x1 conv + sigmoid head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lipsync_contract.modelio import PRESETS, ModelContract
from lipsync_core.reference.graph import batch_tensor, finish_model

AudioEncoder = Literal["ave"]
CHANNELS = (32, 64, 128, 256, 512)
# Residual branches start damped so activations stay in range through ~40 blocks of random
# weights; the sigmoid output then stays off saturation, which keeps accuracy gates meaningful.
_RESIDUAL_GAIN = 0.3


@dataclass
class _GraphBuilder:
    rng: np.random.Generator
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    _counter: int = 0

    def name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        kernel: int,
        *,
        stride: int = 1,
        pad: int = 0,
        groups: int = 1,
        bias: bool = False,
        gain: float = 2.0,
    ) -> str:
        fan_in = (cin // groups) * kernel * kernel
        weight = self.rng.normal(0.0, np.sqrt(gain / fan_in), (cout, cin // groups, kernel, kernel))
        inputs = [x, self.const("w", weight)]
        if bias:
            inputs.append(self.const("b", self.rng.normal(0.0, 0.01, cout)))
        return self.node(
            "Conv",
            inputs,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad] * 4,
            group=groups,
        )

    def batch_norm(self, x: str, channels: int, scale: float = 1.0) -> str:
        gamma = scale * self.rng.uniform(0.8, 1.2, channels)
        beta = self.rng.normal(0.0, 0.05, channels)
        mean = self.rng.normal(0.0, 0.05, channels)
        var = self.rng.uniform(0.8, 1.2, channels)
        params = [self.const(p, a) for p, a in (("gamma", gamma), ("beta", beta))]
        stats = [self.const(p, a) for p, a in (("mean", mean), ("var", var))]
        return self.node("BatchNormalization", [x, *params, *stats], epsilon=1e-5)

    def relu(self, x: str) -> str:
        return self.node("Relu", [x])

    def inverted_residual(
        self, x: str, cin: int, cout: int, stride: int, *, residual: bool, expand: int = 2
    ) -> str:
        hidden = cin * expand
        h = self.relu(self.batch_norm(self.conv(x, cin, hidden, 1), hidden))
        h = self.conv(h, hidden, hidden, 3, stride=stride, pad=1, groups=hidden)
        h = self.relu(self.batch_norm(h, hidden))
        h = self.batch_norm(self.conv(h, hidden, cout, 1, gain=1.0), cout)
        if not residual:
            return h
        return self.node(
            "Add", [x, self.node("Mul", [h, self.const("g", np.array(_RESIDUAL_GAIN))])]
        )

    def dw2(self, x: str, cin: int, cout: int, stride: int) -> str:
        x = self.inverted_residual(x, cin, cout, stride, residual=False)
        return self.inverted_residual(x, cout, cout, 1, residual=True)

    def conv_bn_relu(self, x: str, cin: int, cout: int, stride: int, pad: int) -> str:
        h = self.conv(x, cin, cout, 3, stride=stride, pad=pad, bias=True)
        return self.relu(self.batch_norm(h, cout))

    def upsample2x(self, x: str) -> str:
        scales = self.const("scales", np.array([1.0, 1.0, 2.0, 2.0]))
        return self.node(
            "Resize",
            [x, "", scales],
            mode="linear",
            coordinate_transformation_mode="align_corners",
        )

    def concat(self, *xs: str) -> str:
        return self.node("Concat", list(xs), axis=1)


def _audio_branch_ave(g: _GraphBuilder, audio: str) -> str:
    """[B, 32, 16, 16] audio features -> [B, 512, 10, 10]."""
    a = g.inverted_residual(audio, 32, 64, 1, residual=False)
    a = g.inverted_residual(a, 64, 128, 1, residual=False)
    a = g.conv_bn_relu(a, 128, 256, stride=1, pad=1)
    a = g.inverted_residual(a, 256, 256, 1, residual=True)
    a = g.conv_bn_relu(a, 256, 512, stride=2, pad=3)
    a = g.inverted_residual(a, 512, 512, 1, residual=True)
    return g.inverted_residual(a, 512, 512, 1, residual=True)


def build_unet328(
    seed: int = 0, audio_encoder: AudioEncoder = "ave", contract: ModelContract | None = None
) -> onnx.ModelProto:
    """Build the reference UNet-328 with seeded random weights; same seed, same bytes."""
    if audio_encoder != "ave":
        raise ValueError(f"unknown audio encoder {audio_encoder!r}; supported: ave")
    contract = contract or PRESETS["unet328-ave"]
    g = _GraphBuilder(rng=np.random.default_rng(seed))
    c1, c2, c3, c4, c5 = CHANNELS

    skips = [g.inverted_residual(contract.image.name, 6, c1, 1, residual=False)]  # 320
    for cin, cout in ((c1, c1), (c1, c2), (c2, c3), (c3, c4), (c4, c5)):
        skips.append(g.dw2(skips[-1], cin, cout, 2))  # 160, 80, 40, 20, 10
    audio = _audio_branch_ave(g, contract.audio.name)

    x = g.concat(skips.pop(), audio)  # 1024 @ 10
    x = g.dw2(x, 2 * c5, c5, 1)
    x = g.dw2(x, c5, c4, 1)
    channels = c4
    for skip_channels, cout in ((c4, c3), (c3, c2), (c2, c1), (c1, c1), (c1, 16)):
        x = g.concat(g.upsample2x(x), skips.pop())
        x = g.dw2(x, channels + skip_channels, cout, 1)
        channels = cout
    logits = g.conv(x, 16, 3, 1, bias=True, gain=1.0)
    g.nodes.append(helper.make_node("Sigmoid", [logits], [contract.output.name], name="sigmoid"))

    graph = helper.make_graph(
        g.nodes,
        f"unet328_{audio_encoder}",
        [batch_tensor(s.name, s.shape) for s in contract.inputs],
        [batch_tensor(contract.output.name, contract.output.shape)],
        g.initializers,
    )
    return finish_model(
        graph, f"Reference UNet-328 ({audio_encoder} audio), random weights, seed {seed}"
    )


def parameter_count(model: onnx.ModelProto) -> int:
    """Trainable parameters: every initializer except BatchNorm running statistics and constants."""
    running_stats = {
        name
        for node in model.graph.node
        if node.op_type == "BatchNormalization"
        for name in node.input[3:5]
    }
    skip_ops = {"Resize", "Mul"}
    constants = {
        name for node in model.graph.node if node.op_type in skip_ops for name in node.input[1:]
    }
    return sum(
        int(np.prod(init.dims))
        for init in model.graph.initializer
        if init.name not in running_stats | constants
    )


def conv_flops_per_frame(model: onnx.ModelProto) -> int:
    """Floating-point operations (2 per multiply-add) of every Conv at batch 1, from the graph."""
    inferred = onnx.shape_inference.infer_shapes(_with_batch(model, 1))
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in (*inferred.graph.value_info, *inferred.graph.output)
    }
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    flops = 0
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        out = shapes[node.output[0]]
        _, cin_per_group, kh, kw = weights[node.input[1]]
        flops += 2 * int(np.prod(out)) * cin_per_group * kh * kw
    return flops


def _with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for vi in (*fixed.graph.input, *fixed.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = batch
    return fixed
