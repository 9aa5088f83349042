"""``lipsync serve --backend torch`` on one device, measured by ``lipsync bench run``: the
reference UNet-328 as a torch.export program, a demo avatar, composited JPEG frames (post-processed
on the device unless ``--postprocess numpy``).

Closed loop over ``--streams`` (``serve.json``), then open loop at each of ``--open-rates``
frames/s over ``--open-streams`` streams (``serve-open-<rate>.json``): a closed loop of N streams
cannot show more than N / latency, an open loop shows whether the server keeps a given rate. The
server's batch-size histogram of each run goes to ``batches.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import click
from prometheus_client.parser import text_string_to_metric_families


def batch_counts(metrics_url: str) -> dict[int, float]:
    """Batches so far by size, from the server's cumulative ``lipsync_batch_size`` buckets."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    cumulative = {
        int(float(sample.labels["le"])): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "lipsync_batch_size"
        for sample in family.samples
        if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf"
    }
    sizes = sorted(cumulative)
    return {size: cumulative[size] - cumulative.get(size - 1, 0.0) for size in sizes}


@click.command()
@click.option("--device", default="cuda", show_default=True)
@click.option("--postprocess", type=click.Choice(["numpy", "torch"]), default="torch")
@click.option("--streams", default="1,2,4,8,16,32,64", show_default=True)
@click.option("--open-rates", default="1500,3000,3750", show_default=True)
@click.option("--open-streams", default=64, show_default=True)
@click.option("--seconds", default=8.0, show_default=True, help="Measured seconds per level.")
@click.option("--max-batch", default=32, show_default=True)
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def main(
    *,
    device: str,
    postprocess: str,
    streams: str,
    open_rates: str,
    open_streams: int,
    seconds: float,
    max_batch: int,
    work: Path,
    out: Path,
) -> None:
    import torch

    from lipsync_contract.modelio import preset
    from lipsync_core.export_torch import export_program
    from lipsync_core.reference.unet328_torch import Model
    from lipsync_server.avatar.demo import write_demo_avatar
    from lipsync_server.process import ServerProcess

    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    program, avatar = work / "unet328.pt2", work / "avatar"
    torch.manual_seed(0)
    export_program(torch, Model().eval(), preset("unet328-ave"), program)
    write_demo_avatar(avatar, frames=25)
    args = ["--backend", "torch", "--device", device.split(":", maxsplit=1)[0],
            "--postprocess", postprocess, "--max-batch-size", str(max_batch),
            "--log-level", "WARNING"]  # fmt: skip
    runs: list[tuple[str, list[str]]] = [("serve", ["--streams", streams])]
    runs += [
        (f"serve-open-{rate}", ["--mode", "open", "--rate", rate, "--streams", str(open_streams)])
        for rate in open_rates.split(",")
        if rate
    ]
    failed, batches = 0, {}
    with ServerProcess(program, avatar, work / "server.log", extra_args=args) as server:
        for name, load in runs:
            before = batch_counts(server.metrics_url)
            bench = [sys.executable, "-c", "from lipsync_contract.cli import main; main()",
                     "bench", "run", "--target", server.target, *load,
                     "--duration", str(seconds), "--metrics", server.metrics_url,
                     "--server-pid", str(server.pid),
                     "--name", f"torch eager fp32, {postprocess} post-processing ({device})",
                     "-o", str(out / f"{name}.json")]  # fmt: skip
            failed += subprocess.run(bench, check=False).returncode != 0
            after = batch_counts(server.metrics_url)
            batches[name] = {size: after[size] - before.get(size, 0.0) for size in after}
    (out / "batches.json").write_text(json.dumps(batches, indent=2) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
