"""The "ave" audio encoder of UNet-328, written as ONNX with seeded random weights (no PyTorch).

Thirteen blocks of Conv2d (with bias) + BatchNorm + ReLU on a mel window ``[B, 1, 80, 16]``; a
residual block adds its input before the ReLU. Spatial size 80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1,
flattened to one 512-d vector per video frame. Initializers carry the names of the PyTorch
reference's state dict (``audio_encoder.<block>.conv_block.<0|1>.<param>``), so one set of weights
loads into both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lipsync_contract.modelio import ENCODER_PRESETS, EncoderContract
from lipsync_core.reference.graph import batch_tensor, finish_model

PREFIX = "audio_encoder"


@dataclass(frozen=True)
class Block:
    cin: int
    cout: int
    kernel: int = 3
    stride: tuple[int, int] = (1, 1)
    padding: int = 1
    residual: bool = False


def _blocks() -> list[Block]:
    blocks = [Block(1, 32)]
    for cin, cout, stride, repeats in (
        (32, 32, None, 2),
        (32, 64, (3, 1), 2),
        (64, 128, (3, 3), 2),
        (128, 256, (3, 2), 1),
    ):
        if stride is not None:
            blocks.append(Block(cin, cout, stride=stride))
        blocks += [Block(cout, cout, residual=True) for _ in range(repeats)]
    blocks += [Block(256, 512, padding=0), Block(512, 512, kernel=1, padding=0)]
    return blocks


BLOCKS = tuple(_blocks())


def seeded_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Every parameter and BatchNorm statistic, by PyTorch state-dict name (float32)."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for index, block in enumerate(BLOCKS):
        conv, norm = f"{PREFIX}.{index}.conv_block.0", f"{PREFIX}.{index}.conv_block.1"
        fan_in = block.cin * block.kernel * block.kernel
        # Residual branches start damped so activations stay in range through the stack.
        gain = 0.5 if block.residual else 2.0
        shape = (block.cout, block.cin, block.kernel, block.kernel)
        weights[f"{conv}.weight"] = rng.normal(0.0, np.sqrt(gain / fan_in), shape)
        weights[f"{conv}.bias"] = rng.normal(0.0, 0.01, block.cout)
        weights[f"{norm}.weight"] = rng.uniform(0.8, 1.2, block.cout)
        weights[f"{norm}.bias"] = rng.normal(0.0, 0.05, block.cout)
        weights[f"{norm}.running_mean"] = rng.normal(0.0, 0.05, block.cout)
        weights[f"{norm}.running_var"] = rng.uniform(0.8, 1.2, block.cout)
    return {name: value.astype(np.float32) for name, value in weights.items()}


def build_ave_encoder(
    seed: int = 0,
    contract: EncoderContract | None = None,
    weights: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """The encoder with ``weights`` (default: seeded random ones); same seed, same bytes."""
    contract = contract or ENCODER_PRESETS["ave"]
    weights = weights if weights is not None else seeded_weights(seed)
    nodes: list[onnx.NodeProto] = []
    x = contract.mel.name
    for index, block in enumerate(BLOCKS):
        conv, norm = f"{PREFIX}.{index}.conv_block.0", f"{PREFIX}.{index}.conv_block.1"
        h = f"{PREFIX}.{index}.conv"
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{conv}.weight", f"{conv}.bias"],
                [h],
                name=h,
                kernel_shape=[block.kernel, block.kernel],
                strides=list(block.stride),
                pads=[block.padding] * 4,
            )
        )
        params = [f"{norm}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
        nodes.append(
            helper.make_node("BatchNormalization", [h, *params], [f"{h}.bn"], epsilon=1e-5)
        )
        pre_act = f"{h}.bn"
        if block.residual:
            nodes.append(helper.make_node("Add", [pre_act, x], [f"{h}.add"]))
            pre_act = f"{h}.add"
        x = f"{PREFIX}.{index}.out"
        nodes.append(helper.make_node("Relu", [pre_act], [x]))
    nodes.append(helper.make_node("Flatten", [x], [contract.output.name], axis=1))
    graph = helper.make_graph(
        nodes,
        "ave_audio_encoder",
        [batch_tensor(contract.mel.name, contract.mel.shape)],
        [batch_tensor(contract.output.name, contract.output.shape)],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    return finish_model(graph, f"Reference ave audio encoder, random weights, seed {seed}")


def encoder_parameter_count(model: onnx.ModelProto) -> int:
    """Trainable parameters: every initializer except BatchNorm running statistics."""
    return sum(
        int(np.prod(init.dims))
        for init in model.graph.initializer
        if not init.name.endswith(("running_mean", "running_var"))
    )
