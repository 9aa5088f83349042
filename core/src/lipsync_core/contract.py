"""The model I/O contract: names, dtypes, shapes (dynamic batch) and value ranges of a model.

Shapes and names are configuration (a preset or an explicit contract), never constants in code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lipsync_core.errors import ContractError
from lipsync_core.onnxfile import load_model_proto

DType = Literal["float32", "float16", "uint8"]
ChannelOrder = Literal["BGR", "BGR+BGR", "features"]

_ONNX_DTYPES: dict[int, DType] = {1: "float32", 10: "float16", 2: "uint8"}


class TensorSpec(BaseModel):
    """One model tensor. ``shape`` excludes the leading dynamic batch dimension."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    shape: tuple[int, ...] = Field(description="Shape without the batch dimension.")
    dtype: DType = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)
    channel_order: ChannelOrder = "BGR"

    def batch_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.shape)

    def describe(self) -> str:
        return f"{self.name} {self.dtype}[B,{','.join(str(d) for d in self.shape)}]"


class ModelContract(BaseModel):
    """What a lip-sync model takes and returns: a face image, an audio-feature window, an image."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: TensorSpec
    audio: TensorSpec
    output: TensorSpec
    audio_window: int = Field(16, ge=1, description="Audio frames per window.")
    audio_window_before: int = Field(8, ge=0, description="Window frames before the current one.")
    audio_feature_dim: int = Field(512, ge=1, description="Length of one frame's feature vector.")

    @property
    def inputs(self) -> tuple[TensorSpec, TensorSpec]:
        return (self.image, self.audio)

    def check_onnx(self, path: Path) -> None:
        """Raise ContractError naming the tensor unless the ONNX file's inputs/outputs match."""
        graph = load_model_proto(path).graph
        initializers = {init.name for init in graph.initializer}
        found = {vi.name: vi for vi in graph.input if vi.name not in initializers} | {
            vi.name: vi for vi in graph.output
        }
        expected_inputs = {spec.name for spec in self.inputs}
        real_inputs = [vi.name for vi in graph.input if vi.name not in initializers]
        extra = [name for name in real_inputs if name not in expected_inputs]
        if extra:
            raise ContractError(
                f"{path}: unexpected input tensor {extra[0]!r}; the contract expects "
                f"{', '.join(s.describe() for s in self.inputs)}"
            )
        for spec in (*self.inputs, self.output):
            info = found.get(spec.name)
            if info is None:
                kind = "output" if spec is self.output else "input"
                raise ContractError(
                    f"{path}: {kind} tensor {spec.name!r} not found (model has "
                    f"{', '.join(sorted(found)) or 'none'}); expected {spec.describe()}"
                )
            tensor_type = info.type.tensor_type
            dtype = _ONNX_DTYPES.get(tensor_type.elem_type, f"onnx-type-{tensor_type.elem_type}")
            if dtype != spec.dtype:
                raise ContractError(
                    f"{path}: tensor {spec.name!r} has dtype {dtype}, expected {spec.dtype}"
                )
            dims = [d.dim_param or d.dim_value for d in tensor_type.shape.dim]
            if tuple(dims[1:]) != spec.shape or len(dims) != len(spec.shape) + 1:
                shown = ",".join(str(d) if d else "?" for d in dims)
                raise ContractError(
                    f"{path}: tensor {spec.name!r} has shape [{shown}], expected "
                    f"[B,{','.join(str(d) for d in spec.shape)}]"
                )

    def check_batch(self, arrays: dict[str, np.ndarray], max_batch: int | None = None) -> int:
        """Validate one inference batch; return the batch size. Errors name the tensor."""
        missing = [s.name for s in self.inputs if s.name not in arrays]
        if missing:
            raise ContractError(f"missing input tensor {missing[0]!r}")
        extra = sorted(set(arrays) - {s.name for s in self.inputs})
        if extra:
            raise ContractError(f"unexpected input tensor {extra[0]!r}")
        batch = arrays[self.image.name].shape[0] if arrays[self.image.name].ndim else 0
        for spec in self.inputs:
            array = arrays[spec.name]
            if array.dtype != np.dtype(spec.dtype):
                raise ContractError(
                    f"tensor {spec.name!r} has dtype {array.dtype}, expected {spec.dtype}"
                )
            if array.shape != spec.batch_shape(batch) or batch < 1:
                raise ContractError(
                    f"tensor {spec.name!r} has shape {list(array.shape)}, expected "
                    f"[{batch or 'B'},{','.join(str(d) for d in spec.shape)}]"
                )
        if max_batch is not None and batch > max_batch:
            raise ContractError(f"batch of {batch} exceeds the maximum batch size {max_batch}")
        return batch


def _unet328(audio: TensorSpec, image_name: str) -> ModelContract:
    return ModelContract(
        image=TensorSpec(name=image_name, shape=(6, 320, 320), channel_order="BGR+BGR"),
        audio=audio,
        output=TensorSpec(name="output", shape=(3, 320, 320)),
    )


PRESETS: dict[str, ModelContract] = {
    "unet328-ave": _unet328(
        TensorSpec(
            name="audio", shape=(32, 16, 16), value_range=(-10.0, 10.0), channel_order="features"
        ),
        image_name="input",
    ),
    # The shape of the export snippet in the original PyTorch project: audio [B, 512, 1, 8].
    "unet328-export": _unet328(
        TensorSpec(
            name="audio", shape=(512, 1, 8), value_range=(-10.0, 10.0), channel_order="features"
        ),
        image_name="image",
    ),
}


def preset(name: str) -> ModelContract:
    try:
        return PRESETS[name]
    except KeyError:
        raise ContractError(
            f"unknown I/O preset {name!r}; known presets: {', '.join(sorted(PRESETS))}"
        ) from None
