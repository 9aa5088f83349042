"""The audio encoder stage of the data plane: mel windows of every live stream, batched.

One :class:`DynamicBatcher` over the encoder's backend, like the UNet's: a mel window per video
frame in, one feature vector out. ``silent_features`` is the encoder's output for a silent
window (every mel value at the floor), computed once at start for the silence fast path.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lipsync_contract.modelio import EncoderContract, encoder_preset
from lipsync_core.backends import Backend, BackendConfig, load_backend
from lipsync_core.contract_checks import check_onnx
from lipsync_server.batching import BatchingPolicy, BatchTimings, DynamicBatcher
from lipsync_server.config import ServerSettings
from lipsync_server.metrics import ServerMetrics


def load_encoder_backend(settings: ServerSettings, path: Path) -> tuple[EncoderContract, Backend]:
    contract = encoder_preset(settings.encoder_io_preset)
    if path.suffix == ".onnx":
        check_onnx(contract, path)
    config = BackendConfig(
        kind=settings.encoder_backend,
        intra_op_threads=settings.intra_op_threads,
        max_batch=settings.encoder_max_batch_size,
    )
    return contract, load_backend(path, contract, config)


class EncoderStage:
    """``await encode(mel, deadline)`` -> ``[feature_dim]`` float32, batched across callers."""

    def __init__(
        self,
        settings: ServerSettings,
        contract: EncoderContract,
        backend: Backend,
        metrics: ServerMetrics,
    ) -> None:
        self.contract = contract
        self.backend = backend
        self._metrics = metrics
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="encoder")
        self.batcher: DynamicBatcher[np.ndarray, dict[str, np.ndarray], np.ndarray] = (
            DynamicBatcher(
                BatchingPolicy(
                    settings.encoder_max_batch_size, settings.max_queue_delay_microseconds
                ),
                max_queue_size=settings.max_queue_size * 4,
                instances=1,
                prepare=self._prepare,
                infer=self._infer,
                on_batch=self._record_batch,
            )
        )
        floor = -contract.front_end.max_abs_value
        self.silent_mel = np.full(contract.mel.shape, floor, np.float32)
        self.silent_features = np.zeros(contract.output.shape, np.float32)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        inputs = {self.contract.mel.name: self.silent_mel[None]}
        output = await loop.run_in_executor(self._pool, self.backend.infer, inputs)
        self.silent_features = np.asarray(output[0], np.float32)
        self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close()
        self._pool.shutdown(wait=True)
        self.backend.close()

    async def encode(self, mel: np.ndarray, deadline: float | None) -> np.ndarray:
        features, _, _ = await self.batcher.submit(mel, deadline)
        return features

    async def encode_many(self, mels: list[np.ndarray], deadline: float | None) -> np.ndarray:
        """``[len(mels), feature_dim]``, submitted one batch's worth at a time.

        A long PCM chunk yields more windows than the shared queue holds; submitting a batch at a
        time keeps it from being refused, and leaves room in the queue for other streams.
        """
        if not mels:
            return np.empty((0, *self.contract.output.shape), np.float32)
        wave = self.batcher.max_batch_size
        rows: list[np.ndarray] = []
        for start in range(0, len(mels), wave):
            chunk = mels[start : start + wave]
            rows += await asyncio.gather(*(self.encode(mel, deadline) for mel in chunk))
        return np.stack(rows)

    async def _prepare(self, mels: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {self.contract.mel.name: np.stack(mels).astype(np.float32, copy=False)}

    async def _infer(self, instance: int, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        output = await loop.run_in_executor(self._pool, self.backend.infer, inputs)
        return list(output)

    def _record_batch(self, timings: BatchTimings, queue_waits: list[float]) -> None:
        self._metrics.encoder_frames.inc(timings.batch_size)
        self._metrics.encoder_batch_size.observe(timings.batch_size)
        self._metrics.encoder_seconds.observe(timings.infer_s)
