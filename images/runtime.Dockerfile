# syntax=docker/dockerfile:1.7
# The runtime: server and engine builder in one image, on one TensorRT version, because an engine
# only loads under the TensorRT that built it. The operator puts this image's reference in every
# engine key, so a new runtime image means new engines.
# Build from the repository root:  docker build -f images/runtime.Dockerfile -t lipsync-runtime .
# NGC TensorRT 25.08: TensorRT 10.13, CUDA 13, Python 3.12. The builder also takes TensorRT 11
# (strongly typed: precision from the ONNX), e.g. with --build-arg TENSORRT=tensorrt-cu13==11.4.0.106
# on a CUDA 13 base without TensorRT.
ARG BASE=nvcr.io/nvidia/tensorrt:25.08-py3
FROM ${BASE} AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
# Wheels that are not in the lock (the lock is CPU-only): CUDA runtime bindings for the TensorRT
# backend, ONNX Runtime with the CUDA EP in place of the CPU build (a CUDA 13 build on this
# CUDA 13 base; a CUDA 12 wheel here would silently run on the CPU, which the server refuses),
# optionally TensorRT from PyPI and torch for the PyTorch backends.
ARG CUDA_PYTHON=cuda-python==13.4.4
ARG ORT_GPU=onnxruntime-gpu==1.31.1
ARG TENSORRT=""
ARG TORCH=""
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY contract contract
COPY core core
COPY engine_builder engine_builder
COPY server server
COPY protos protos
COPY operator/pyproject.toml operator/pyproject.toml
COPY testbed/pyproject.toml testbed/pyproject.toml
COPY bench/pyproject.toml bench/pyproject.toml
# TensorRT comes from the base image (system site-packages) unless TENSORRT names a wheel.
RUN uv export --frozen --no-dev --no-emit-workspace --package lipsync-server -o server.txt \
 && uv export --frozen --no-dev --no-emit-workspace --package lipsync-engine-builder -o builder.txt \
 && python3 -m venv --system-site-packages /opt/lipsync \
 && /opt/lipsync/bin/pip install --no-cache-dir -r server.txt -r builder.txt \
 && /opt/lipsync/bin/pip uninstall --yes onnxruntime \
 && /opt/lipsync/bin/pip install --no-cache-dir "${CUDA_PYTHON}" "${ORT_GPU}" ${TENSORRT} ${TORCH} \
 && /opt/lipsync/bin/pip install --no-cache-dir --no-deps ./contract ./core ./engine_builder ./server
# Build-time check: every backend's libraries import here (no GPU is needed for that), so a
# missing or mismatched wheel fails the image build, not the first request.
RUN /opt/lipsync/bin/python - <<'CHECK'
import importlib, importlib.util
import tensorrt, onnxruntime
from cuda.bindings import runtime
from lipsync_engine_builder.targets.profiles import tensorrt_major
print("TensorRT", tensorrt.__version__, "(major", tensorrt_major(tensorrt.__version__), ")")
providers = onnxruntime.get_available_providers()
assert "CUDAExecutionProvider" in providers, f"onnxruntime has no CUDA EP: {providers}"
print("onnxruntime", onnxruntime.__version__, providers)
for module in ("lipsync_core.backends.tensorrt", "lipsync_core.backends.onnxruntime",
               "lipsync_core.backends.ort_plugins", "lipsync_core.backends.torch_backend",
               "lipsync_engine_builder.targets.tensorrt", "lipsync_server.app"):
    importlib.import_module(module)
if importlib.util.find_spec("torch"):
    import torch
    print("torch", torch.__version__, "CUDA", torch.version.cuda)
CHECK

FROM ${BASE}
COPY --from=build /opt/lipsync /opt/lipsync
ENV PATH=/opt/lipsync/bin:$PATH PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8001 8002
ENTRYPOINT ["lipsync"]
CMD ["serve", "--help"]
