# The operator: kopf + the Kubernetes client + the shared core (and the builder's request and
# cache modules, so it computes the same engine keys the builder does). No GPU libraries.
# Build from the repository root:  docker build -f images/operator.Dockerfile -t lipsync-operator .
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY core core
COPY engine_builder engine_builder
COPY operator operator
COPY server/pyproject.toml server/pyproject.toml
COPY testbed/pyproject.toml testbed/pyproject.toml
RUN uv export --frozen --no-dev --no-emit-workspace --package lipsync-operator -o requirements.txt \
 && python -m venv /opt/lipsync \
 && /opt/lipsync/bin/pip install --no-cache-dir -r requirements.txt \
 && /opt/lipsync/bin/pip install --no-cache-dir --no-deps ./core ./engine_builder ./operator

FROM python:3.11-slim
COPY --from=build /opt/lipsync /opt/lipsync
ENV PATH=/opt/lipsync/bin:$PATH PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["lipsync"]
CMD ["operator", "run"]
