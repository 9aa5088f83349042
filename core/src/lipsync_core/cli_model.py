"""``lipsync model``: write the reference model, check a model against a contract, run frames."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import numpy as np

from lipsync_contract.errors import LipSyncError
from lipsync_contract.modelio import ENCODER_PRESETS, PRESETS, any_preset, encoder_preset
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.contract_checks import check_onnx
from lipsync_core.reference.ave_encoder import build_ave_encoder, encoder_parameter_count
from lipsync_core.reference.unet328 import build_unet328, conv_flops_per_frame, parameter_count
from lipsync_core.samples import random_inputs

_preset_option = click.option(
    "--io",
    "io_preset",
    default="unet328-ave",
    show_default=True,
    type=click.Choice(sorted(PRESETS) + sorted(ENCODER_PRESETS)),
    help="Model I/O contract preset (a UNet's, or an audio encoder's: ave).",
)


@click.group()
def model() -> None:
    """Reference model, contract checks and quick runs."""


@model.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--seed", default=0, show_default=True, help="Weight seed; same seed, same bytes.")
@click.option(
    "--audio", "audio_encoder", default="ave", show_default=True, type=click.Choice(["ave"])
)
def reference(output: Path, seed: int, audio_encoder: str) -> None:
    """Write the reference UNet-328 as ONNX with seeded random weights."""
    onnx_model = build_unet328(seed=seed, audio_encoder="ave")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(onnx_model.SerializeToString())
    click.echo(
        f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB): UNet-328 {audio_encoder}, "
        f"seed {seed}, "
        f"{parameter_count(onnx_model) / 1e6:.2f} M parameters, "
        f"{conv_flops_per_frame(onnx_model) / 1e9:.2f} GFLOP/frame"
    )


@model.command("reference-audio")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--seed", default=0, show_default=True, help="Weight seed; same seed, same bytes.")
def reference_audio(output: Path, seed: int) -> None:
    """Write the reference "ave" audio encoder (mel window -> 512 features) as ONNX."""
    onnx_model = build_ave_encoder(seed=seed, contract=encoder_preset("ave"))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(onnx_model.SerializeToString())
    click.echo(
        f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB): ave audio encoder, seed {seed}, "
        f"{encoder_parameter_count(onnx_model) / 1e6:.2f} M parameters"
    )


@model.command()
@click.argument("path", type=click.Path(path_type=Path))
@_preset_option
def check(path: Path, io_preset: str) -> None:
    """Check an ONNX file against a model I/O contract."""
    try:
        check_onnx(any_preset(io_preset), path)
    except LipSyncError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"{path}: matches {io_preset}")


@model.command()
@click.argument("path", type=click.Path(path_type=Path))
@_preset_option
@click.option("--batch", "batches", multiple=True, type=int, default=(1, 8), show_default=True)
@click.option("--frames", default=16, show_default=True, help="Frames to run per batch size.")
@click.option("--threads", default=0, show_default=True, help="ORT intra-op threads (0: auto).")
def run(path: Path, io_preset: str, batches: tuple[int, ...], frames: int, threads: int) -> None:
    """Run frames through the model on the default backend; print shapes and ms/frame."""
    contract = any_preset(io_preset)
    try:
        check_onnx(contract, path)
        backend = load_backend(
            path, contract, BackendConfig(intra_op_threads=threads, max_batch=max(batches))
        )
    except LipSyncError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    info = backend.describe()
    click.echo(f"backend: {info.kind} ({info.provider}, {info.precision}) - {info.reason}")
    rng = np.random.default_rng(0)
    for batch in batches:
        inputs = random_inputs(contract, batch, rng)
        backend.infer(inputs)  # warm-up
        runs = max(1, frames // batch)
        start = time.perf_counter()
        for _ in range(runs):
            output = backend.infer(inputs)
        elapsed = time.perf_counter() - start
        shapes = " ".join(f"{k}{list(v.shape)}" for k, v in inputs.items())
        click.echo(
            f"batch {batch}: {shapes} -> output{list(output.shape)} "
            f"range [{output.min():.3f}, {output.max():.3f}], "
            f"{elapsed * 1000 / (runs * batch):.1f} ms/frame"
        )
    backend.close()


@model.command()
@click.option("--module", "target", required=True, help="MODULE:CLASS, e.g. unet_328:Model.")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="A state dict, bare or as {'state_dict': ...} (e.g. ckpt.pth.tar).",
)
@click.option("--init", "init_text", default="", help="Constructor kwargs: n_channels=6,mode=ave")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@_preset_option
@click.option(
    "--path",
    "search_path",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory to import the module from (default: the current directory).",
)
@click.option("--tolerance", default=1e-4, show_default=True, help="Max abs error ORT vs torch.")
def export(
    *,
    target: str,
    checkpoint: Path,
    init_text: str,
    output: Path,
    io_preset: str,
    search_path: Path | None,
    tolerance: float,
) -> None:
    """Export a PyTorch checkpoint to ONNX (one file, dynamic batch), or to a torch.export
    program when OUTPUT ends in .pt2 (for the PyTorch backends), verified. Needs [torch]."""
    from lipsync_core.export_torch import export_checkpoint, parse_init_kwargs

    try:
        report = export_checkpoint(
            target,
            checkpoint,
            output,
            any_preset(io_preset),
            init=parse_init_kwargs(init_text),
            search_path=search_path,
            tolerance=tolerance,
        )
    except LipSyncError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(
        f"wrote {report.path} ({report.path.stat().st_size / 1e6:.1f} MB): {target}, "
        f"{report.parameters / 1e6:.2f} M parameters, matches {io_preset}, "
        f"max abs error vs PyTorch {report.max_abs_error:.2e}, {report.seconds:.1f} s"
    )
