"""Image build check: every module the runtime image's flavour serves with imports here, so a
missing or mismatched wheel fails the build, not the first request. No GPU is needed for it."""

from __future__ import annotations

import importlib
import importlib.util
import sys

COMMON_MODULES = (
    "lipsync_core.backends.onnxruntime",
    "lipsync_core.backends.ort_plugins",
    "lipsync_engine_builder.targets.onnxruntime",
    "lipsync_server.app",
)
GPU_MODULES = (
    "lipsync_core.backends.tensorrt",
    "lipsync_core.backends.torch_backend",
    "lipsync_engine_builder.targets.tensorrt",
)


def check(flavour: str) -> None:
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    print("onnxruntime", onnxruntime.__version__, providers)
    if flavour == "gpu":
        import tensorrt
        from cuda.bindings import runtime  # noqa: F401

        from lipsync_engine_builder.targets.profiles import tensorrt_major

        print("TensorRT", tensorrt.__version__, "(major", tensorrt_major(tensorrt.__version__), ")")
        if "CUDAExecutionProvider" not in providers:
            raise SystemExit(f"onnxruntime has no CUDA EP: {providers}")
    for module in COMMON_MODULES + (GPU_MODULES if flavour == "gpu" else ()):
        importlib.import_module(module)
    if importlib.util.find_spec("torch"):
        import torch

        print("torch", torch.__version__, "CUDA", torch.version.cuda)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("gpu", "cpu"):
        raise SystemExit("usage: check_runtime.py gpu|cpu")
    check(sys.argv[1])
