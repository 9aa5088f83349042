"""``lipsync serve``, ``lipsync avatar`` and ``lipsync demo``."""

from __future__ import annotations

import asyncio
import sys
import types
import typing
from pathlib import Path
from typing import Any

import click
import grpc
from pydantic import ValidationError

from lipsync_contract.errors import LipSyncError
from lipsync_server.channels import ChannelSecurity, security_options
from lipsync_server.config import ServerSettings, load_settings


def _settings_options(command: click.Command) -> click.Command:
    """One flag per ServerSettings field (``--max-batch-size``); unset flags leave the value to
    the environment, the config file or the default."""
    for name, field in reversed(list(ServerSettings.model_fields.items())):
        flag = "--" + name.replace("_", "-")
        annotation = field.annotation
        help_text = field.description or ""
        if annotation is bool:
            option = click.Option([f"{flag}/--no-{flag[2:]}", name], default=None, help=help_text)
        else:
            origin = typing.get_origin(annotation)
            kind: Any = str
            if annotation is int:
                kind = int
            elif annotation is float:
                kind = float
            elif annotation is Path:
                kind = click.Path(path_type=Path)
            elif origin is typing.Literal:
                kind = click.Choice([str(v) for v in typing.get_args(annotation)])
            elif origin in (tuple, types.UnionType):
                kind = str
            option = click.Option([flag, name], type=kind, default=None, help=help_text)
        command.params.insert(0, option)
    return command


@_settings_options
@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="LIPSYNC_CONFIG",
    help="YAML or JSON file of settings.",
)
def serve(config_file: Path | None, **flags: Any) -> None:
    """Serve a model and an avatar over gRPC (LipSync, KServe v2, health) with metrics."""
    import logging

    from lipsync_server.app import serve as run_server

    try:
        settings = load_settings(config_file, {k: v for k, v in flags.items() if v is not None})
    except (ValidationError, ValueError) as exc:
        click.echo(f"error: invalid settings: {exc}", err=True)
        sys.exit(2)
    logging.getLogger().setLevel(settings.log_level)
    try:
        asyncio.run(run_server(settings))
    except LipSyncError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@click.group()
def avatar() -> None:
    """Avatar packages."""


@avatar.command("demo")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--frames", default=100, show_default=True, type=click.IntRange(1))
@click.option("--width", default=1280, show_default=True, type=click.IntRange(64))
@click.option("--height", default=720, show_default=True, type=click.IntRange(64))
@click.option("--fps", default=25.0, show_default=True, type=click.FloatRange(min=1))
def avatar_demo(output: Path, frames: int, width: int, height: int, fps: float) -> None:
    """Draw a synthetic face-like avatar package (no download needed)."""
    from lipsync_server.avatar.demo import write_demo_avatar

    manifest = write_demo_avatar(output, frames, width, height, fps)
    click.echo(
        f"wrote {output}: {manifest.frame_count} frames of {manifest.width}x{manifest.height}"
    )


@avatar.command("calibration")
@click.argument("avatar_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="A .npz file, or a directory that gets calibration.npz.",
)
@click.option(
    "--features",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Audio features [frames, dim] as .npy [default: synthetic features, with a warning].",
)
@click.option("--samples", default=64, show_default=True, type=click.IntRange(1))
@click.option("--io", "io_preset", default="unet328-ave", show_default=True, help="I/O preset.")
def avatar_calibration(
    avatar_dir: Path, output: Path, features: Path | None, samples: int, io_preset: str
) -> None:
    """Int8 calibration samples (the builder's .npz format) from an avatar and audio features."""
    import numpy as np

    from lipsync_contract.modelio import preset
    from lipsync_server.avatar.calibration import write_avatar_calibration

    try:
        contract = preset(io_preset)
        if features is None:
            click.echo("warning: no --features: using synthetic audio features", err=True)
        clip = None if features is None else np.load(features)
        written, count = write_avatar_calibration(avatar_dir, output, contract, samples, clip)
    except (LipSyncError, OSError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"wrote {written}: {count} samples")


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out"),
    show_default=True,
    help="Output folder; the model and avatar are cached here.",
)
@click.option(
    "--audio",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Speech to lip-sync: a WAV (or FLAC, OGG) file [default: a sentence from eSpeak NG].",
)
@click.option(
    "--seconds",
    default=None,
    type=click.FloatRange(min=0.04),
    help="Stream at most this much of the speech.",
)
@click.option("--max-batch-size", default=4, show_default=True, type=click.IntRange(1))
@click.option("--port", default=0, show_default=True, help="gRPC port (0: a free one).")
@click.option(
    "--target",
    default=None,
    help="HOST:PORT of a running server (with --audio-encoder) to use instead of the demo's own.",
)
@security_options
def demo(
    *,
    out_dir: Path,
    audio: Path | None,
    seconds: float | None,
    max_batch_size: int,
    port: int,
    target: str | None,
    security: ChannelSecurity,
) -> None:
    """End to end: speech -> server (audio encoder + UNet) -> out/demo.mp4 with sound."""
    from lipsync_server.demo import run_demo

    if target is None and security != ChannelSecurity():
        raise click.UsageError("the TLS and token options are for a server named by --target")
    try:
        run_demo(
            out_dir,
            seconds=seconds,
            max_batch_size=max_batch_size,
            port=port,
            echo=click.echo,
            audio=audio,
            target=target,
            security=security,
        )
    except grpc.aio.AioRpcError as exc:
        click.echo(f"error: {target}: {exc.code().name}: {exc.details()}", err=True)
        sys.exit(1)
    except LipSyncError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
