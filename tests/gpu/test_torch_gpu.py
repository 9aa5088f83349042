"""The PyTorch backends on a CUDA device: eager fp16 with pinned double-buffered uploads and CUDA
graphs, torch.compile, and an AOTInductor package compiled for the GPU it runs on, each against
the CPU fp32 program. Skipped where torch has no CUDA device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipsync_contract.enginekey import BatchProfile
from lipsync_contract.modelio import preset
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.backends.torch_backend import TorchBackend
from lipsync_core.export_torch import export_program
from lipsync_core.samples import random_inputs
from lipsync_engine_builder.targets.base import BuildContext
from lipsync_engine_builder.targets.torch import build_aoti_package, build_torch_program

pytestmark = pytest.mark.gpu

torch: Any = pytest.importorskip("torch", reason="the PyTorch backends need the [torch] extra")
if not torch.cuda.is_available():
    pytest.skip("torch has no CUDA device here", allow_module_level=True)

CONTRACT = preset("unet328-ave")


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lipsync_core.reference.unet328_torch import Model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("torch") / "unet328.pt2"
    export_program(torch, Model().eval(), CONTRACT, path)
    return path


def _context(program: Path, workdir: Path, precision: str) -> BuildContext:
    return BuildContext(
        model=program, workdir=workdir, contract=CONTRACT,
        batch=BatchProfile(min=1, opt=4, max=8), precision=precision,  # type: ignore[arg-type]
    )  # fmt: skip


def _against_cpu(program: Path, artifact: Path, config: BackendConfig, atol: float) -> None:
    cpu = load_backend(program, CONTRACT, BackendConfig(kind="torch", device="cpu", max_batch=8))
    gpu = load_backend(artifact, CONTRACT, config)
    assert gpu.describe().device == "cuda:0"
    rng = np.random.default_rng(4)
    for batch in (1, 8, 3, 1, 8):  # repeated sizes with fresh data through both buffer sets
        inputs = random_inputs(CONTRACT, batch, rng)
        np.testing.assert_allclose(gpu.infer(inputs), cpu.infer(inputs), atol=atol)
    gpu.close()
    cpu.close()


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_eager_fp16_on_cuda(program: Path, tmp_path: Path, cuda_graphs: bool) -> None:
    half = build_torch_program(_context(program, tmp_path, "fp16")).path
    config = BackendConfig(kind="torch", device="cuda", max_batch=8, cuda_graphs=cuda_graphs)
    _against_cpu(program, half, config, atol=2e-2)


def test_staging_buffers_are_pinned_and_skip_the_host_copy(program: Path) -> None:
    backend = load_backend(program, CONTRACT, BackendConfig(kind="torch", device="cuda"))
    assert isinstance(backend, TorchBackend)
    staged = backend.staging(2)
    reference = random_inputs(CONTRACT, 2, np.random.default_rng(1))
    for name, array in staged.items():
        array[...] = reference[name]
    np.testing.assert_allclose(backend.infer(staged), backend.infer(reference), atol=1e-5)
    backend.close()


def test_torch_compile_on_cuda(program: Path) -> None:
    config = BackendConfig(kind="torch", device="cuda", torch_compile=True, max_batch=8)
    _against_cpu(program, program, config, atol=1e-3)


def test_aoti_package_for_this_gpu(program: Path, tmp_path: Path) -> None:
    config = BackendConfig(kind="torch-aoti", device="cuda", max_batch=8)
    capability = "{}.{}".format(*torch.cuda.get_device_capability(0))
    built = build_aoti_package(_context(program, tmp_path, "fp16"), config, capability)
    assert built.session_options["compute_capability"] == capability
    _against_cpu(program, built.path, config, atol=2e-2)
