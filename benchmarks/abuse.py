"""One client abusing a ``lipsync serve`` process while another watches a 25 fps stream.

The server runs mutual TLS, so each client is its certificate's subject and the per-client
call quota (``max_calls_per_client``, default 256) applies to each. The victim streams audio
features paced at 25 frames/s (one frame's worth every 40 ms) over ``StreamGenerate`` and records
when each frame arrives; the result is the gap between consecutive frames (p50, p99, max).

Scenarios, each for ``--seconds``:

1. baseline: the victim alone;
2. idle streams: the attacker opens ``--idle-streams`` streams (over 100 connections: a
   connection carries at most 100) that send their config and then nothing;
3. ModelInfer flood: the attacker sends 14.7 MB ModelInfer requests (a batch of 6 fp32 images)
   back to back, ``--flood-concurrency`` at a time.

Prints a Markdown fragment (machine, command, load average, table).

    uv run python benchmarks/abuse.py --seconds 20
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import grpc
import numpy as np
import onnx
from lipsync_bench.machine import cpu_model
from onnx import helper, numpy_helper

from lipsync_contract.modelio import PRESETS
from lipsync_core.reference.graph import batch_tensor, finish_model
from lipsync_core.reference.unet328 import build_unet328
from lipsync_server._generated.inference import grpc_service_pb2 as inference_pb2
from lipsync_server._generated.inference import grpc_service_pb2_grpc as inference_pb2_grpc
from lipsync_server._generated.lipsync.v1 import lipsync_pb2 as pb
from lipsync_server.audio import synthetic_features
from lipsync_server.avatar.demo import write_demo_avatar
from lipsync_server.channels import ChannelSecurity, open_channel
from lipsync_server.client import LipSyncStub, features_message
from lipsync_server.process import ServerProcess
from lipsync_testbed.pki import CertificateAuthority

FPS = 25.0
CONNECTION_STREAMS = 100  # gRPC's default max_concurrent_streams per connection


@dataclass(frozen=True)
class Gaps:
    frames: int
    p50_ms: float
    p99_ms: float
    max_ms: float


async def victim_stream(target: str, security: ChannelSecurity, seconds: float) -> Gaps:
    """A 25 fps stream of features, paced in real time; the gaps between its frames."""
    frames = int(seconds * FPS)
    features = synthetic_features(frames, 512, seed=7)
    arrivals: list[float] = []

    async def requests() -> AsyncIterator[pb.StreamGenerateRequest]:
        yield pb.StreamGenerateRequest(config=pb.StreamConfig())
        started = time.monotonic()
        for index in range(frames):
            await asyncio.sleep(max(0.0, started + index / FPS - time.monotonic()))
            yield pb.StreamGenerateRequest(features=features_message(features[index : index + 1]))

    async with open_channel(target, security) as channel:
        call = LipSyncStub(channel).StreamGenerate(requests(), timeout=seconds + 120)
        async for _ in call:
            arrivals.append(time.monotonic())
    gaps = np.diff(arrivals) * 1000 if len(arrivals) > 1 else np.zeros(1)
    return Gaps(
        len(arrivals),
        float(np.percentile(gaps, 50)),
        float(np.percentile(gaps, 99)),
        float(gaps.max()),
    )


async def idle_streams(
    target: str, security: ChannelSecurity, count: int, release: asyncio.Event
) -> Counter[str]:
    """``count`` streams that send their config and then nothing until ``release``; how each
    ended (OK when still open at release)."""
    channels = [open_channel(target, security) for _ in range(max(1, count // CONNECTION_STREAMS))]
    outcomes: Counter[str] = Counter()

    async def one(channel: grpc.aio.Channel) -> None:
        async def requests() -> AsyncIterator[pb.StreamGenerateRequest]:
            yield pb.StreamGenerateRequest(config=pb.StreamConfig())
            await release.wait()

        try:
            async for _ in LipSyncStub(channel).StreamGenerate(requests(), timeout=600):
                pass
            outcomes["open until released"] += 1
        except grpc.aio.AioRpcError as error:
            outcomes[error.code().name] += 1

    tasks = [asyncio.create_task(one(channels[i % len(channels)])) for i in range(count)]
    await release.wait()
    await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close(None)
    return outcomes


def flood_request() -> inference_pb2.ModelInferRequest:
    rng = np.random.default_rng(3)
    request = inference_pb2.ModelInferRequest(model_name="lipsync")
    for name, shape in (("input", [6, 6, 320, 320]), ("audio", [6, 32, 16, 16])):
        request.inputs.add(name=name, datatype="FP32", shape=shape)
        request.raw_input_contents.append(rng.random(shape, dtype=np.float32).tobytes())
    return request


async def model_infer_flood(
    target: str, security: ChannelSecurity, concurrency: int, stop: asyncio.Event
) -> Counter[str]:
    request = flood_request()
    outcomes: Counter[str] = Counter()
    options = [
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.max_receive_message_length", 64 << 20),
    ]
    async with open_channel(target, security, options) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def sender() -> None:
            while not stop.is_set():
                try:
                    await stub.ModelInfer(request, timeout=120)
                    outcomes["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    outcomes[error.code().name] += 1

        await asyncio.gather(*(sender() for _ in range(concurrency)))
    return outcomes


async def under_attack(
    victim: Callable[[], Coroutine[Any, Any, Gaps]],
    attack: Callable[[asyncio.Event], Coroutine[Any, Any, Counter[str]]],
) -> tuple[Gaps, Counter[str]]:
    done = asyncio.Event()
    attacking = asyncio.create_task(attack(done))
    await asyncio.sleep(2.0)  # the attack is under way
    gaps = await victim()
    done.set()
    return gaps, await attacking


def light_unet() -> onnx.ModelProto:
    """A model of UNet-328's inputs and output at almost no cost (the face's first three channels,
    shifted by the audio's mean): the server's own work, not the model's, decides the gaps, as
    on a GPU that keeps up."""
    contract = PRESETS["unet328-ave"]
    image, audio, out = contract.image.name, contract.audio.name, contract.output.name
    starts, ends, axes = (
        numpy_helper.from_array(np.array(v, np.int64), n)
        for v, n in (([0], "starts"), ([3], "ends"), ([1], "axes"))
    )
    nodes = [
        helper.make_node("Slice", [image, "starts", "ends", "axes"], ["face"]),
        helper.make_node("ReduceMean", [audio], ["level"], keepdims=1),
        helper.make_node("Add", ["face", "level"], ["shifted"]),
        helper.make_node("Sigmoid", ["shifted"], [out]),
    ]
    graph = helper.make_graph(
        nodes,
        "light_unet",
        [batch_tensor(s.name, s.shape) for s in contract.inputs],
        [batch_tensor(out, contract.output.shape)],
        [starts, ends, axes],
    )
    return finish_model(graph, "UNet-328's I/O at almost no cost (benchmarks/abuse.py)")


@click.command()
@click.option("--seconds", default=20.0, show_default=True, help="Victim stream length.")
@click.option("--idle-streams", "idle_count", default=10_000, show_default=True)
@click.option("--flood-concurrency", default=4, show_default=True)
@click.option("--width", default=320, show_default=True, help="Avatar frame width.")
@click.option("--height", default=240, show_default=True, help="Avatar frame height.")
@click.option(
    "--unet",
    type=click.Choice(["reference", "light"]),
    default="reference",
    show_default=True,
    help="The reference UNet-328, or a model of its I/O at almost no cost.",
)
def main(
    *, seconds: float, idle_count: int, flood_concurrency: int, width: int, height: int, unet: str
) -> None:
    with tempfile.TemporaryDirectory(prefix="lipsync-abuse-") as scratch:
        root = Path(scratch)
        model = root / "unet.onnx"
        proto = build_unet328(seed=0) if unet == "reference" else light_unet()
        model.write_bytes(proto.SerializeToString())
        avatar = root / "avatar"
        write_demo_avatar(avatar, frames=25, width=width, height=height)
        ca = CertificateAuthority("abuse", root / "pki")
        server_pair = ca.issue("server", ips=("127.0.0.1",))

        def client(name: str) -> ChannelSecurity:
            pair = ca.issue(name)
            return ChannelSecurity(ca.pair.cert_path, pair.cert_path, pair.key_path)

        victim_id, attacker_id = client("victim"), client("attacker")
        with ServerProcess(
            model, avatar, root / "server.log", metrics=False,
            tls_cert_file=server_pair.cert_path, tls_key_file=server_pair.key_path,
            tls_client_ca_file=ca.pair.cert_path,
        ) as server:  # fmt: skip
            target = server.target

            def victim() -> Coroutine[Any, Any, Gaps]:
                return victim_stream(target, victim_id, seconds)

            rows: list[tuple[str, Gaps, Counter[str]]] = [
                ("victim alone", asyncio.run(victim()), Counter())
            ]
            gaps, ended = asyncio.run(
                under_attack(
                    victim, lambda stop: idle_streams(target, attacker_id, idle_count, stop)
                )
            )
            rows.append((f"{idle_count} idle streams", gaps, ended))
            gaps, ended = asyncio.run(
                under_attack(
                    victim,
                    lambda stop: model_infer_flood(target, attacker_id, flood_concurrency, stop),
                )
            )
            rows.append((f"14.7 MB ModelInfer x{flood_concurrency} flood", gaps, ended))
    load = os.getloadavg()
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()}; load average "
          f"after the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print(f"Command: `uv run python benchmarks/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}`")
    model_name = "reference UNet-328" if unet == "reference" else "light UNet (I/O only)"
    print(f"Avatar {width}x{height}, {model_name} on ONNX Runtime CPU, JPEG out.\n")
    print("| attacker | victim frames | gap p50 ms | gap p99 ms | gap max ms | attacker calls |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, gaps, ended in rows:
        calls = ", ".join(f"{code} {n}" for code, n in ended.most_common()) or "-"
        print(
            f"| {name} | {gaps.frames} | {gaps.p50_ms:.0f} | {gaps.p99_ms:.0f} | "
            f"{gaps.max_ms:.0f} | {calls} |"
        )


if __name__ == "__main__":
    main()
