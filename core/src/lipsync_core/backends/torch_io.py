"""Moving a batch between numpy and a PyTorch device with as few copies as the device allows.

On the CPU the numpy arrays are the tensors (``torch.from_numpy``, no copy). On CUDA each input has
two page-locked (pinned) host buffers and two device buffers sized for the largest batch, used in
turn: batch k+1 is copied into its pinned buffer and uploaded on a copy stream, ordered after the
compute that last read the same device buffers (batch k-1) but not after batch k, so a caller
that uploads k+1 before collecting k overlaps the two; a pinned buffer is rewritten only after
its upload finished. A caller that fills ``staging(batch)`` itself skips the host copy. The
output comes back with one device-to-host copy into a new host tensor that numpy then views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lipsync_contract.errors import BackendError
from lipsync_contract.modelio import IOContract


def check_batch(inputs: dict[str, np.ndarray], contract: IOContract, capacity: int) -> int:
    """The batch size of ``inputs``, or BackendError when it is outside [1, capacity]."""
    batch = int(inputs[contract.batch_input.name].shape[0])
    if not 1 <= batch <= capacity:
        raise BackendError(f"batch of {batch} is outside [1, {capacity}]")
    return batch


class CpuIO:
    """numpy <-> CPU tensors without copies."""

    def __init__(self, torch: Any, contract: IOContract, capacity: int) -> None:
        self._torch = torch
        self._contract = contract
        self.capacity = capacity

    def upload(self, inputs: dict[str, np.ndarray]) -> list[Any]:
        check_batch(inputs, self._contract, self.capacity)
        return [
            self._torch.from_numpy(np.ascontiguousarray(inputs[spec.name], dtype=np.float32))
            for spec in self._contract.inputs
        ]

    def computed(self) -> None:
        """Nothing to release on the CPU."""

    def download(self, output: Any) -> np.ndarray:
        return np.asarray(output.float().numpy(), dtype=np.float32)

    def staging(self, batch: int) -> dict[str, np.ndarray]:
        return {
            spec.name: np.empty(spec.batch_shape(batch), np.float32)
            for spec in self._contract.inputs
        }


@dataclass
class _BufferSet:
    pinned: list[Any]  # page-locked host tensors, one per input, [capacity, ...]
    device: list[Any]  # device tensors, one per input
    uploaded: Any  # CUDA event recorded after this set's upload
    consumed: Any  # CUDA event recorded after the compute that read this set


class CudaIO:
    """numpy -> pinned host -> device on a copy stream, two buffer sets in turn."""

    def __init__(self, torch: Any, device: str, contract: IOContract, capacity: int) -> None:
        self._torch = torch
        self._contract = contract
        self.capacity = capacity
        self._device = torch.device(device)
        self._copy_stream = torch.cuda.Stream(device=self._device)
        self._sets = [self._allocate() for _ in range(2)]
        self._next = 0
        self._last = self._sets[0]

    def _allocate(self) -> _BufferSet:
        torch = self._torch
        shapes = [spec.batch_shape(self.capacity) for spec in self._contract.inputs]
        pinned = [torch.empty(shape, dtype=torch.float32, pin_memory=True) for shape in shapes]
        device = [torch.empty(shape, dtype=torch.float32, device=self._device) for shape in shapes]
        stream = torch.cuda.current_stream(self._device)
        uploaded, consumed = torch.cuda.Event(), torch.cuda.Event()
        uploaded.record(stream)
        consumed.record(stream)
        return _BufferSet(pinned, device, uploaded, consumed)

    def staging(self, batch: int) -> dict[str, np.ndarray]:
        """Writable views of the pinned buffers the next ``upload`` sends; filling them in place
        saves the host copy."""
        buffers = self._sets[self._next]
        buffers.uploaded.synchronize()  # its previous upload must be done before writing
        return {
            spec.name: tensor[:batch].numpy()
            for spec, tensor in zip(self._contract.inputs, buffers.pinned, strict=True)
        }

    def upload(self, inputs: dict[str, np.ndarray]) -> list[Any]:
        torch = self._torch
        batch = check_batch(inputs, self._contract, self.capacity)
        buffers = self._sets[self._next]
        self._next, self._last = 1 - self._next, buffers
        buffers.uploaded.synchronize()
        for spec, pinned in zip(self._contract.inputs, buffers.pinned, strict=True):
            host = pinned[:batch].numpy()
            source = inputs[spec.name]
            if source.ctypes.data != host.ctypes.data:  # not already written through staging()
                np.copyto(host, source, casting="same_kind")
        compute = torch.cuda.current_stream(self._device)
        with torch.cuda.stream(self._copy_stream):
            self._copy_stream.wait_event(buffers.consumed)  # batch k-1 read these buffers
            for pinned, device in zip(buffers.pinned, buffers.device, strict=True):
                device[:batch].copy_(pinned[:batch], non_blocking=True)
            buffers.uploaded.record(self._copy_stream)
        compute.wait_event(buffers.uploaded)
        return [device[:batch] for device in buffers.device]

    def computed(self) -> None:
        """Mark the buffers of the last upload free once the compute queued so far is done."""
        self._last.consumed.record(self._torch.cuda.current_stream(self._device))

    def download(self, output: Any) -> np.ndarray:
        return np.asarray(output.float().cpu().numpy(), dtype=np.float32)


def make_io(torch: Any, device: str, contract: IOContract, capacity: int) -> CpuIO | CudaIO:
    if device.startswith("cuda"):
        return CudaIO(torch, device, contract, capacity)
    return CpuIO(torch, contract, capacity)
