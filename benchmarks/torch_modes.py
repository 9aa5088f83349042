"""The PyTorch backends of the reference UNet-328 by mode and batch size: eager fp32, eager fp16,
``torch.compile`` and an AOTInductor package, each timed as the model call on device-resident
inputs (CUDA events on a GPU, the wall clock on the CPU) and as the backend's whole ``infer``
(host arrays in and out). Writes JSON and a Markdown table; ``hack/gpu/device-run.sh`` runs it.

    uv run python benchmarks/torch_modes.py --device cpu --batches 1,2 --json o.json --markdown o.md
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import click
import numpy as np

from lipsync_contract.enginekey import BatchProfile
from lipsync_contract.kinds import BackendKind, Precision
from lipsync_contract.modelio import preset
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.backends.torch_backend import TorchBackend
from lipsync_core.export_torch import export_program
from lipsync_core.samples import random_inputs

log = logging.getLogger("torch_modes")
MODES = ("eager-fp32", "eager-fp16", "compile", "aoti")
CONTRACT = preset("unet328-ave")


@dataclass(frozen=True)
class Row:
    mode: str
    batch: int
    runs: int
    model_ms_per_frame: float  # the model call alone, inputs already on the device
    backend_ms_per_frame: float  # infer(): host arrays in, host array out

    @property
    def frames_per_second(self) -> float:
        return 1000.0 / self.model_ms_per_frame


def _median_ms(call: Callable[[], object], runs: int, torch: Any, device: str) -> float:
    """Median milliseconds of ``call`` after one untimed call; CUDA events on a GPU."""
    call()
    samples = []
    for _ in range(runs):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            samples.append(float(start.elapsed_time(end)))
        else:
            began = time.perf_counter()
            call()
            samples.append((time.perf_counter() - began) * 1000.0)
    return statistics.median(samples)


def _artifact(
    mode: str, program: Path, work: Path, device: str, top: int
) -> tuple[Path, BackendKind]:
    """The artifact and backend kind a mode runs: the program (eager, compile) or a package."""
    from lipsync_engine_builder.targets.base import BuildContext
    from lipsync_engine_builder.targets.torch import build_aoti_package, build_torch_program

    precision: Precision = "fp16" if mode == "eager-fp16" else "fp32"
    folder = work / mode
    folder.mkdir()
    context = BuildContext(
        model=program, workdir=folder, contract=CONTRACT,
        batch=BatchProfile(min=1, opt=top, max=top), precision=precision,
    )  # fmt: skip
    if mode == "aoti":
        config = BackendConfig(
            kind="torch-aoti", device=device.split(":", maxsplit=1)[0], max_batch=top
        )
        return build_aoti_package(context, config, "").path, "torch-aoti"
    return build_torch_program(context).path, "torch"


def time_mode(
    torch: Any, mode: str, program: Path, work: Path, *, device: str, batches: list[int], runs: int
) -> list[Row]:
    started = time.perf_counter()
    artifact, kind = _artifact(mode, program, work, device, max(batches))
    config = BackendConfig(
        kind=kind,
        device=device.split(":", maxsplit=1)[0],
        torch_compile=mode == "compile",
        max_batch=max(batches),
    )
    backend = load_backend(artifact, CONTRACT, config)
    assert isinstance(backend, TorchBackend)
    log.info("%s ready in %.1f s", mode, time.perf_counter() - started)
    rows = []
    rng = np.random.default_rng(0)
    for batch in batches:
        inputs = random_inputs(CONTRACT, batch, rng)
        resident = [torch.from_numpy(inputs[s.name]).to(device) for s in CONTRACT.inputs]
        model_ms = _median_ms(partial(backend.run_resident, resident), runs, torch, device)
        backend_ms = _median_ms(partial(backend.infer, inputs), runs, torch, device)
        row = Row(mode, batch, runs, model_ms / batch, backend_ms / batch)
        log.info("%s batch %d: %.2f ms/frame model, %.2f with host I/O", mode, batch,
                 row.model_ms_per_frame, row.backend_ms_per_frame)  # fmt: skip
        rows.append(row)
    backend.close()
    return rows


def markdown(rows: list[Row], header: dict[str, str]) -> str:
    lines = [f"{key}: {value}" for key, value in header.items()]
    lines += [
        "",
        "| mode | batch | model ms/frame | frames/s (model) | infer ms/frame (host I/O) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r.mode} | {r.batch} | {r.model_ms_per_frame:.2f} | {r.frames_per_second:.1f} | "
        f"{r.backend_ms_per_frame:.2f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--device", default="cuda", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--batches", "batch_list", default="1,8,32", show_default=True)
@click.option("--modes", "mode_list", default=",".join(MODES), show_default=True)
@click.option("--runs", default=20, show_default=True, help="Timed calls per batch size.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path))
def main(
    *, device: str, batch_list: str, mode_list: str, runs: int,
    json_path: Path | None, md_path: Path | None,
) -> None:  # fmt: skip
    """Time the PyTorch modes of the reference UNet-328 on one device."""
    import torch

    from lipsync_core.reference.unet328_torch import Model

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    batches = [int(item) for item in batch_list.split(",") if item.strip()]
    modes = [mode for mode in mode_list.split(",") if mode]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise click.BadParameter(f"unknown mode {unknown[0]!r}; modes: {', '.join(MODES)}")
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else (
        f"{platform.machine()} CPU"
    )  # fmt: skip
    header = {
        "Device": name,
        "torch": str(torch.__version__),
        "Timing": "CUDA events" if device.startswith("cuda") else "wall clock",
        "Command": "python benchmarks/torch_modes.py " + " ".join(sys.argv[1:]),
    }
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        torch.manual_seed(0)
        program = work / "unet328.pt2"
        export_program(torch, Model().eval(), CONTRACT, program)
        for mode in modes:
            rows += time_mode(torch, mode, program, work, device=device, batches=batches, runs=runs)
    document = {"header": header, "rows": [asdict(r) | {"fps": r.frames_per_second} for r in rows]}
    if json_path:
        json_path.write_text(json.dumps(document, indent=2) + "\n")
    text = markdown(rows, header)
    if md_path:
        md_path.write_text(text)
    click.echo(text)


if __name__ == "__main__":
    main()
