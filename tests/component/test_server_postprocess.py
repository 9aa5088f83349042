"""The two post-processing paths give the same frames: numpy (host) and torch (here on CPU; on
CUDA in production). The reference UNet-328's real outputs on the 1280x720 demo avatar. On the
torch backend the torch path keeps inputs and outputs on the device ("resident"): its frames and
raw tensors equal those of the host path.

Bounds: composited pixels differ by at most 1 level (OpenCV's fixed-point bilinear against
torch's float one, rounded); the PSNR between the frames the two paths' JPEGs decode to is at
least 40 dB, and each JPEG has the chroma subsampling asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as triton

from lipsync_contract.modelio import preset
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.export_torch import export_program
from lipsync_core.reference.unet328_torch import Model
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server.audio import build_windows, synthetic_features
from lipsync_server.avatar.demo import write_demo_avatar
from lipsync_server.avatar.store import AvatarStore, ping_pong
from lipsync_server.client import LipSyncStub, features_message, stream_speech
from lipsync_server.compositor import JpegSubsampling, composite, decode, jpeg_subsampling
from lipsync_server.postprocess import NumpyPostprocessor
from lipsync_server.postprocess_torch import TorchPostprocessor
from lipsync_server.process import ServerProcess

pytestmark = pytest.mark.component

CONTRACT = preset("unet328-ave")
FRAMES = 4
MIN_PSNR_DB = 40.0


@pytest.fixture(scope="module")
def hd_store(tmp_path_factory: pytest.TempPathFactory) -> AvatarStore:
    root = tmp_path_factory.mktemp("avatar-hd")
    write_demo_avatar(root, frames=FRAMES)
    return AvatarStore.load(root)


@pytest.fixture(scope="module")
def faces(reference_model: Path, hd_store: AvatarStore) -> np.ndarray:
    """The reference model's outputs ``[FRAMES, 3, 320, 320]`` for each avatar frame."""
    backend = load_backend(reference_model, CONTRACT, BackendConfig(kind="onnxruntime-cpu"))
    indices = list(range(FRAMES))
    image = np.empty(CONTRACT.image.batch_shape(FRAMES), np.float32)
    hd_store.fill_image_batch(indices, image)
    windows = build_windows(synthetic_features(FRAMES, 512, seed=1), indices, CONTRACT)
    return np.asarray(backend.infer({"input": image, "audio": windows}))


def test_torch_composite_equals_numpy_within_one_level(
    hd_store: AvatarStore, faces: np.ndarray
) -> None:
    torch_path = TorchPostprocessor(hd_store, "cpu")
    for avatar_frame, face in enumerate(faces):
        expected = composite(hd_store, avatar_frame, face).astype(int)
        rgb = torch_path.composite(avatar_frame, face).numpy()
        got = rgb[::-1].transpose(1, 2, 0).astype(int)
        assert got.shape == expected.shape == (720, 1280, 3)
        assert np.abs(got - expected).max() <= 1
        # Raw frames from the torch path are the same pixels, BGR as the numpy path sends them.
        raw = torch_path(avatar_frame, face, "raw-bgr", 85, "444").data
        assert np.array_equal(decode(raw, "raw-bgr", 1280, 720), got.astype(np.uint8))


@pytest.mark.parametrize("subsampling", ["420", "444"])
def test_jpegs_of_both_paths_decode_to_the_same_frame(
    hd_store: AvatarStore, faces: np.ndarray, subsampling: JpegSubsampling
) -> None:
    numpy_path, torch_path = NumpyPostprocessor(hd_store), TorchPostprocessor(hd_store, "cpu")
    for avatar_frame, face in enumerate(faces):
        frame = composite(hd_store, avatar_frame, face)
        jpegs = [path(avatar_frame, face, "jpeg", 85, subsampling).data
                 for path in (numpy_path, torch_path)]  # fmt: skip
        assert [jpeg_subsampling(data) for data in jpegs] == [subsampling, subsampling]
        pictures = [decode(data, "jpeg", 0, 0) for data in jpegs]
        assert cv2.PSNR(pictures[0], pictures[1]) >= MIN_PSNR_DB
        for picture in pictures:
            assert picture.shape == frame.shape
            assert cv2.PSNR(picture, frame) >= 30.0


@pytest.fixture(scope="module")
def torch_server(
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
        postprocess="torch",
        max_batch_size=2,
        intra_op_threads=1,
    )
    with process:
        yield process
    assert process.process.returncode == 0, log.read_text()[-2000:]
    assert "compositing and JPEG on cpu (torch)" in log.read_text()


def test_a_server_on_the_torch_path_serves_the_numpy_paths_frames(
    torch_server: ServerProcess, reference_model: Path, small_avatar: Path
) -> None:
    indices = [0, 5]
    features = synthetic_features(6, 512, seed=2)

    async def generate(subsampling: pb.JpegSubsampling.ValueType) -> pb.GenerateResponse:
        request = pb.GenerateRequest(
            frame_indices=indices,
            features=features_message(features),
            output=pb.OutputOptions(encoding=pb.ENCODING_JPEG, jpeg_subsampling=subsampling),
        )
        async with grpc.aio.insecure_channel(torch_server.target) as channel:
            return await LipSyncStub(channel).Generate(request, timeout=120)

    store = AvatarStore.load(small_avatar)
    avatar_frames = [ping_pong(index, store.frame_count) for index in indices]
    image = np.empty(CONTRACT.image.batch_shape(2), np.float32)
    store.fill_image_batch(avatar_frames, image)
    backend = load_backend(reference_model, CONTRACT, BackendConfig(kind="onnxruntime-cpu"))
    output = backend.infer({"input": image, "audio": build_windows(features, indices, CONTRACT)})
    for subsampling in (pb.JPEG_SUBSAMPLING_420, pb.JPEG_SUBSAMPLING_444):
        response = asyncio.run(generate(subsampling))
        for frame, avatar_frame, face in zip(response.frames, avatar_frames, output, strict=True):
            expected = composite(store, avatar_frame, face)
            assert cv2.PSNR(decode(frame.data, "jpeg", 0, 0), expected) >= 30.0


