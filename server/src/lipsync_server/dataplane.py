"""The data plane: one object that the LipSync and KServe v2 adapters both call.

It owns the model instances, the avatar store, the dynamic batcher, the audio encoder stage and
the closed-mouth cache of the silence fast path, and turns frame requests (avatar frame + audio
window) into composited, encoded frames. Streams live in :mod:`lipsync_server.session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from lipsync_contract.modelio import ENCODER_PRESETS, EncoderContract, ModelContract
from lipsync_core.backends import Backend, BackendInfo
from lipsync_server.avatar.store import AvatarStore, ping_pong
from lipsync_server.batching import CALLER, BatchingPolicy, BatchTimings, DynamicBatcher
from lipsync_server.compositor import FrameEncoding, JpegSubsampling
from lipsync_server.config import ServerSettings
from lipsync_server.encoder import EncoderStage
from lipsync_server.errors import (
    InvalidRequestError,
    NotConfiguredError,
    QueueFullError,
    QuotaExceededError,
    ShuttingDownError,
)
from lipsync_server.metrics import ServerMetrics
from lipsync_server.postprocess import NumpyPostprocessor, Postprocessed, Postprocessor
from lipsync_server.shared_renders import SharedRenders
from lipsync_server.speech.frames import MelWindow
from lipsync_server.video import DEFAULT_BITRATE_KBPS, check_bitrate

if TYPE_CHECKING:
    from lipsync_server.resident import ResidentBackend, ResidentInputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One frame of a model batch: an avatar frame index (precomputed input) or a raw image."""

    image: int | np.ndarray
    audio: np.ndarray


@dataclass(frozen=True)
class FrameTimings:
    queue_s: float
    preprocess_s: float
    infer_s: float
    postprocess_s: float
    encode_s: float
    total_s: float
    batch_size: int


@dataclass(frozen=True)
class RenderedFrame:
    index: int
    avatar_frame: int
    width: int
    height: int
    encoding: FrameEncoding
    data: bytes
    timings: FrameTimings
    pts_seconds: float = 0.0
    audio_samples: tuple[int, int] = (0, 0)
    silent: bool = False
    keyframe: bool = True  # decodes alone (H.264: an IDR)
    skipped: bool = False  # not rendered (a live session's latency budget ran out): no data

    def placed(self, pts_seconds: float, audio_samples: tuple[int, int]) -> RenderedFrame:
        """This frame with its presentation time and the audio samples it shows."""
        return replace(self, pts_seconds=pts_seconds, audio_samples=audio_samples)


@dataclass(frozen=True)
class OutputOptions:
    encoding: FrameEncoding
    jpeg_quality: int
    jpeg_subsampling: JpegSubsampling = "444"
    bitrate_kbps: int = DEFAULT_BITRATE_KBPS

    @property
    def rendered(self) -> FrameEncoding:
        """What the data plane renders: H.264 is encoded later, per stream, from raw frames."""
        return "raw-bgr" if self.encoding == "h264" else self.encoding


