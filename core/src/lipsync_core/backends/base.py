"""The backend interface: load an artifact, describe it, infer a batch of numpy arrays, close."""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lipsync_contract.kinds import BackendKind, Device, Precision
from lipsync_contract.modelio import IOContract


class BackendConfig(BaseModel):
    """How to run an artifact. ``kind="auto"`` picks TensorRT, then ORT CUDA, then ORT CPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: BackendKind = "auto"
    intra_op_threads: int = Field(0, ge=0, description="ORT CPU threads; 0 lets ORT decide.")
    inter_op_threads: int = Field(1, ge=1)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    device_id: int = Field(0, ge=0)
    max_batch: int = Field(8, ge=1, description="Largest batch the backend must accept.")
    device: Device = Field("auto", description="PyTorch backends: auto is CUDA when torch has it.")
    torch_compile: bool = Field(False, description="torch backend: run through torch.compile.")
    channels_last: bool = Field(True, description="torch backend: NHWC memory format.")
    cuda_graphs: bool = Field(
        False, description="Capture one CUDA graph per batch size (torch eager, ORT CUDA)."
    )


class BackendInfo(BaseModel):
    """What a loaded backend reports about itself (logged and exposed by the server)."""

    model_config = ConfigDict(frozen=True)

    kind: BackendKind
    provider: str
    precision: Precision
    device: str
    artifact: str
    batch_sizes: tuple[int, int] = Field(description="Smallest and largest accepted batch.")
    version: str
    reason: str = Field("", description="Why this backend was chosen (for kind=auto).")


class Backend(Protocol):
    """A loaded model. ``infer`` is called from one thread at a time per instance."""

    @property
    def contract(self) -> IOContract: ...

    def describe(self) -> BackendInfo: ...

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch; inputs follow the contract; returns the output tensor (float32), an
        array the caller owns."""
        ...

    def close(self) -> None: ...
