"""PyTorch targets, from a ``torch.export`` program.

``torch``: the program itself, re-saved with the precision it runs at (the backend casts its
weights at load). ``torch-aoti``: an AOTInductor package compiled here, on the device it will run
on (the CPU, or the GPU of the build Job's node), for batches 1..max. The package takes and returns
float32 contiguous tensors; casting to fp16 and to channels_last happens inside it. Its metadata
records precision and device, the manifest the torch version and compute capability.
"""

from __future__ import annotations

import json
from typing import Any

from lipsync_contract.kinds import Precision
from lipsync_core.backends.base import BackendConfig
from lipsync_core.backends.torch_backend import (
    AOTI_DEVICE_KEY,
    AOTI_PRECISION_KEY,
    import_torch,
    program_settings,
    resolve_device,
)
from lipsync_core.backends.torch_files import SETTINGS_FILE
from lipsync_engine_builder.errors import BuildFailedError, one_line
from lipsync_engine_builder.targets.base import BuildContext, BuiltArtifact


def check_torch_precision(precision: Precision) -> None:
    if precision == "int8":
        raise BuildFailedError("the PyTorch targets build fp32 or fp16; int8 is for ORT/TensorRT")


def compute_capability(torch: Any, device: str) -> str:
    """``9.0`` for a CUDA device, empty on the CPU."""
    if not device.startswith("cuda"):
        return ""
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    return f"{major}.{minor}"


def check_compute_capability(wanted: str, found: str) -> None:
    """A build Job must run on the GPU type its key names: refuse any other."""
    if wanted and wanted != found:
        raise BuildFailedError(
            f"torch-aoti: the request is for compute capability {wanted}, this device has "
            f"{found or 'none (CPU)'}; AOTInductor compiles for the device it runs on"
        )


def build_torch_program(context: BuildContext) -> BuiltArtifact:
    torch = import_torch()
    check_torch_precision(context.precision)
    program, settings = program_settings(torch, context.model)
    settings = {**settings, "precision": context.precision}
    target = context.workdir / "artifact.pt2"
    torch.export.save(program, str(target), extra_files={SETTINGS_FILE: json.dumps(settings)})
    return BuiltArtifact(path=target, session_options={"mode": "eager"})


def _wrapped(torch: Any, module: Any, precision: Precision, channels_last: bool) -> Any:
    """``module`` at ``precision`` behind float32 contiguous inputs and output."""
    dtype = torch.float16 if precision == "fp16" else torch.float32
    layout = torch.channels_last if channels_last else torch.contiguous_format

    class Compiled(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.inner = module.to(dtype=dtype, memory_format=layout)

        def forward(self, image: Any, audio: Any) -> Any:  # the contract's two inputs
            cast = [x.to(dtype=dtype).contiguous(memory_format=layout) for x in (image, audio)]
            return self.inner(*cast).float().contiguous()

    return Compiled()  # no .eval(): an exported program's module refuses train()/eval()


def build_aoti_package(
    context: BuildContext, config: BackendConfig, wanted_capability: str
) -> BuiltArtifact:
    torch = import_torch()
    check_torch_precision(context.precision)
    device = resolve_device(config.device, config.device_id, torch.cuda.is_available())
    capability = compute_capability(torch, device)
    check_compute_capability(wanted_capability, capability)
    program, _ = program_settings(torch, context.model)
    module = _wrapped(torch, program.module().to(device), context.precision, config.channels_last)
    batch = torch.export.Dim("batch", min=1, max=max(2, context.batch.max))
    examples = tuple(
        torch.rand(spec.batch_shape(2), device=device)  # batch 1 would be specialized
        for spec in context.contract.inputs
    )
    target = context.workdir / "artifact.pt2"
    metadata = {AOTI_PRECISION_KEY: context.precision, AOTI_DEVICE_KEY: device.split(":")[0]}
    try:
        with torch.no_grad():
            exported = torch.export.export(
                module, examples, dynamic_shapes=tuple({0: batch} for _ in examples)
            )
            torch._inductor.aoti_compile_and_package(
                exported,
                package_path=str(target),
                inductor_configs={"aot_inductor.metadata": metadata},
            )
    except Exception as exc:  # export and Inductor raise many kinds of errors
        raise BuildFailedError(f"AOTInductor compile failed: {one_line(exc)}") from None
    return BuiltArtifact(
        path=target,
        session_options={
            "device": device.split(":")[0],
            "compute_capability": capability,
            "channels_last": int(config.channels_last),
            "torch": str(torch.__version__),
        },
    )