def test_silent_frames_on_the_torch_path_come_from_the_encoded_cache(
    torch_server: ServerProcess,
) -> None:
    async def collect() -> list[pb.Frame]:
        async with grpc.aio.insecure_channel(torch_server.target) as channel:
            speech = stream_speech(LipSyncStub(channel), np.zeros(16000, np.float32), 16000)
            return [frame async for frame in speech]

    frames = asyncio.run(collect())  # 1 s of silence: 25 frames over 4 avatar frames
    assert len(frames) == 25
    assert all(frame.silent for frame in frames)
    first: dict[int, bytes] = {}
    for frame in frames:
        if frame.avatar_frame in first:
            assert frame.data == first[frame.avatar_frame]
            assert frame.timings.encode_ms == frame.timings.postprocess_ms == 0
        else:
            first[frame.avatar_frame] = frame.data
    assert sorted(first) == [0, 1, 2, 3]


@pytest.fixture(scope="module")
def reference_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference UNet-328 in PyTorch (seed 0) as a torch.export program."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("program") / "unet328.pt2"
    export_program(torch, Model().eval(), CONTRACT, path)
    return path


@pytest.fixture(scope="module")
def torch_servers(
    reference_program: Path,
    reference_encoder: Path,
    small_avatar: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, ServerProcess]]:
    """The same program served twice on the torch backend: inputs, outputs and post-processing
    on the device ("resident"), and host arrays with numpy post-processing ("host")."""
    logs = tmp_path_factory.mktemp("logs")
    servers = {
        name: ServerProcess(
            reference_program,
            small_avatar,
            logs / f"{name}.log",
            audio_encoder=reference_encoder,
            backend="torch",
            device="cpu",
            postprocess=postprocess,
            max_batch_size=2,
        )
        for name, postprocess in (("resident", "torch"), ("host", "numpy"))
    }
    with servers["resident"], servers["host"]:
        yield servers
    text = (logs / "resident.log").read_text()
    assert "model inputs and outputs stay on cpu" in text
    assert "stay on" not in (logs / "host.log").read_text()


def test_the_resident_path_serves_the_host_paths_frames_and_tensors(
    torch_servers: dict[str, ServerProcess],
) -> None:
    indices, features = [0, 3, 5], synthetic_features(6, 512, seed=4)
    request = pb.GenerateRequest(
        frame_indices=indices,
        features=features_message(features),
        output=pb.OutputOptions(encoding=pb.ENCODING_RAW_BGR),
    )

    async def generate(server: ServerProcess) -> list[np.ndarray]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            response = await LipSyncStub(channel).Generate(request, timeout=120)
        return [decode(f.data, "raw-bgr", f.width, f.height).astype(int) for f in response.frames]

    resident, host = (asyncio.run(generate(torch_servers[name])) for name in ("resident", "host"))
    for got, expected in zip(resident, host, strict=True):
        assert np.abs(got - expected).max() <= 2  # the compositing bound, plus float rounding

    rng = np.random.default_rng(6)
    image = rng.random((2, 6, 320, 320), dtype=np.float32)
    audio = rng.normal(size=(2, 32, 16, 16)).astype(np.float32)
    served = []
    for name in ("resident", "host"):
        client = triton.InferenceServerClient(torch_servers[name].target)
        inputs = [triton.InferInput("input", list(image.shape), "FP32"),
                  triton.InferInput("audio", list(audio.shape), "FP32")]  # fmt: skip
        inputs[0].set_data_from_numpy(image)
        inputs[1].set_data_from_numpy(audio)
        result = client.infer("lipsync", inputs, outputs=[triton.InferRequestedOutput("output")])
        served.append(result.as_numpy("output"))
        client.close()
    assert served[0].shape == (2, 3, 320, 320)
    np.testing.assert_allclose(served[0], served[1], rtol=0, atol=1e-5)


def test_silence_on_the_resident_path_is_the_host_paths_closed_mouth(
    torch_servers: dict[str, ServerProcess],
) -> None:
    async def silence(server: ServerProcess) -> list[pb.Frame]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            speech = stream_speech(
                LipSyncStub(channel),
                np.zeros(8000, np.float32),
                16000,
                encoding=pb.ENCODING_RAW_BGR,
            )
            return [frame async for frame in speech]

    resident, host = (asyncio.run(silence(torch_servers[name])) for name in ("resident", "host"))
    assert len(resident) == len(host) > 0
    for got, expected in zip(resident, host, strict=True):
        assert got.silent
        assert expected.silent
        pixels = [decode(f.data, "raw-bgr", f.width, f.height).astype(int) for f in (got, expected)]
        assert np.abs(pixels[0] - pixels[1]).max() <= 2
