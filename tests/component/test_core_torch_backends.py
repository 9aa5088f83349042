"""The PyTorch path end to end on the CPU, from a SyncTalk_2D-style ``unet_328:Model`` checkpoint:
``lipsync model export`` to a single-file ONNX and to a torch.export program, the torch backends
against ONNX Runtime on the same weights, and a ``torch-aoti`` engine built by ``lipsync build``
(published with its manifest, accuracy-gated, a cache hit the second time) served by
``lipsync serve --backend torch-aoti``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from lipsync_contract.enginekey import BatchProfile
from lipsync_contract.modelio import preset
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.cli_model import model as model_cli
from lipsync_core.contract_checks import check_onnx
from lipsync_core.samples import random_inputs
from lipsync_engine_builder.targets.base import BuildContext
from lipsync_engine_builder.targets.torch import build_torch_program

pytestmark = pytest.mark.component

torch: Any = pytest.importorskip(
    "torch", reason="torch is an optional extra ([torch]); install it to run the PyTorch tests"
)

SYNCTALK = Path(__file__).resolve().parents[1] / "fixtures" / "synctalk"
CONTRACT = preset("unet328-ave")
LIPSYNC = str(Path(sys.executable).parent / "lipsync")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A SyncTalk-layout checkpoint (DataParallel ``module.`` keys, wrapped) exported twice."""
    root = tmp_path_factory.mktemp("synctalk")
    sys.path.insert(0, str(SYNCTALK))
    try:
        from unet_328 import Model  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(SYNCTALK))
    torch.manual_seed(0)
    weights = {f"module.{key}": value for key, value in Model(6, "ave").state_dict().items()}
    assert "module.inc.inconv.0.conv.0.weight" in weights
    assert "module.audio_model.conv3.weight" in weights
    checkpoint = root / "checkpoint.pth.tar"
    torch.save({"state_dict": weights, "epoch": 10}, str(checkpoint))
    paths = {}
    for suffix in ("onnx", "pt2"):
        output = root / f"unet_328.{suffix}"
        arguments = ["export", "--module", "unet_328:Model", "--path", str(SYNCTALK),
                     "--checkpoint", str(checkpoint), "--init", "n_channels=6,mode=ave",
                     "-o", str(output)]  # fmt: skip
        result = CliRunner().invoke(model_cli, arguments)
        assert result.exit_code == 0, result.output
        paths[suffix] = output
    return paths


def test_the_onnx_export_is_one_self_contained_file(exported: dict[str, Path]) -> None:
    path = exported["onnx"]
    assert sorted(p.name for p in path.parent.glob("unet_328.onnx*")) == ["unet_328.onnx"]
    model = onnx.load(str(path), load_external_data=False)
    assert all(i.data_location != onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    check_onnx(CONTRACT, path)


def _max_error(artifact: Path, config: BackendConfig, batch: int, expected: np.ndarray) -> float:
    backend = load_backend(artifact, CONTRACT, config)
    try:
        inputs = random_inputs(CONTRACT, batch, np.random.default_rng(7))
        return float(np.max(np.abs(backend.infer(inputs) - expected)))
    finally:
        backend.close()


def _ort_output(exported: dict[str, Path], batch: int) -> np.ndarray:
    ort = load_backend(exported["onnx"], CONTRACT, BackendConfig(kind="onnxruntime-cpu"))
    return ort.infer(random_inputs(CONTRACT, batch, np.random.default_rng(7)))


@pytest.mark.parametrize("channels_last", [True, False])
def test_torch_eager_fp32_matches_onnx_runtime(
    exported: dict[str, Path], channels_last: bool
) -> None:
    config = BackendConfig(kind="torch", device="cpu", channels_last=channels_last, max_batch=3)
    backend = load_backend(exported["pt2"], CONTRACT, config)
    info = backend.describe()
    backend.close()
    assert (info.kind, info.provider, info.precision, info.device) == (
        "torch", "PyTorch eager", "fp32", "cpu",
    )  # fmt: skip
    assert _max_error(exported["pt2"], config, 3, _ort_output(exported, 3)) < 1e-4


def test_torch_eager_fp16_program_matches_onnx_runtime_within_half_precision(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    context = BuildContext(
        model=exported["pt2"], workdir=tmp_path, contract=CONTRACT,
        batch=BatchProfile(min=1, opt=2, max=2), precision="fp16",
    )  # fmt: skip
    half = build_torch_program(context).path
    config = BackendConfig(kind="torch", device="cpu", max_batch=2)
    backend = load_backend(half, CONTRACT, config)
    assert backend.describe().precision == "fp16"
    backend.close()
    assert _max_error(half, config, 2, _ort_output(exported, 2)) < 2e-2


def test_torch_compile_matches_onnx_runtime(exported: dict[str, Path]) -> None:
    config = BackendConfig(kind="torch", device="cpu", torch_compile=True, max_batch=1)
    assert _max_error(exported["pt2"], config, 1, _ort_output(exported, 1)) < 1e-4


def _build(program: Path, cache: Path) -> dict[str, Any]:
    done = subprocess.run(
        [LIPSYNC, "build", "--model", str(program), "--backend", "torch-aoti",
         "--cache", str(cache), "--batch-min", "1", "--batch-opt", "2", "--batch-max", "2",
         "--verify-samples", "2", "--measure-frames", "2", "--termination-log", ""],
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, result["reason"] + done.stderr[-2000:]
    return result


def test_torch_aoti_engine_is_built_gated_published_and_served(
    exported: dict[str, Path], small_avatar: Path, tmp_path: Path
) -> None:
    from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
    from lipsync_server.audio import synthetic_features
    from lipsync_server.client import LipSyncStub, stream_frames
    from lipsync_server.process import ServerProcess

    cache = tmp_path / "cache"
    first = _build(exported["pt2"], cache)
    assert (first["state"], first["cacheHit"]) == ("Ready", False)
    assert first["psnrDb"] >= 60.0  # the fp32 gate, against the program run eagerly
    artifact = Path(first["artifact"])
    assert artifact.suffix == ".pt2"
    manifest = json.loads((artifact.parent / "manifest.json").read_text())
    assert (manifest["backend"], manifest["precision"]) == ("torch-aoti", "fp32")
    assert manifest["runtime"] == f"torch {version('torch')}"  # in the key: a new torch rebuilds
    assert manifest["session_options"]["device"] == "cpu"
    assert _build(exported["pt2"], cache)["cacheHit"] is True

    features = synthetic_features(6, CONTRACT.audio_feature_dim, seed=3)

    async def scenario(target: str) -> tuple[Any, list[Any]]:
        import grpc

        async with grpc.aio.insecure_channel(target) as channel:
            stub = LipSyncStub(channel)
            info = await stub.GetInfo(pb.GetInfoRequest(), timeout=60)
            frames = [frame async for frame in stream_frames(stub, features, timeout=300)]
            return info, frames

    server = ServerProcess(
        artifact, small_avatar, tmp_path / "server.log",
        backend="torch-aoti", max_batch_size=2, startup_timeout=600,
    )  # fmt: skip
    with server:
        info, frames = asyncio.run(scenario(server.target))
    assert (info.backend, info.provider, info.precision) == (
        "torch-aoti", "PyTorch AOTInductor", "fp32",
    )  # fmt: skip
    assert [frame.index for frame in frames] == list(range(6))
    assert all(frame.data[:2] == b"\xff\xd8" for frame in frames)  # JPEG
