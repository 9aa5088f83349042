"""The server as a real process on loopback: LipSync and KServe v2 clients, health, reflection,
metrics, and a fuzz of malformed requests. ORT on CPU with the reference model, few frames."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from lipsync_contract.modelio import preset
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server.audio import build_windows, synthetic_features
from lipsync_server.avatar.demo import write_demo_avatar
from lipsync_server.avatar.store import AvatarStore, ping_pong
from lipsync_server.client import LipSyncStub, features_message, stream_frames
from lipsync_server.compositor import composite, decode
from lipsync_server.process import ServerProcess

pytestmark = pytest.mark.component

CONTRACT = preset("unet328-ave")
MAX_BATCH = 2


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("avatar")
    write_demo_avatar(root, frames=6, width=320, height=240)
    return root


@pytest.fixture(scope="module")
def server(
    reference_model: Path,
    reference_encoder: Path,
    avatar_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "server.log"
    process = ServerProcess(
        reference_model,
        avatar_dir,
        log,
        audio_encoder=reference_encoder,
        max_pcm_chunk_bytes=PCM_LIMIT,
        max_batch_size=MAX_BATCH,
        max_queue_size=16,
        max_frames_per_request=8,
        intra_op_threads=2,
        extra_args=["--reflection"],
    )
    with process:
        yield process
    assert process.process.returncode == 0, log.read_text()[-2000:]


async def _generate(target: str, request: pb.GenerateRequest) -> pb.GenerateResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        return await LipSyncStub(channel).Generate(request, timeout=120)


def test_get_info_describes_model_avatar_and_limits(server: ServerProcess) -> None:
    async def call() -> pb.GetInfoResponse:
        async with grpc.aio.insecure_channel(server.target) as channel:
            return await LipSyncStub(channel).GetInfo(pb.GetInfoRequest())

    info = asyncio.run(call())
    assert info.model == "lipsync"
    assert info.backend == "onnxruntime-cpu"
    assert (info.avatar.frames, info.avatar.width, info.avatar.height) == (6, 320, 240)
    assert list(info.audio.shape) == [32, 16, 16]
    assert info.audio_feature_dim == 512
    assert info.max_batch_size == MAX_BATCH


def test_generate_equals_direct_backend_plus_compositing(
    server: ServerProcess, reference_model: Path, avatar_dir: Path
) -> None:
    features = synthetic_features(7, 512, seed=3)
    indices = [1, 6]  # 6 ping-pongs back to avatar frame 4
    response = asyncio.run(
        _generate(
            server.target,
            pb.GenerateRequest(
                frame_indices=indices,
                features=features_message(features),
                output=pb.OutputOptions(encoding=pb.ENCODING_RAW_BGR),
            ),
        )
    )
    store = AvatarStore.load(avatar_dir)
    avatar_frames = [ping_pong(index, store.frame_count) for index in indices]
    image = np.empty(CONTRACT.image.batch_shape(2), np.float32)
    store.fill_image_batch(avatar_frames, image)
    backend = load_backend(reference_model, CONTRACT, BackendConfig(kind="onnxruntime-cpu"))
    output = backend.infer({"input": image, "audio": build_windows(features, indices, CONTRACT)})
    assert [frame.index for frame in response.frames] == indices
    assert [frame.avatar_frame for frame in response.frames] == avatar_frames == [1, 4]
    for frame, avatar_frame, face in zip(response.frames, avatar_frames, output, strict=True):
        assert (frame.width, frame.height) == (320, 240)
        got = decode(frame.data, "raw-bgr", frame.width, frame.height).astype(int)
        expected = composite(store, avatar_frame, face).astype(int)
        assert np.abs(got - expected).max() <= 1


def test_stream_returns_every_frame_in_order_at_the_avatar_size(server: ServerProcess) -> None:
    features = synthetic_features(5, 512, seed=4)

    async def collect() -> list[pb.Frame]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            return [
                f
                async for f in stream_frames(
                    LipSyncStub(channel), features, chunk_frames=2, timeout=120
                )
            ]

    frames = asyncio.run(collect())
    assert [frame.index for frame in frames] == [0, 1, 2, 3, 4]
    for frame in frames:
        assert decode(frame.data, "jpeg", frame.width, frame.height).shape == (240, 320, 3)
        assert 1 <= frame.timings.batch_size <= MAX_BATCH
        assert frame.timings.infer_ms > 0
        assert frame.timings.total_ms >= frame.timings.infer_ms


def test_tritonclient_lists_describes_and_infers_like_onnxruntime(
    server: ServerProcess, reference_model: Path
) -> None:
    client = triton.InferenceServerClient(server.target)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("lipsync")
    index = client.get_model_repository_index(as_json=True)
    assert [(m["name"], m["state"]) for m in index["models"]] == [("lipsync", "READY")]
    metadata = client.get_model_metadata("lipsync", as_json=True)
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("input", "FP32", ["-1", "6", "320", "320"]),
        ("audio", "FP32", ["-1", "32", "16", "16"]),
    ]
    assert metadata["outputs"][0]["name"] == "output"
    rng = np.random.default_rng(5)
    image = rng.random((1, 6, 320, 320), dtype=np.float32)
    audio = rng.normal(size=(1, 32, 16, 16)).astype(np.float32)
    inputs = [
        triton.InferInput("input", list(image.shape), "FP32"),
        triton.InferInput("audio", list(audio.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(image)
    inputs[1].set_data_from_numpy(audio)
    result = client.infer("lipsync", inputs, outputs=[triton.InferRequestedOutput("output")])
    served = result.as_numpy("output")
    backend = load_backend(reference_model, CONTRACT, BackendConfig(kind="onnxruntime-cpu"))
    direct = backend.infer({"input": image, "audio": audio})
    assert served.shape == (1, 3, 320, 320)
    np.testing.assert_allclose(served, direct, rtol=0, atol=1e-5)
    client.close()


def test_health_is_serving_and_reflection_lists_the_services(server: ServerProcess) -> None:
    async def check() -> tuple[int, list[str]]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="lipsync.v1.LipSync")
            )
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)

            async def one_request() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            names: list[str] = []
            async for reply in stub.ServerReflectionInfo(one_request()):
                names += [service.name for service in reply.list_services_response.service]
            return health.status, names

    status, names = asyncio.run(check())
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert {"lipsync.v1.LipSync", "inference.GRPCInferenceService", "grpc.health.v1.Health"} <= set(
        names
    )


def _metrics(server: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10
    ) as reply:
        text = reply.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def test_metrics_parse_and_move_when_frames_are_served(server: ServerProcess) -> None:
    before = _metrics(server)
    features = synthetic_features(3, 512, seed=6)
    asyncio.run(
        _generate(
            server.target,
            pb.GenerateRequest(frame_indices=[0, 2], features=features_message(features)),
        )
    )
    after = _metrics(server)

    def moved(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert moved("lipsync_frames_total{}") == 2
    assert moved("lipsync_requests_total{code=OK,method=Generate}") == 1
    assert moved("lipsync_infer_seconds_count{}") >= 1
    assert moved("lipsync_batch_size_sum{}") >= 2
    for stage in ("queue", "preprocess", "postprocess", "encode", "frame"):
        assert moved(f"lipsync_{stage}_seconds_count{{}}") >= 1, stage
    assert "lipsync_active_streams{}" in after
    assert "lipsync_queue_depth{}" in after


# -- fuzz ------------------------------------------------------------------------------------------

FUZZ_REQUESTS = 10_000
PCM_LIMIT = 100_000  # max_pcm_chunk_bytes of the fixture server

Case = tuple[pb.GenerateRequest, str]


def _f32(shape: tuple[int, ...], rng: np.random.Generator, poison: float | None = None) -> bytes:
    array = rng.normal(size=shape).astype("<f4")
    if poison is not None:
        array.flat[int(rng.integers(array.size))] = poison
    return array.tobytes()


def _bad_feature_bytes(rng: np.random.Generator) -> bytes:
    length = int(rng.integers(1, 4000))
    return bytes(length + (1 if length % 2048 == 0 else 0))


def _pcm(data: bytes, rate: int = 16000, fmt: int = pb.PCM_FORMAT_S16LE) -> pb.Pcm:
    return pb.Pcm(sample_rate=rate, format=fmt, data=data)  # type: ignore[arg-type]


def _bad_pcm(rng: np.random.Generator) -> tuple[pb.Pcm, str]:
    """PCM with exactly one thing wrong, and the words its error message must contain."""
    case = int(rng.integers(5))
    if case == 0:
        odd = 2 * int(rng.integers(1, 2000)) + 1
        return _pcm(bytes(odd)), f"{odd} bytes is not a whole number of s16le samples"
    if case == 1:
        poison = float(rng.choice([np.nan, np.inf, -np.inf]))
        data = _f32((int(rng.integers(1, 800)),), rng, poison)
        return _pcm(data, fmt=pb.PCM_FORMAT_F32LE), "f32le samples contain NaN or Inf"
    if case == 2:
        size = 2 * int(rng.integers(PCM_LIMIT // 2 + 1, PCM_LIMIT))
        return _pcm(bytes(size)), f"{size} bytes is over the limit of {PCM_LIMIT} bytes"
    if case == 3:
        rate = int(rng.choice([int(rng.integers(0, 8000)), int(rng.integers(192_001, 2**31))]))
        return _pcm(bytes(640), rate), f"sample_rate {rate} is outside 8000..192000"
    fmt = int(rng.integers(3, 1000))
    return _pcm(bytes(640), fmt=fmt), f"pcm: unknown format {fmt}"


def _malformed_generate(rng: np.random.Generator) -> Case:
    """A Generate request with exactly one thing wrong (cheap: rejected before inference)."""
    good = features_message(rng.normal(size=(4, 512)).astype("<f4"))
    poison = float(rng.choice([np.nan, np.inf, -np.inf]))
    name = f"model-{rng.integers(1000)}"
    index = int(rng.integers(4, 2**32))
    quality = int(rng.integers(101, 10_000))
    encoding = int(rng.integers(4, 100))  # 0-3 are JPEG (default), JPEG, raw and H.264
    pcm, pcm_error = _bad_pcm(rng)
    cases: list[Callable[[], Case]] = [
        lambda: (
            pb.GenerateRequest(model=name, frame_indices=[0], features=good),
            f"unknown model {name!r}",
        ),
        lambda: (pb.GenerateRequest(frame_indices=[0]), "no audio: set features, windows or pcm"),
        lambda: (
            pb.GenerateRequest(
                frame_indices=[0], features=pb.AudioFeatures(data=_bad_feature_bytes(rng))
            ),
            "is not a whole number of 512-dim float32 vectors",
        ),
        lambda: (
            pb.GenerateRequest(
                frame_indices=[0], features=pb.AudioFeatures(data=_f32((2, 512), rng, poison))
            ),
            "audio features contains NaN or Inf",
        ),
        lambda: (
            pb.GenerateRequest(frame_indices=[index], features=good),
            f"frame index {index} is out of range: 4 feature vectors were sent",
        ),
        lambda: (pb.GenerateRequest(frame_indices=[], features=good), "no frame_indices given"),
        lambda: (
            pb.GenerateRequest(
                frame_indices=list(range(9)), features=pb.AudioFeatures(data=_f32((9, 512), rng))
            ),
            "9 frames requested; at most 8 per request",
        ),
        lambda: (
            pb.GenerateRequest(
                frame_indices=[0], windows=pb.AudioWindows(data=_f32((2, 32, 16, 16), rng))
            ),
            "2 audio windows for 1 frame_indices",
        ),
        lambda: (
            pb.GenerateRequest(
                frame_indices=[0], features=good, output=pb.OutputOptions(jpeg_quality=quality)
            ),
            f"jpeg_quality {quality} is outside 1..100",
        ),
        lambda: (
            pb.GenerateRequest(
                frame_indices=[0],
                features=good,
                output=pb.OutputOptions(encoding=encoding),  # type: ignore[arg-type]
            ),
            f"unknown encoding {encoding}",
        ),
        lambda: (pb.GenerateRequest(frame_indices=[0], pcm=pcm), pcm_error),
        lambda: (
            pb.GenerateRequest(frame_indices=[index], pcm=_pcm(bytes(2 * 1600))),
            f"frame index {index} is out of range: 3 video frames are in 1600 samples at 16000 Hz",
        ),
    ]
    return cases[int(rng.integers(len(cases)))]()


def _malformed_infer(rng: np.random.Generator) -> tuple[triton.service_pb2.ModelInferRequest, str]:
    """A ModelInfer request with one thing wrong; the bad tensor comes first (no image sent)."""
    request = triton.service_pb2.ModelInferRequest(model_name="lipsync")
    audio_shape = [1, 32, 16, 16]
    case = int(rng.integers(11))
    expected = "missing input 'input'"
    if case == 0:
        request.model_name = str(rng.choice(["", "other", "lipsync2"]))
        expected = (
            f"unknown model {request.model_name!r}" if request.model_name else "no model name"
        )
    elif case == 1:
        request.model_version = "7"
        expected = "model 'lipsync' has no version '7'"
    if case in (0, 1, 2):  # only the audio: the image is missing
        request.inputs.add(name="audio", datatype="FP32", shape=audio_shape)
        request.raw_input_contents.append(_f32((1, 32, 16, 16), rng))
    elif case == 3:
        extra = f"extra{rng.integers(9)}"
        request.inputs.add(name=extra, datatype="FP32", shape=[1])
        request.raw_input_contents.append(b"\x00" * 4)
        expected = f"unexpected input {extra!r}"
    elif case == 4:
        datatype = str(rng.choice(["FP16", "INT8", "BYTES", "fp32"]))
        request.inputs.add(name="audio", datatype=datatype, shape=audio_shape)
        request.raw_input_contents.append(_f32((1, 32, 16, 16), rng))
        expected = f"input 'audio' has datatype {datatype!r}, expected FP32"
    elif case == 5:
        shape = [int(d) for d in rng.integers(1, 40, size=int(rng.integers(1, 6)))]
        request.inputs.add(name="audio", datatype="FP32", shape=shape)
        request.raw_input_contents.append(b"\x00" * 16)
        expected = f"input 'audio' has shape {shape}, expected [B,32,16,16]"
    elif case == 6:
        size = int(rng.integers(0, 32768))
        request.inputs.add(name="audio", datatype="FP32", shape=audio_shape)
        request.raw_input_contents.append(bytes(size))
        expected = f"input 'audio': {size} bytes of raw data, expected 32768"
    elif case == 7:
        request.inputs.add(name="audio", datatype="FP32", shape=audio_shape)
        request.raw_input_contents.append(
            _f32((1, 32, 16, 16), rng, float(rng.choice([np.nan, np.inf])))
        )
        expected = "input 'audio' contains NaN or Inf"
    elif case == 8:
        batch = int(rng.integers(3, 1000))
        request.inputs.add(name="audio", datatype="FP32", shape=[batch, 32, 16, 16])
        request.raw_input_contents.append(b"")
        expected = f"batch of {batch} exceeds max_batch_size {MAX_BATCH}"
    elif case == 9:
        request.inputs.add(name="audio", datatype="FP32", shape=audio_shape)
        request.inputs.add(name="input", datatype="FP32", shape=[1, 6, 320, 320])
        request.raw_input_contents.append(_f32((1, 32, 16, 16), rng))  # one buffer, two inputs
        expected = "1 raw_input_contents for 2 inputs"
    elif case == 10:
        request.inputs.add(name="audio", datatype="FP32", shape=audio_shape)
        request.inputs.add(name="audio", datatype="FP32", shape=audio_shape)
        request.raw_input_contents.extend([_f32((1, 32, 16, 16), rng)] * 2)
        expected = "input 'audio' given twice"
    return request, expected


def _malformed_stream(rng: np.random.Generator) -> tuple[list[pb.StreamGenerateRequest], str]:
    features = pb.StreamGenerateRequest(
        features=features_message(rng.normal(size=(1, 512)).astype("<f4"))
    )
    speech = pb.StreamGenerateRequest(pcm=_pcm(bytes(640)))
    rate = int(rng.choice([8000, 22050, 44100, 48000]))
    pcm, pcm_error = _bad_pcm(rng)
    pcm_first = bool(rng.integers(2))
    mixed = [speech, features] if pcm_first else [features, speech]
    cases: list[tuple[list[pb.StreamGenerateRequest], str]] = [
        (
            [features, pb.StreamGenerateRequest(config=pb.StreamConfig())],
            "config is only allowed in the first message",
        ),
        (
            [pb.StreamGenerateRequest(windows=pb.AudioWindows(data=b"\x00" * 12))],
            "audio windows: 12 bytes is not a whole number of windows",
        ),
        (
            [pb.StreamGenerateRequest(config=pb.StreamConfig(model="nobody"))],
            "unknown model 'nobody'",
        ),
        ([pb.StreamGenerateRequest()], "message carries neither config, audio nor keyframe"),
        (mixed, "got features after pcm" if pcm_first else "got pcm after features"),
        (
            [speech, pb.StreamGenerateRequest(pcm=_pcm(bytes(640), rate))],
            f"sample_rate changed from 16000 to {rate}",
        ),
        ([pb.StreamGenerateRequest(pcm=pcm)], pcm_error),
    ]
    return cases[int(rng.integers(len(cases)))]


def test_fuzzed_malformed_requests_get_invalid_argument_naming_the_violation(
    server: ServerProcess,
) -> None:
    rng = np.random.default_rng(20240601)
    from tritonclient.grpc import service_pb2_grpc as triton_grpc

    async def fuzz() -> dict[str, int]:
        codes: dict[str, int] = {}
        unexpected: list[str] = []
        limit = 64 * 1024 * 1024
        options = [
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
        ]
        async with grpc.aio.insecure_channel(server.target, options=options) as channel:
            lipsync = LipSyncStub(channel)
            inference = triton_grpc.GRPCInferenceServiceStub(channel)
            gate = asyncio.Semaphore(48)

            async def send(kind: int, seed: int) -> None:
                local = np.random.default_rng(seed)
                expected = ""
                async with gate:
                    try:
                        if kind == 0:
                            request, expected = _malformed_generate(local)
                            await lipsync.Generate(request, timeout=60)
                        elif kind == 1:
                            infer, expected = _malformed_infer(local)
                            await inference.ModelInfer(infer, timeout=60)
                        elif kind == 2:
                            expected = f"unknown model 'm{seed}'"
                            metadata = triton.service_pb2.ModelMetadataRequest(name=f"m{seed}")
                            await inference.ModelMetadata(metadata, timeout=60)
                        elif kind == 3:
                            messages, expected = _malformed_stream(local)

                            async def requests() -> AsyncIterator[pb.StreamGenerateRequest]:
                                for message in messages:
                                    yield message

                            async for _ in lipsync.StreamGenerate(requests(), timeout=60):
                                pass
                        else:  # oversized: above max_message_bytes (16 MiB), below twice that
                            size = 17 * 1024 * 1024
                            expected = "exceeds the 16777216-byte limit"
                            await lipsync.Generate(
                                pb.GenerateRequest(
                                    frame_indices=[0], features=pb.AudioFeatures(data=bytes(size))
                                ),
                                timeout=60,
                            )
                        unexpected.append(f"kind {kind} seed {seed}: accepted")
                    except grpc.aio.AioRpcError as error:
                        code = error.code()
                        codes[code.name] = codes.get(code.name, 0) + 1
                        details = error.details() or ""
                        if code != grpc.StatusCode.INVALID_ARGUMENT or expected not in details:
                            unexpected.append(
                                f"kind {kind} seed {seed}: {code.name} {details!r}, "
                                f"expected INVALID_ARGUMENT {expected!r}"
                            )

            kinds = rng.choice([0, 1, 2, 3], size=FUZZ_REQUESTS, p=[0.45, 0.35, 0.05, 0.15])
            kinds[:: FUZZ_REQUESTS // 5] = 4  # five oversized messages
            seeds = rng.integers(0, 2**31, size=FUZZ_REQUESTS)
            await asyncio.gather(*(send(int(k), int(s)) for k, s in zip(kinds, seeds, strict=True)))
        assert not unexpected, unexpected[:10]
        return codes

    codes = asyncio.run(fuzz())
    assert codes == {"INVALID_ARGUMENT": FUZZ_REQUESTS}
    assert server.process.poll() is None  # still running: 0 crashes
    features = synthetic_features(2, 512, seed=7)
    response = asyncio.run(
        _generate(
            server.target,
            pb.GenerateRequest(frame_indices=[1], features=features_message(features)),
        )
    )
    assert len(response.frames) == 1
    assert response.frames[0].data[:2] == b"\xff\xd8"