class DataPlane:
    """Frames and raw tensors through one batcher over ``backends`` (one per instance)."""

    def __init__(
        self,
        settings: ServerSettings,
        contract: ModelContract,
        backends: Sequence[Backend],
        store: AvatarStore,
        encoder: tuple[EncoderContract, Backend] | None = None,
        *,
        postprocessor: Postprocessor[Any] | None = None,
        resident: ResidentInputs | None = None,
    ) -> None:
        self.settings = settings
        self.postprocessor = postprocessor or NumpyPostprocessor(store)
        self._resident = resident
        self.contract = contract
        self.store = store
        self._backends = list(backends)
        self._pre_pool = ThreadPoolExecutor(1, thread_name_prefix="preprocess")
        self._instance_pools = [
            ThreadPoolExecutor(1, thread_name_prefix=f"instance-{i}") for i in range(len(backends))
        ]
        self._post_pool = ThreadPoolExecutor(
            settings.postprocess_threads, thread_name_prefix="postprocess"
        )
        # Host arrays, or device tensors on the resident path (``lipsync_server.resident``).
        self.batcher: DynamicBatcher[Row, Any, Any] = DynamicBatcher(
            BatchingPolicy(
                settings.max_batch_size,
                settings.max_queue_delay_microseconds,
                settings.preferred_batch_size,
            ),
            max_queue_size=settings.max_queue_size,
            instances=len(backends),
            prepare=self._prepare,
            infer=self._infer,
            on_batch=self._record_batch,
        )
        self.metrics = ServerMetrics(
            settings.max_batch_size,
            lambda: self.batcher.queue_depth,
            settings.encoder_max_batch_size,
        )
        self.encoder = (
            None if encoder is None else EncoderStage(settings, *encoder, metrics=self.metrics)
        )
        # Closed-mouth renders of the silence fast path: model output per avatar frame, and the
        # encoded JPEGs made from them by (avatar frame, quality, subsampling); a silent frame
        # is then neither run nor encoded again. Clients may ask for many qualities: the least
        # recently used JPEGs go first.
        self._closed_mouth: SharedRenders[int, np.ndarray] = SharedRenders(store.frame_count)
        self._silent_jpegs: SharedRenders[tuple[int, int, str], Postprocessed] = SharedRenders(
            max(8, 2 * store.frame_count)
        )
        self.draining = False
        self._active = 0
        self._calls_of: Counter[str] = Counter()
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def backend_info(self) -> BackendInfo:
        return self._backends[0].describe()

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    @property
    def ready(self) -> bool:
        return not self.draining

    @property
    def encoder_contract(self) -> EncoderContract:
        """The audio encoder's contract (its preset's when no encoder is loaded)."""
        if self.encoder is not None:
            return self.encoder.contract
        return ENCODER_PRESETS[self.settings.encoder_io_preset]

    @property
    def fps(self) -> float:
        """Video frames per second of audio."""
        return self.encoder_contract.fps

    def require_encoder(self) -> EncoderStage:
        if self.encoder is None:
            raise NotConfiguredError(
                "pcm input needs an audio encoder; this server runs without one "
                "(start it with --audio-encoder)"
            )
        return self.encoder

    async def start(self) -> None:
        if self.settings.warmup:
            await self._warm_up()
        if self.encoder is not None:
            await self.encoder.start()
        self.batcher.start()

    async def _warm_up(self) -> None:
        """A first batch through every instance; with CUDA graphs, every batch size, one
        instance at a time, so that no graph is captured while serving."""
        silent = np.zeros(self.contract.audio.shape, np.float32)
        sizes = range(1, self.settings.max_batch_size + 1) if self.settings.cuda_graphs else [1]
        for size in sizes:
            inputs = await self._prepare([Row(0, silent)] * size)
            for instance in range(len(self._backends)):
                await self._infer(instance, inputs)

    async def drain(self, grace_seconds: float) -> bool:
        """Refuse new work, wait up to ``grace_seconds`` for in-flight calls; True if all ended."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace_seconds)
        except TimeoutError:
            log.warning(
                "%d call(s) still running after the %.1f s grace period",
                self._active,
                grace_seconds,
            )
            return False
        return True

    async def close(self) -> None:
        if self.encoder is not None:
            await self.encoder.close()
        await self.batcher.close()
        for pool in (self._pre_pool, *self._instance_pools, self._post_pool):
            pool.shutdown(wait=True)
        for backend in self._backends:
            backend.close()

    @contextlib.asynccontextmanager
    async def call(self, client: str) -> AsyncIterator[None]:
        """Scope of one inference call of ``client``: refused while draining or when the client
        has ``max_calls_per_client`` calls in progress; awaited by :meth:`drain`."""
        if self.draining:
            raise ShuttingDownError("server is shutting down")
        limit = self.settings.max_calls_per_client
        if limit and self._calls_of[client] >= limit:
            raise QuotaExceededError(
                f"{client} has {limit} calls in progress, the most one client may have "
                "(max_calls_per_client)"
            )
        self._calls_of[client] += 1
        self._active += 1
        self._idle.clear()
        caller = CALLER.set(client)  # the batchers take callers' frames in turn
        try:
            yield
        finally:
            CALLER.reset(caller)
            self._active -= 1
            self._calls_of[client] -= 1
            if not self._calls_of[client]:
                del self._calls_of[client]
            if self._active == 0:
                self._idle.set()

    # -- requests --------------------------------------------------------------------------------

    def check_model(self, name: str) -> None:
        if name and name != self.model_name:
            raise InvalidRequestError(
                f"unknown model {name!r}; this server serves {self.model_name!r}"
            )

    def output_options(
        self,
        encoding: FrameEncoding,
        jpeg_quality: int,
        jpeg_subsampling: JpegSubsampling = "444",
        bitrate_kbps: int = 0,
    ) -> OutputOptions:
        if jpeg_quality > 100:
            raise InvalidRequestError(f"jpeg_quality {jpeg_quality} is outside 1..100")
        return OutputOptions(
            encoding,
            jpeg_quality or self.settings.jpeg_quality,
            jpeg_subsampling,
            check_bitrate(bitrate_kbps),
        )

    def skips_model(self, silent: bool) -> bool:
        """The silence fast path's one rule: a silent window skips the models when it is on."""
        return silent and self.settings.silence_fast_path

    def admit(self, frames: int) -> None:
        """Reject at once (RESOURCE_EXHAUSTED) when ``frames`` more would overflow the queue."""
        if self.batcher.queue_depth + frames > self.settings.max_queue_size:
            waiting, limit = self.batcher.queue_depth, self.settings.max_queue_size
            raise QueueFullError(f"queue full: {waiting} of {limit} frames waiting")

    def queue_deadline(self, deadline: float | None) -> float | None:
        """The client's deadline, or sooner when ``queue_timeout_microseconds`` says so."""
        limit = self.settings.queue_timeout_microseconds
        if not limit:
            return deadline
        own = time.monotonic() + limit / 1e6
        return own if deadline is None else min(deadline, own)

    async def render(
        self,
        index: int,
        window: np.ndarray,
        options: OutputOptions,
        deadline: float | None = None,
        silent: bool = False,
    ) -> RenderedFrame:
        """Frame ``index`` (its avatar frame by ping-pong) with audio ``window``; a ``silent``
        one comes from the closed-mouth cache when the silence fast path is on."""
        started = time.monotonic()
        avatar_frame = ping_pong(index, self.store.frame_count)
        silent = self.skips_model(silent)
        waited, batch = 0.0, BatchTimings(batch_size=0)
        if silent and options.rendered == "jpeg":
            key = (avatar_frame, options.jpeg_quality, options.jpeg_subsampling)
            done, made_here = await self._silent_jpegs.get(
                key, lambda: self._render_silent(avatar_frame, options), deadline
            )
            if not made_here:  # neither composited nor encoded for this frame
                done = Postprocessed(done.data, 0.0, 0.0)
        elif silent:
            done = await self._render_silent(avatar_frame, options, deadline)
        else:
            row = Row(avatar_frame, window)
            output, waited, batch = await self.batcher.submit(row, self.queue_deadline(deadline))
            done = await self._postprocess(avatar_frame, output, options)
        data, post_s, encode_s = done.data, done.composite_s, done.encode_s
        if silent:
            self.metrics.silent_frames.inc()
        timings = FrameTimings(
            waited,
            batch.preprocess_s,
            batch.infer_s,
            post_s,
            encode_s,
            time.monotonic() - started,
            batch.batch_size,
        )
        self.metrics.frames.inc()
        self.metrics.postprocess_seconds.observe(post_s)
        self.metrics.encode_seconds.observe(encode_s)
        self.metrics.frame_seconds.observe(timings.total_s)
        manifest = self.store.manifest
        return RenderedFrame(
            index,
            avatar_frame,
            manifest.width,
            manifest.height,
            options.rendered,
            data,
            timings,
            silent=silent,
        )

    async def render_many(
        self,
        indices: Sequence[int],
        windows: np.ndarray,
        options: OutputOptions,
        deadline: float | None,
        silent: Sequence[bool] | None = None,
    ) -> list[RenderedFrame]:
        quiet = list(silent) if silent is not None else [False] * len(indices)
        # Like a stream: a few batches in flight at a time, so a request may ask for more frames
        # than the queue holds and still leaves room in it for other clients.
        slots = asyncio.Semaphore(self.settings.inflight_per_stream)

        async def render_one(row: int, index: int) -> RenderedFrame:
            async with slots:
                if not self.skips_model(quiet[row]):
                    self.admit(1)
                return await self.render(index, windows[row], options, deadline, quiet[row])

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(render_one(row, index)) for row, index in enumerate(indices)]
        return [task.result() for task in tasks]

    async def encode_windows(
        self, windows: list[MelWindow], deadline: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Feature vectors ``[len(windows), dim]`` and silence flags for mel windows; silent
        windows skip the encoder when the silence fast path is on."""
        encoder = self.require_encoder()
        silent = np.array([self.skips_model(window.silent) for window in windows], bool)
        loud = [window.mel for window, quiet in zip(windows, silent, strict=True) if not quiet]
        encoded = await encoder.encode_many(loud, deadline)
        features = np.empty((len(windows), *encoder.contract.output.shape), np.float32)
        features[silent] = encoder.silent_features
        features[~silent] = encoded
        self.metrics.encoder_skipped.inc(int(silent.sum()))
        return features, silent

    async def _render_silent(
        self, avatar_frame: int, options: OutputOptions, deadline: float | None = None
    ) -> Postprocessed:
        closed, _ = await self._closed_mouth.get(
            avatar_frame, lambda: self._render_closed_mouth(avatar_frame), deadline
        )
        return await self._postprocess(avatar_frame, closed.astype(np.float32), options)

    async def _render_closed_mouth(self, avatar_frame: int) -> np.ndarray:
        """Shared by every caller: bounded by the server's queue timeout, not a caller's."""
        encoder = self.require_encoder()
        rows = np.tile(encoder.silent_features, (self.contract.audio_window, 1))
        window = rows.reshape(self.contract.audio.shape)
        row = Row(avatar_frame, window)
        output, _, _ = await self.batcher.submit(row, self.queue_deadline(None))
        self.metrics.silent_renders.inc()
        return self._host(output).astype(np.float16)

    async def infer_tensors(
        self, image: np.ndarray, audio: np.ndarray, deadline: float | None
    ) -> np.ndarray:
        """Raw model call for a client batch (KServe v2); rows join the shared batcher."""
        self.admit(image.shape[0])
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(
                    self.batcher.submit(Row(image[row], audio[row]), self.queue_deadline(deadline))
                )
                for row in range(image.shape[0])
            ]
        return np.stack([self._host(task.result()[0]) for task in tasks])

    # -- stages ------------------------------------------------------------------------------------

    async def _postprocess(
        self, avatar_frame: int, output: np.ndarray, options: OutputOptions
    ) -> Postprocessed:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._post_pool,
            self.postprocessor,
            avatar_frame,
            output,
            options.rendered,
            options.jpeg_quality,
            options.jpeg_subsampling,
        )

    def _host(self, output: Any) -> np.ndarray:
        if self._resident is None:
            return np.asarray(output)
        from lipsync_server.resident import to_host

        return to_host(output)

    async def _prepare(self, rows: list[Row]) -> Any:
        loop = asyncio.get_running_loop()
        if self._resident is not None:
            images, audio = [row.image for row in rows], [row.audio for row in rows]
            return await loop.run_in_executor(
                self._pre_pool, self._resident.assemble, images, audio
            )
        return await loop.run_in_executor(self._pre_pool, self._assemble, rows)

    def _assemble(self, rows: list[Row]) -> dict[str, np.ndarray]:
        image = np.empty(self.contract.image.batch_shape(len(rows)), np.float32)
        audio = np.empty(self.contract.audio.batch_shape(len(rows)), np.float32)
        avatar_rows = [
            (row, item.image) for row, item in enumerate(rows) if isinstance(item.image, int)
        ]
        for row, item in enumerate(rows):
            if not isinstance(item.image, int):
                image[row] = item.image
            audio[row] = item.audio
        for row, frame in avatar_rows:
            self.store.fill_image_batch([frame], image[row : row + 1])
        return {self.contract.image.name: image, self.contract.audio.name: audio}

    async def _infer(self, instance: int, inputs: Any) -> list[Any]:
        loop = asyncio.get_running_loop()
        pool, backend = self._instance_pools[instance], self._backends[instance]
        if self._resident is not None:
            resident = cast("ResidentBackend", backend)
            return await loop.run_in_executor(pool, self._resident.run, resident, inputs)
        output = await loop.run_in_executor(pool, backend.infer, inputs)
        return list(output)

    def _record_batch(self, timings: BatchTimings, queue_waits: list[float]) -> None:
        self.metrics.model_frames.inc(timings.batch_size)
        self.metrics.batch_size.observe(timings.batch_size)
        self.metrics.preprocess_seconds.observe(timings.preprocess_s)
        self.metrics.infer_seconds.observe(timings.infer_s)
        for waited in queue_waits:
            self.metrics.queue_seconds.observe(waited)
