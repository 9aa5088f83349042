# The runtime: server, engine builder and load generator (`lipsync bench`, to measure from inside
# a cluster) in one image, on one TensorRT version, because an engine only loads under the
# TensorRT that built it. The operator puts this image's reference in every
# engine key, so a new runtime image means new engines.
#
# Two flavours share every step after FROM (what is tested on CPU is what GPU users build):
#   gpu (default): NGC TensorRT 25.08 (TensorRT 10.13, CUDA 13, Python 3.12), ONNX Runtime with
#       the CUDA EP in place of the CPU build, CUDA runtime bindings; optionally TensorRT from PyPI
#       (TensorRT 11 is strongly typed: precision from the ONNX), e.g.
#       --build-arg TENSORRT=tensorrt-cu13==11.4.0.106 on a CUDA 13 base without TensorRT, and
#       torch for the PyTorch backends (--build-arg TORCH=torch==2.15.0).
#         docker build -f images/runtime.Dockerfile -t ghcr.io/lipsync/runtime:0.1.0 .
#   cpu: any Debian/Ubuntu base with python3 (3.11+) and its venv module; ONNX Runtime on the CPU.
#         docker build -f images/runtime.Dockerfile --build-arg FLAVOR=cpu \
#           --build-arg BASE=python:3.11-slim -t ghcr.io/lipsync/runtime:0.1.0-cpu .
ARG BASE=nvcr.io/nvidia/tensorrt:25.08-py3
FROM ${BASE} AS build
ARG FLAVOR=gpu
ARG UV_VERSION=0.13.9
# Wheels that are not in the lock (the lock is CPU-only), for the gpu flavour: a CUDA 13 build of
# ONNX Runtime on this CUDA 13 base (a CUDA 12 wheel would silently run on the CPU, which the
# server refuses).
ARG CUDA_PYTHON=cuda-python==13.4.4
ARG ORT_GPU=onnxruntime-gpu==1.31.1
ARG TENSORRT=""
ARG TORCH=""
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first (one cached layer while the lock is unchanged), then the project's code.
# uv resolves the whole workspace: every member's metadata must be present, not its code.
COPY pyproject.toml uv.lock ./
COPY contract/pyproject.toml contract/pyproject.toml
COPY core/pyproject.toml core/pyproject.toml
COPY engine_builder/pyproject.toml engine_builder/pyproject.toml
COPY server/pyproject.toml server/pyproject.toml
COPY operator/pyproject.toml operator/pyproject.toml
COPY testbed/pyproject.toml testbed/pyproject.toml
COPY bench/pyproject.toml bench/pyproject.toml
COPY gateway/pyproject.toml gateway/pyproject.toml
COPY pipecat/pyproject.toml pipecat/pyproject.toml
# TensorRT comes from the gpu base image (system site-packages) unless TENSORRT names a wheel.
RUN case "${FLAVOR}" in gpu|cpu) ;; *) echo "FLAVOR must be gpu or cpu, not ${FLAVOR}" >&2; exit 1;; esac \
 && /opt/uv/bin/uv export --frozen --no-dev --no-emit-workspace --package lipsync-server -o server.txt \
 && /opt/uv/bin/uv export --frozen --no-dev --no-emit-workspace --package lipsync-engine-builder \
      -o builder.txt \
 && /opt/uv/bin/uv export --frozen --no-dev --no-emit-workspace --package lipsync-bench -o bench.txt \
 && /opt/uv/bin/uv export --frozen --no-dev --no-emit-workspace --package lipsync-gateway \
      -o gateway.txt \
 && python3 -m venv --system-site-packages /opt/lipsync \
 && /opt/lipsync/bin/pip install --no-cache-dir -r server.txt -r builder.txt -r bench.txt -r gateway.txt \
 && if [ "${FLAVOR}" = gpu ]; then \
      /opt/lipsync/bin/pip uninstall --yes onnxruntime \
      && /opt/lipsync/bin/pip install --no-cache-dir "${CUDA_PYTHON}" "${ORT_GPU}" ${TENSORRT} ${TORCH}; \
    elif [ -n "${TORCH}" ]; then \
      /opt/lipsync/bin/pip install --no-cache-dir ${TORCH}; \
    fi
COPY contract contract
COPY core core
COPY engine_builder engine_builder
COPY server server
COPY bench bench
COPY gateway gateway
COPY protos protos
COPY images/check_runtime.py images/check_runtime.py
# Build-time check: every backend's libraries import here (no GPU is needed for that), so a
# missing or mismatched wheel fails the image build, not the first request.
RUN /opt/lipsync/bin/pip install --no-cache-dir --no-deps ./contract ./core ./engine_builder ./server ./bench ./gateway \
 && /opt/lipsync/bin/python images/check_runtime.py "${FLAVOR}" \
 && /opt/lipsync/bin/lipsync --version

FROM ${BASE}
# A named user: libraries look the uid up in /etc/passwd (getpass.getuser, ~ expansion).
RUN groupadd --gid 10001 lipsync \
 && useradd --uid 10001 --gid 10001 --home-dir /home/lipsync --create-home \
      --shell /usr/sbin/nologin lipsync
COPY --from=build /opt/lipsync /opt/lipsync
ENV PATH=/opt/lipsync/bin:$PATH PYTHONUNBUFFERED=1 HOME=/home/lipsync
USER 10001:10001
EXPOSE 8001 8002
ENTRYPOINT ["lipsync"]
CMD ["serve", "--help"]
