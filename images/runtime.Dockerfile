# The runtime: server and engine builder in one image, on one TensorRT version, because an engine
# only loads under the TensorRT that built it. The operator puts this image's reference in every
# engine key, so a new runtime image means new engines.
# Build from the repository root:  docker build -f images/runtime.Dockerfile -t lipsync-runtime .
# NGC TensorRT 25.08: TensorRT 10.13, CUDA 13, Python 3.12.
ARG BASE=nvcr.io/nvidia/tensorrt:25.08-py3
FROM ${BASE} AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY core core
COPY engine_builder engine_builder
COPY server server
COPY protos protos
COPY operator/pyproject.toml operator/pyproject.toml
COPY testbed/pyproject.toml testbed/pyproject.toml
# TensorRT comes from the base image (system site-packages); everything else from the lock.
RUN uv export --frozen --no-dev --no-emit-workspace --package lipsync-server -o server.txt \
 && uv export --frozen --no-dev --no-emit-workspace --package lipsync-engine-builder -o builder.txt \
 && python3 -m venv --system-site-packages /opt/lipsync \
 && /opt/lipsync/bin/pip install --no-cache-dir -r server.txt -r builder.txt \
 && /opt/lipsync/bin/pip install --no-cache-dir --no-deps ./core ./engine_builder ./server \
 && /opt/lipsync/bin/python -c "import tensorrt; print('TensorRT', tensorrt.__version__)"

FROM ${BASE}
COPY --from=build /opt/lipsync /opt/lipsync
ENV PATH=/opt/lipsync/bin:$PATH PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8001 8002
ENTRYPOINT ["lipsync"]
CMD ["serve", "--help"]
