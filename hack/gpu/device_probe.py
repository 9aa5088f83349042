"""What the device offers around the model, measured before anything is compiled:

- ``nvidia-smi -q``: the video encoder/decoder and JPEG engines, the PCIe link (saved whole);
- copy bandwidth host->device and device->host from pinned and from pageable memory, for a
  batch-sized buffer (32 frames of float32 model input: 78.6 MB);
- JPEG encode frames/s of a 1280x720 avatar frame on the device (TorchCodec: nvJPEG on CUDA),
  alone and while the reference UNet-328 runs batches beside it on the same device.

On the CPU (the dry run) every section runs against host memory and the CPU encoder, so the
script cannot rot between GPU runs. Writes JSON and Markdown.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click
import torch
from torchcodec.encoders import JpegEncoder  # type: ignore[attr-defined]  # no __all__

from lipsync_contract.modelio import preset
from lipsync_core.reference.unet328_torch import Model
from lipsync_server.avatar.demo import write_demo_avatar
from lipsync_server.avatar.store import AvatarStore

CONTRACT = preset("unet328-ave")
SMI_KEYS = ("Product Name", "Encoder", "Decoder", "JPG", "JPEG", "OFA", "PCIe Generation",
            "Link Width", "Current", "Max")  # fmt: skip


def nvidia_smi(out_dir: Path) -> dict[str, Any]:
    try:
        done = subprocess.run(
            ["nvidia-smi", "-q"], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    (out_dir / "nvidia-smi-q.txt").write_text(done.stdout)
    lines = [line.strip() for line in done.stdout.splitlines()]
    wanted = [line for line in lines if line.split(":", 1)[0].strip().startswith(SMI_KEYS)]
    return {"available": True, "lines": wanted}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gb_per_s(copy: Any, nbytes: int, device: torch.device, seconds: float) -> float:
    copy()
    _sync(device)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        copy()
        count += 1
    _sync(device)
    return count * nbytes / (time.perf_counter() - started) / 1e9


def copy_bandwidth(device: torch.device, seconds: float) -> dict[str, Any]:
    shape = CONTRACT.image.batch_shape(32)
    on_device = torch.empty(shape, dtype=torch.float32, device=device)
    nbytes = on_device.numel() * on_device.element_size()
    hosts = {"pageable": torch.empty(shape, dtype=torch.float32)}
    if device.type == "cuda":
        hosts["pinned"] = torch.empty(shape, dtype=torch.float32, pin_memory=True)
    rows: dict[str, Any] = {"bytes": nbytes}
    for name, host in hosts.items():
        blocking = name == "pageable"
        rows[f"h2d_{name}_gb_s"] = _gb_per_s(
            lambda host=host, blocking=blocking: on_device.copy_(host, non_blocking=not blocking),
            nbytes, device, seconds,
        )  # fmt: skip
        rows[f"d2h_{name}_gb_s"] = _gb_per_s(
            lambda host=host, blocking=blocking: host.copy_(on_device, non_blocking=not blocking),
            nbytes, device, seconds,
        )  # fmt: skip
    if device.type != "cuda":
        rows["note"] = "no pinned memory without CUDA: host-to-host copies"
    return rows


def _avatar_frame(device: torch.device) -> torch.Tensor:
    with tempfile.TemporaryDirectory(prefix="lipsync-probe-") as scratch:
        write_demo_avatar(Path(scratch), frames=1)
        store = AvatarStore.load(Path(scratch))
    rgb = store.frames[0][..., ::-1].transpose(2, 0, 1).copy()
    return torch.from_numpy(rgb).to(device)


def _jpeg_rate(frame: torch.Tensor, seconds: float) -> float:
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        JpegEncoder(frame).to_tensor(quality=85).cpu()
        count += 1
    return count / (time.perf_counter() - started)


def jpeg_rates(device: torch.device, seconds: float, batch: int) -> dict[str, Any]:
    frame = _avatar_frame(device)
    alone = _jpeg_rate(frame, seconds)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = Model().eval().to(device=device, dtype=dtype)
    image = torch.rand(CONTRACT.image.batch_shape(batch), device=device, dtype=dtype)
    audio = torch.rand(CONTRACT.audio.batch_shape(batch), device=device, dtype=dtype)
    stop, frames_run = threading.Event(), [0]

    def unet() -> None:
        # The default stream, as in the server, whose model and post-processing share it.
        with torch.inference_mode():
            while not stop.is_set():
                model(image, audio)
                _sync(device)
                frames_run[0] += batch

    with torch.inference_mode():
        model(image, audio)  # warm-up
    runner = threading.Thread(target=unet, daemon=True)
    started = time.perf_counter()
    runner.start()
    try:
        beside = _jpeg_rate(frame, seconds)
    finally:
        stop.set()
        runner.join()
    unet_fps = frames_run[0] / (time.perf_counter() - started)
    return {
        "frame": list(frame.shape),
        "alone_fps": alone,
        "beside_unet_fps": beside,
        "unet_fps_meanwhile": unet_fps,
        "unet": f"reference UNet-328, batch {batch}, {str(dtype).removeprefix('torch.')}",
    }


def markdown(result: dict[str, Any]) -> str:
    copies, jpeg, smi = result["copies"], result["jpeg"], result["nvidia_smi"]
    lines = [f"Device: {result['device']}", "", "| copy | GB/s |", "| --- | ---: |"]
    lines += [
        f"| {key.removesuffix('_gb_s').replace('_', ' ')} | {value:.2f} |"
        for key, value in copies.items()
        if key.endswith("_gb_s")
    ]
    lines += [
        "",
        f"JPEG q85 of a {jpeg['frame'][2]}x{jpeg['frame'][1]} frame: {jpeg['alone_fps']:.0f} "
        f"frames/s alone, {jpeg['beside_unet_fps']:.0f} beside the {jpeg['unet']} "
        f"(which ran {jpeg['unet_fps_meanwhile']:.0f} frames/s meanwhile).",
        "",
    ]
    if smi["available"]:
        lines += ["nvidia-smi -q (engines, PCIe):", "", "```", *smi["lines"], "```"]
    else:
        lines += [f"nvidia-smi: not available ({smi['reason']})"]
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--device", default="cuda", show_default=True)
@click.option("--seconds", default=3.0, show_default=True, help="Per measurement.")
@click.option("--batch", default=16, show_default=True, help="UNet batch beside the JPEG run.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def main(device: str, seconds: float, batch: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    target = torch.device(device)
    result = {
        "device": torch.cuda.get_device_name(target) if target.type == "cuda" else "cpu",
        "nvidia_smi": nvidia_smi(out),
        "copies": copy_bandwidth(target, seconds),
        "jpeg": jpeg_rates(target, seconds, batch),
    }
    (out / "probe.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "probe.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
