"""Live sessions and whole clips in the data plane: audio in, frames out, in order.

A :class:`Session` takes audio inputs of one kind (feature vectors, precomputed windows or PCM
chunks of any size), turns them into frame requests as soon as each frame's look-ahead has
arrived, keeps at most ``inflight_per_stream`` frames in flight and yields the frames in order.
PCM goes through the speech front end and the batched audio encoder first. :func:`render_clip`
does the same for one whole clip (``Generate``). Both API adapters only convert messages.

With a latency budget, a frame still waiting for a slot or for the model when too little of the
budget since its audio arrived is left to render it (the session's recent render time) is not
rendered: a skip marker takes its place, so a live session keeps pace with its audio (at a lower
frame rate) instead of falling further behind. The first frame is always rendered. Inputs are
read ahead of their processing (``RECEIVE_AHEAD``), so the budget counts from their arrival even
while the audio encoder is behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np

from lipsync_server.audio import StreamWindower, build_windows, window_rows
from lipsync_server.avatar.store import ping_pong
from lipsync_server.dataplane import DataPlane, FrameTimings, OutputOptions, RenderedFrame
from lipsync_server.errors import DeadlineExceededError, InvalidRequestError
from lipsync_server.speech.frames import MelWindow, sample_range
from lipsync_server.speech.pcm import PcmChunk
from lipsync_server.speech.pipeline import SpeechInput, clip_windows
from lipsync_server.validation import check_frame_indices

FEATURE_SAMPLE_RATE = 16000  # sample ranges of feature and window input are given at 16 kHz


@dataclass(frozen=True)
class FeaturesInput:
    features: np.ndarray  # [frames, feature_dim]


@dataclass(frozen=True)
class WindowsInput:
    windows: np.ndarray  # [frames, *contract.audio.shape]


AudioInput = FeaturesInput | WindowsInput | PcmChunk

_KINDS: dict[type, str] = {FeaturesInput: "features", WindowsInput: "windows", PcmChunk: "pcm"}


@dataclass(frozen=True)
class SessionConfig:
    options: OutputOptions
    first_index: int = 0
    deadline: float | None = None  # the call's (time.monotonic())
    latency_budget: float | None = None  # seconds from a frame's audio to the frame


# A frame on its way (and whether it holds an in-flight slot), the error that ends the
# session, or its end.
_Pending = tuple[asyncio.Task[RenderedFrame], bool] | Exception | None

_NO_TIMINGS = FrameTimings(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
# Messages read ahead of their processing, so that their arrival times are true (a budget counts
# from them) even while the audio encoder is behind; beyond that the client waits.
RECEIVE_AHEAD = 256
_Received = tuple[AudioInput, float] | Exception | None


async def _receive(inputs: AsyncIterator[AudioInput], received: asyncio.Queue[_Received]) -> None:
    """Each input with the time it arrived, then None (or the error that ended the inputs)."""
    try:
        async for item in inputs:
            await received.put((item, time.monotonic()))
    except Exception as exc:
        await received.put(exc)
        return
    await received.put(None)


class Session:
    """One stream: ``async for frame in Session(plane, config).run(inputs)``."""

    def __init__(self, plane: DataPlane, config: SessionConfig) -> None:
        self._plane = plane
        self._config = config
        self._pending: asyncio.Queue[_Pending] = asyncio.Queue()
        self._slots = asyncio.Semaphore(plane.settings.inflight_per_stream)
        self._windower = StreamWindower(plane.contract)
        self._kind: str | None = None
        self._speech: SpeechInput | None = None
        self._sent = 0
        # How long a frame takes once out of the batch queue (moving average): a frame must
        # leave the queue that long before its budget runs out.
        self._service_s = 0.0

    async def run(self, inputs: AsyncIterator[AudioInput]) -> AsyncIterator[RenderedFrame]:
        reader = asyncio.create_task(self._read(inputs))
        try:
            while (item := await self._pending.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                task, holds_slot = item
                frame = await task
                if holds_slot:
                    self._slots.release()
                yield frame
        finally:
            reader.cancel()
            while not self._pending.empty():
                leftover = self._pending.get_nowait()
                if isinstance(leftover, tuple):
                    leftover[0].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, inputs: AsyncIterator[AudioInput]) -> None:
        received: asyncio.Queue[_Received] = asyncio.Queue(RECEIVE_AHEAD)
        receiver = asyncio.create_task(_receive(inputs, received))
        try:
            while (entry := await received.get()) is not None:
                if isinstance(entry, Exception):
                    raise entry
                await self._push(*entry)
            await self._finish()
            await self._pending.put(None)
        except Exception as exc:
            await self._pending.put(exc)
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver

    async def _push(self, item: AudioInput, arrived: float) -> None:
        kind = _KINDS[type(item)]
        if self._kind is not None and kind != self._kind:
            raise InvalidRequestError(
                f"a stream sends one kind of audio (features, windows or pcm): "
                f"got {kind} after {self._kind}"
            )
        self._kind = kind
        if isinstance(item, FeaturesInput):
            for position, window, _ in self._windower.push(item.features):
                await self._submit(position, window, False, arrived)
        elif isinstance(item, WindowsInput):
            for window in item.windows:
                await self._submit(self._sent, window, False, arrived)
        else:
            if self._speech is None:
                encoder = self._plane.require_encoder()
                self._speech = SpeechInput(
                    encoder.contract, self._plane.settings.silence_threshold_dbfs
                )
            # Resampling and the mel spectrogram of a long chunk: off the event loop.
            await self._encode(await asyncio.to_thread(self._speech.push, item), arrived)

    async def _finish(self) -> None:
        arrived = time.monotonic()
        if self._speech is not None:
            await self._encode(await asyncio.to_thread(self._speech.finish), arrived)
        for position, window, silent in self._windower.finish():
            await self._submit(position, window, silent, arrived)

    async def _encode(self, windows: list[MelWindow], arrived: float) -> None:
        if not windows:
            return
        features, silent = await self._plane.encode_windows(windows, self._config.deadline)
        for position, window, quiet in self._windower.push(features, silent):
            await self._submit(position, window, quiet, arrived)

    def _samples(self, position: int) -> tuple[int, int]:
        speech = self._speech
        if speech is None:
            return sample_range(position, FEATURE_SAMPLE_RATE, self._plane.fps, None)
        total = speech.samples_in if speech.finished else None
        return sample_range(position, speech.sample_rate, self._plane.fps, total)

    async def _submit(
        self, position: int, window: np.ndarray, silent: bool, arrived: float
    ) -> None:
        budget = self._config.latency_budget
        # The first frame is always rendered: a skipped frame shows the one before it.
        due = None if budget is None or self._sent == 0 else arrived + budget
        index = self._config.first_index + position
        placement = (index / self._plane.fps, self._samples(position))
        self._sent += 1
        if not await self._take_slot(self._leave_queue_by(due)):
            task = asyncio.create_task(self._skipped(index, placement))
            await self._pending.put((task, False))
            return
        if not self._plane.skips_model(silent):
            self._plane.admit(1)
        task = asyncio.create_task(self._render(index, window, silent, placement, due))
        await self._pending.put((task, True))

    def _leave_queue_by(self, due: float | None) -> float | None:
        """When a frame due at ``due`` must start rendering: its recent render time earlier,
        but never more than half the budget (a render time over the budget, as on a machine
        that is briefly overloaded, must not skip every frame from then on)."""
        budget = self._config.latency_budget
        if due is None or budget is None:
            return due
        return due - min(self._service_s, budget / 2)

    async def _take_slot(self, until: float | None) -> bool:
        """An in-flight slot, waiting at most ``until`` (False: the frame's time is up)."""
        if until is None:
            await self._slots.acquire()
            return True
        try:
            await asyncio.wait_for(self._slots.acquire(), max(0.0, until - time.monotonic()))
        except TimeoutError:
            return False
        return True

    async def _render(
        self,
        index: int,
        window: np.ndarray,
        silent: bool,
        placement: tuple[float, tuple[int, int]],
        due: float | None,
    ) -> RenderedFrame:
        config = self._config
        deadline = config.deadline
        if due is not None and (deadline is None or due < deadline):
            try:
                frame = await self._plane.render(
                    index, window, config.options, self._leave_queue_by(due), silent
                )
            except DeadlineExceededError:
                return await self._skipped(index, placement)
            service = frame.timings.total_s - frame.timings.queue_s
            self._service_s = (
                service if not self._service_s else 0.8 * self._service_s + 0.2 * service
            )
        else:
            frame = await self._plane.render(index, window, config.options, deadline, silent)
        return frame.placed(*placement)

    async def _skipped(self, index: int, placement: tuple[float, tuple[int, int]]) -> RenderedFrame:
        """The marker of a frame not rendered: its place, time and audio, no pixels."""
        plane = self._plane
        plane.metrics.frames_skipped.inc()
        manifest = plane.store.manifest
        marker = RenderedFrame(
            index,
            ping_pong(index, manifest.frame_count),
            manifest.width,
            manifest.height,
            self._config.options.encoding,
            b"",
            _NO_TIMINGS,
            keyframe=False,
            skipped=True,
        )
        return marker.placed(*placement)


async def render_clip(
    plane: DataPlane,
    indices: Sequence[int],
    audio: AudioInput,
    options: OutputOptions,
    deadline: float | None,
) -> list[RenderedFrame]:
    """Frames ``indices`` of one whole clip (``Generate``), in request order."""
    limit = plane.settings.max_frames_per_request
    silent: list[bool] | None = None
    rate, total = FEATURE_SAMPLE_RATE, None
    if isinstance(audio, WindowsInput):
        check_frame_indices(indices, limit, None)
        windows = audio.windows
        if windows.shape[0] != len(indices):
            raise InvalidRequestError(
                f"{windows.shape[0]} audio windows for {len(indices)} frame_indices"
            )
    else:
        if isinstance(audio, FeaturesInput):
            features, flags = audio.features, np.zeros(audio.features.shape[0], bool)
            unit = "feature vectors were sent"
        else:
            encoder = plane.require_encoder()
            mels, speech = await asyncio.to_thread(
                clip_windows, audio, encoder.contract, plane.settings.silence_threshold_dbfs
            )
            features, flags = await plane.encode_windows(mels, deadline)
            rate, total = speech.sample_rate, speech.samples_in
            unit = f"video frames are in {total} samples at {rate} Hz"
        check_frame_indices(indices, limit, features.shape[0], unit)
        windows = build_windows(features, list(indices), plane.contract)
        count = features.shape[0]
        silent = [bool(flags[window_rows(i, count, plane.contract)].all()) for i in indices]
    frames = await plane.render_many(indices, windows, options, deadline, silent)
    return [
        frame.placed(index / plane.fps, sample_range(index, rate, plane.fps, total))
        for index, frame in zip(indices, frames, strict=True)
    ]
