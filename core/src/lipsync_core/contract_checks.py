"""Checking ONNX files and inference batches against a model I/O contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lipsync_contract.errors import ContractError
from lipsync_contract.modelio import DType, IOContract
from lipsync_core.onnxfile import load_model_proto

_ONNX_DTYPES: dict[int, DType] = {1: "float32", 10: "float16", 2: "uint8"}


def check_onnx(contract: IOContract, path: Path) -> None:
    """Raise ContractError naming the tensor unless the ONNX file's inputs/outputs match."""
    graph = load_model_proto(path).graph
    initializers = {init.name for init in graph.initializer}
    found = {vi.name: vi for vi in graph.input if vi.name not in initializers} | {
        vi.name: vi for vi in graph.output
    }
    expected_inputs = {spec.name for spec in contract.inputs}
    real_inputs = [vi.name for vi in graph.input if vi.name not in initializers]
    extra = [name for name in real_inputs if name not in expected_inputs]
    if extra:
        raise ContractError(
            f"{path}: unexpected input tensor {extra[0]!r}; the contract expects "
            f"{', '.join(s.describe() for s in contract.inputs)}"
        )
    for spec in (*contract.inputs, contract.output):
        info = found.get(spec.name)
        if info is None:
            kind = "output" if spec is contract.output else "input"
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


def check_batch(
    contract: IOContract, arrays: dict[str, np.ndarray], max_batch: int | None = None
) -> int:
    """Validate one inference batch; return the batch size. Errors name the tensor."""
    missing = [s.name for s in contract.inputs if s.name not in arrays]
    if missing:
        raise ContractError(f"missing input tensor {missing[0]!r}")
    extra = sorted(set(arrays) - {s.name for s in contract.inputs})
    if extra:
        raise ContractError(f"unexpected input tensor {extra[0]!r}")
    first = arrays[contract.batch_input.name]
    batch = first.shape[0] if first.ndim else 0
    for spec in contract.inputs:
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
