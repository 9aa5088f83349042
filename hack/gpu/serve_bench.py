"""``lipsync serve --backend torch`` on one device, measured by ``lipsync bench run``: the
reference UNet-328 as a torch.export program, a demo avatar, composited JPEG frames at each
stream count. Writes the ``bench run`` result JSON to ``--out``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click


@click.command()
@click.option("--device", default="cuda", show_default=True)
@click.option("--streams", default="1,2,4,8,16,32,64", show_default=True)
@click.option("--seconds", default=8.0, show_default=True, help="Measured seconds per level.")
@click.option("--max-batch", default=32, show_default=True)
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(
    *, device: str, streams: str, seconds: float, max_batch: int, work: Path, out: Path
) -> None:
    import torch

    from lipsync_contract.modelio import preset
    from lipsync_core.export_torch import export_program
    from lipsync_core.reference.unet328_torch import Model
    from lipsync_server.avatar.demo import write_demo_avatar
    from lipsync_server.process import ServerProcess

    work.mkdir(parents=True, exist_ok=True)
    program, avatar = work / "unet328.pt2", work / "avatar"
    torch.manual_seed(0)
    export_program(torch, Model().eval(), preset("unet328-ave"), program)
    write_demo_avatar(avatar, frames=25)
    args = [
        "--backend",
        "torch",
        "--device",
        device.split(":", maxsplit=1)[0],
        "--max-batch-size",
        str(max_batch),
        "--log-level",
        "WARNING",
    ]
    with ServerProcess(program, avatar, work / "server.log", extra_args=args) as server:
        bench = [
            sys.executable,
            "-c",
            "from lipsync_contract.cli import main; main()",
            "bench",
            "run",
            "--target",
            server.target,
            "--streams",
            streams,
            "--duration",
            str(seconds),
            "--metrics",
            server.metrics_url,
            "--server-pid",
            str(server.pid),
            "--name",
            f"torch eager fp32 ({device})",
            "-o",
            str(out),
        ]
        done = subprocess.run(bench, check=False)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
