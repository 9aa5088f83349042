"""Speech in, video out through a real server process: PCM streamed and whole, timestamps, the
audio encoder, the silence fast path and its metrics, and bad PCM input."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile
from lipsync_bench.prometheus import scrape_values

from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server.client import LipSyncStub, features_message, pcm_message, stream_speech
from lipsync_server.compositor import decode
from lipsync_server.process import ServerProcess
from lipsync_server.speech.pcm import read_audio_file
from lipsync_server.speech.tts import synthetic_speech

pytestmark = pytest.mark.component

SECONDS = 5.0
FRAMES = 125  # 5 s at 25 fps


@pytest.fixture(scope="module")
def server(
    reference_model: Path,
    reference_encoder: Path,
    small_avatar: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "server.log"
    process = ServerProcess(
        reference_model,
        small_avatar,
        log,
        audio_encoder=reference_encoder,
        max_batch_size=4,
        max_queue_size=2 * FRAMES,
        max_frames_per_request=FRAMES,
        max_pcm_chunk_bytes=400_000,
        intra_op_threads=2,
    )
    with process:
        yield process
    assert process.process.returncode == 0, log.read_text()[-2000:]


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    soundfile.write(str(path), synthetic_speech(SECONDS, 16000, seed=1), 16000, subtype="PCM_16")
    return path


def _metrics(server: ServerProcess) -> dict[str, float]:
    return scrape_values(server.metrics_url)


async def _stream(
    target: str,
    samples: np.ndarray,
    rate: int,
    encoding: pb.Encoding.ValueType = pb.ENCODING_RAW_BGR,
) -> list[pb.Frame]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = LipSyncStub(channel)
        frames = stream_speech(stub, samples, rate, encoding=encoding, timeout=300)
        return [frame async for frame in frames]


async def _generate(target: str, request: pb.GenerateRequest) -> pb.GenerateResponse:
    limit = 64 * 1024 * 1024
    options = [("grpc.max_receive_message_length", limit)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        return await LipSyncStub(channel).Generate(request, timeout=300)


def _pixels(frame: pb.Frame) -> np.ndarray:
    return decode(frame.data, "raw-bgr", frame.width, frame.height).astype(np.int16)


def test_get_info_describes_the_speech_input(server: ServerProcess) -> None:
    async def call() -> pb.GetInfoResponse:
        async with grpc.aio.insecure_channel(server.target) as channel:
            return await LipSyncStub(channel).GetInfo(pb.GetInfoRequest())

    audio = asyncio.run(call()).audio_input
    assert audio.pcm
    assert (audio.sample_rate, audio.fps, audio.encoder) == (16000, 25.0, "ave")
    assert list(audio.encoder_input.shape) == [1, 80, 16]
    assert audio.encoder_backend == "onnxruntime-cpu"
    assert audio.silence_fast_path
    assert audio.silence_threshold_dbfs == -50.0
    assert audio.max_pcm_chunk_bytes == 400_000
    assert 400 < audio.lookahead_ms < 600


def test_a_wav_streamed_in_20_ms_chunks_and_sent_whole_give_the_same_frames(
    server: ServerProcess, wav: Path
) -> None:
    samples, rate = read_audio_file(wav)
    before = _metrics(server)
    streamed = asyncio.run(_stream(server.target, samples, rate))
    after = _metrics(server)
    whole = asyncio.run(
        _generate(
            server.target,
            pb.GenerateRequest(
                frame_indices=list(range(FRAMES)),
                pcm=pcm_message(samples, rate),
                output=pb.OutputOptions(encoding=pb.ENCODING_RAW_BGR),
            ),
        )
    ).frames
    assert [f.index for f in streamed] == [f.index for f in whole] == list(range(FRAMES))
    assert [f.silent for f in streamed] == [f.silent for f in whole]
    # Frames may run in batches of different sizes, whose float results can differ in the last
    # bits: the bound is one level of 8-bit colour.
    worst = max(
        int(np.abs(_pixels(a) - _pixels(b)).max()) for a, b in zip(streamed, whole, strict=True)
    )
    assert worst <= 1
    assert after["lipsync_encoder_frames_total"] - before["lipsync_encoder_frames_total"] > 0


def test_frame_timestamps_cover_the_audio_exactly(server: ServerProcess) -> None:
    for rate in (16000, 44100):
        samples = synthetic_speech(1.23, rate, seed=2)
        frames = asyncio.run(_stream(server.target, samples, rate))
        assert len(frames) == 31  # ceil(1.23 * 25)
        assert [f.pts_seconds for f in frames] == [i / 25 for i in range(31)]
        ranges = [(f.audio_sample_start, f.audio_sample_end) for f in frames]
        assert ranges[0][0] == 0
        assert ranges[-1][1] == samples.size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_silent_frames_skip_both_models_and_the_metrics_show_it(server: ServerProcess) -> None:
    samples = synthetic_speech(3.0, 16000, seed=3)
    samples[16000:40000] = 0.0  # 1.5 s of silence
    before = _metrics(server)
    frames = asyncio.run(_stream(server.target, samples, 16000))
    after = _metrics(server)

    def moved(name: str) -> float:
        return after[name] - before[name]

    silent = [frame for frame in frames if frame.silent]
    assert 10 <= len(silent) <= 40
    assert all(frame.timings.batch_size == 0 for frame in silent)
    assert moved("lipsync_silent_frames_total") == len(silent)
    assert moved("lipsync_frames_total") == len(frames) == 75
    # The model ran for the spoken frames and at most once per avatar frame for the cache.
    assert moved("lipsync_model_frames_total") <= len(frames) - len(silent) + 4
    assert moved("lipsync_encoder_skipped_frames_total") >= len(silent)
    assert moved("lipsync_encoder_frames_total") == 75 - moved(
        "lipsync_encoder_skipped_frames_total"
    )
    # The cached closed-mouth frame of an avatar frame is the same each time it is used.
    by_avatar: dict[int, np.ndarray] = {}
    for frame in silent:
        pixels = _pixels(frame)
        reference = by_avatar.setdefault(frame.avatar_frame, pixels)
        assert np.array_equal(reference, pixels)


def test_a_silent_jpeg_frame_is_encoded_once_per_avatar_frame(server: ServerProcess) -> None:
    samples = np.zeros(32000, np.float32)  # 2 s of silence: 50 frames over 4 avatar frames
    frames = asyncio.run(_stream(server.target, samples, 16000, pb.ENCODING_JPEG))
    assert all(frame.silent for frame in frames)
    first: dict[int, bytes] = {}
    for frame in frames:
        if frame.avatar_frame in first:  # from the cache: neither composited nor encoded
            assert frame.data == first[frame.avatar_frame]
            assert frame.timings.encode_ms == frame.timings.postprocess_ms == 0
        else:
            first[frame.avatar_frame] = frame.data
    assert len(first) <= 4


async def _stream_error(
    target: str, messages: list[pb.StreamGenerateRequest]
) -> grpc.aio.AioRpcError:
    async def requests() -> AsyncIterator[pb.StreamGenerateRequest]:
        for message in messages:
            yield message

    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in LipSyncStub(channel).StreamGenerate(requests(), timeout=60):
                pass
        return caught.value


def _pcm(
    data: bytes, rate: int = 16000, fmt: pb.PcmFormat.ValueType = pb.PCM_FORMAT_S16LE
) -> pb.StreamGenerateRequest:
    return pb.StreamGenerateRequest(pcm=pb.Pcm(sample_rate=rate, format=fmt, data=data))


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([_pcm(b"\x00" * 641)], "641 bytes is not a whole number of s16le samples"),
        (
            [_pcm(b"\x00" * 640), _pcm(b"\x00" * 1920, 48000)],
            "sample_rate changed from 16000 to 48000",
        ),
        (
            [_pcm(np.array([0.1, np.nan], "<f4").tobytes(), fmt=pb.PCM_FORMAT_F32LE)],
            "f32le samples contain NaN or Inf",
        ),
        ([_pcm(b"\x00" * 400_002)], "400002 bytes is over the limit of 400000 bytes"),
        ([_pcm(b"\x00" * 640, 1000)], "sample_rate 1000 is outside 8000..192000"),
        (
            [
                _pcm(b"\x00" * 640),
                pb.StreamGenerateRequest(features=features_message(np.zeros((1, 512)))),
            ],
            "one kind of audio (features, windows or pcm): got features after pcm",
        ),
    ],
)
def test_bad_pcm_is_invalid_argument_with_a_message(
    server: ServerProcess, messages: list[pb.StreamGenerateRequest], message: str
) -> None:
    error = asyncio.run(_stream_error(server.target, messages))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.details() or "")
    after = asyncio.run(_stream(server.target, synthetic_speech(0.2, 16000), 16000))
    assert len(after) == 5  # the server still serves


def test_a_server_without_an_encoder_refuses_pcm_as_a_failed_precondition(
    reference_model: Path, small_avatar: Path, tmp_path: Path
) -> None:
    async def scenario(target: str) -> tuple[bool, grpc.aio.AioRpcError]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = LipSyncStub(channel)
            info = await stub.GetInfo(pb.GetInfoRequest())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Generate(
                    pb.GenerateRequest(frame_indices=[0], pcm=pcm_message(np.zeros(640), 16000))
                )
            return info.audio_input.pcm, caught.value

    with ServerProcess(reference_model, small_avatar, tmp_path / "server.log") as server:
        pcm_supported, error = asyncio.run(scenario(server.target))
    assert not pcm_supported
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "start it with --audio-encoder" in (error.details() or "")


def test_a_pcm_chunk_of_the_advertised_size_and_more_frames_than_the_queue_work_when_idle(
    reference_model: Path, reference_encoder: Path, small_avatar: Path, tmp_path: Path
) -> None:
    """Default settings: the queue holds 64 frames and the encoder's about 10 s of windows; one
    chunk brings 32 s of speech and Generate may ask for 256 frames. Generate renders 65 frames
    of it; a stream's first second is enough to show it was taken (the whole stream would take
    minutes on a CPU)."""
    default_queue = 64
    limit = 1024 * 1024
    rate = 16000
    samples = synthetic_speech(limit / 2 / rate, rate, seed=4)  # s16le: 2 bytes a sample
    assert pcm_message(samples, rate).ByteSize() > limit - 16

    async def scenario(target: str) -> tuple[int, int, int]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = LipSyncStub(channel)
            info = await stub.GetInfo(pb.GetInfoRequest())
            frames = list(range(default_queue + 1))
            request = pb.GenerateRequest(frame_indices=frames, pcm=pcm_message(samples, rate))
            clip = await stub.Generate(request, timeout=120)
            whole = samples.size / rate
            stream = stream_speech(stub, samples, rate, chunk_seconds=whole, timeout=120)
            first_second = 0
            async for _ in stream:
                first_second += 1
                if first_second == 25:
                    break
            await stream.aclose()
            return info.audio_input.max_pcm_chunk_bytes, len(clip.frames), first_second

    log = tmp_path / "server.log"
    with ServerProcess(
        reference_model, small_avatar, log, audio_encoder=reference_encoder, intra_op_threads=2
    ) as default_server:
        assert asyncio.run(scenario(default_server.target)) == (limit, default_queue + 1, 25)
