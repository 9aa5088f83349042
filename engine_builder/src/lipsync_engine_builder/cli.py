"""``lipsync build`` (also the build Job's entry point) and ``lipsync cache ls|show|gc``."""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from lipsync_contract.errors import LipSyncError
from lipsync_contract.result import BuildResult, write_termination_log
from lipsync_engine_builder.errors import EXIT_BAD_INPUT

if TYPE_CHECKING:
    from lipsync_contract.request import BuildRequest

_cache_option = click.option(
    "--cache", "cache_root", required=True, envvar="LIPSYNC_CACHE", show_envvar=True,
    help="Cache root: a path or an fsspec URL (s3://bucket/prefix).",
)  # fmt: skip


def validation_reason(exc: ValidationError) -> str:
    """One line from pydantic's first error: ``field: message``."""
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"]) or "request"
    return f"invalid {location.replace('_', '-')}: {error['msg']}"


def request_from_params(params: dict[str, Any]) -> BuildRequest:
    """The request for ``lipsync build``'s parsed parameters (raises pydantic's ValidationError)."""
    from lipsync_contract.request import BuildRequest

    flat = {name: value for name, value in params.items() if name != "cache_root"}
    return BuildRequest.from_flat({**flat, "cache": params["cache_root"]})


def _use_progress_for_logs(progress: Any) -> None:
    from lipsync_engine_builder.progress import LogToProgress

    root = logging.getLogger()
    root.handlers = [LogToProgress(progress)]


@click.command()
@click.option("--model", required=True, help="Model URI: path, file://, https://, s3://, ...")
@click.option("--sha256", default="", help="Pinned model sha256 (hex); checked after download.")
@click.option("--io", default="unet328-ave", show_default=True, help="Model I/O contract preset.")
@click.option(
    "--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True
)
@click.option(
    "--backend",
    default="onnxruntime-cpu",
    show_default=True,
    type=click.Choice(
        ["onnxruntime-cpu", "onnxruntime-cuda", "tensorrt-rtx", "tensorrt", "torch", "torch-aoti"]
    ),
)
@click.option("--runtime", default="", help="Runtime id in the key [default: installed library].")
@click.option("--gpu-product", default="cpu", show_default=True, help="nvidia.com/gpu.product.")
@click.option("--compute-capability", default="", help="e.g. 9.0 (empty on CPU).")
@click.option("--batch-min", default=1, show_default=True, type=int)
@click.option("--batch-opt", default=4, show_default=True, type=int)
@click.option("--batch-max", default=8, show_default=True, type=int)
@click.option("--calibration", default="", help="Calibration data URI: .npz file or directory.")
@click.option("--calibration-sha256", default="", help="Pinned digest of the calibration data.")
@click.option("--calibration-samples", default=16, show_default=True, type=int)
@click.option(
    "--min-psnr",
    type=float,
    default=None,
    help="Accuracy gate in dB [default: 60 fp32, 40 fp16, 30 int8].",
)
@_cache_option
@click.option(
    "--termination-log",
    default="",
    help="Job result path [default: /dev/termination-log when writable].",
)
@click.option("--allow-random-calibration", is_flag=True, help="Calibrate int8 on random data.")
@click.option("--verify-samples", default=4, show_default=True, type=int)
@click.option("--measure-frames", default=8, show_default=True, type=int)
@click.option("--workspace-mib", default=4096, show_default=True, type=int)
@click.option("--optimization-level", default=3, show_default=True, type=int)
@click.option(
    "--audio-encoder", default="", help="Audio encoder model URI, built beside the model."
)
@click.option("--audio-encoder-sha256", default="", help="Pinned audio encoder sha256 (hex).")
@click.option("--audio-encoder-io", default="ave", show_default=True, help="Encoder I/O preset.")
@click.option("--audio-encoder-batch-max", default=32, show_default=True, type=int)
def build(**params: Any) -> None:
    """Build (or find in the cache) the engine for one model, precision, backend and GPU type.

    With --audio-encoder, the audio encoder is built too, as a second model with its own key.
    Exit code 0: published or cache hit; 1: build or accuracy gate failed; 2: bad input.
    The result, as JSON, goes to stdout and to the termination-message path.
    """
    try:
        request = request_from_params(params)
    except ValidationError as exc:
        result = BuildResult(
            state="Failed", reason=validation_reason(exc), exit_code=EXIT_BAD_INPUT
        )
    else:
        from lipsync_engine_builder.pair import execute_pair
        from lipsync_engine_builder.progress import progress_for

        progress = progress_for(sys.stderr)
        _use_progress_for_logs(progress)
        result = execute_pair(request, progress)
    write_termination_log(result, params["termination_log"])
    if result.state == "Failed":
        click.echo(f"error: {result.reason}", err=True)
    click.echo(result.to_json())
    sys.exit(result.exit_code)


@click.group()
def cache() -> None:
    """List, show and clean the engine cache."""


def _open_cache(cache_root: str) -> Any:
    from lipsync_engine_builder.cache import EngineCache

    return EngineCache(cache_root)


@cache.command("ls")
@_cache_option
@click.option("--json", "as_json", is_flag=True, help="One manifest per line, as JSON.")
def cache_ls(cache_root: str, as_json: bool) -> None:
    """List published engines, newest first."""
    try:
        manifests = _open_cache(cache_root).entries()
    except LipSyncError as exc:
        raise click.ClickException(str(exc)) from None
    for manifest in manifests:
        if as_json:
            click.echo(manifest.model_dump_json())
            continue
        click.echo(
            f"{manifest.key.removeprefix('sha256:')[:16]}  {manifest.backend:16} "
            f"{manifest.precision:5} {manifest.key_inputs.gpu_product:24} "
            f"{manifest.accuracy.psnr_db:6.1f} dB {manifest.best_frames_per_second():8.1f} fps "
            f"{manifest.artifact_bytes / 1e6:7.1f} MB  {manifest.created}"
        )


@cache.command("show")
@click.argument("key")
@_cache_option
def cache_show(key: str, cache_root: str) -> None:
    """Print the manifest of KEY (full key, hex, or a unique hex prefix)."""
    try:
        manifest = _open_cache(cache_root).resolve(key)
    except LipSyncError as exc:
        raise click.ClickException(str(exc)) from None
    if manifest is None:
        raise click.ClickException(f"no engine {key} in {cache_root}")
    click.echo(manifest.model_dump_json(indent=2))


@cache.command("gc")
@_cache_option
@click.option(
    "--grace-minutes",
    default=60,
    show_default=True,
    type=int,
    help="Leave leftovers younger than this (builds may still be writing them).",
)
@click.option(
    "--max-age-days", default=None, type=int, help="Also remove published engines older than this."
)
def cache_gc(cache_root: str, grace_minutes: int, max_age_days: int | None) -> None:
    """Remove incomplete entries and temporary files (and, optionally, old engines)."""
    try:
        removed = _open_cache(cache_root).gc(
            grace=timedelta(minutes=grace_minutes),
            max_age=None if max_age_days is None else timedelta(days=max_age_days),
        )
    except LipSyncError as exc:
        raise click.ClickException(str(exc)) from None
    for path in removed:
        click.echo(f"removed {path}")
    click.echo(f"{len(removed)} removed")
