# The operator: kopf, the Kubernetes client and the contract package (API types, engine keys,
# build requests). No ML or GPU libraries: the engine key needs none.
# Build from the repository root:  docker build -f images/operator.Dockerfile -t lipsync-operator .
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY contract contract
COPY operator operator
# uv resolves the whole workspace: the other members' metadata must be present, not their code.
COPY core/pyproject.toml core/pyproject.toml
COPY engine_builder/pyproject.toml engine_builder/pyproject.toml
COPY server/pyproject.toml server/pyproject.toml
COPY testbed/pyproject.toml testbed/pyproject.toml
COPY bench/pyproject.toml bench/pyproject.toml
RUN uv export --frozen --no-dev --no-emit-workspace --package lipsync-operator -o requirements.txt \
 && python -m venv /opt/lipsync \
 && /opt/lipsync/bin/pip install --no-cache-dir -r requirements.txt \
 && /opt/lipsync/bin/pip install --no-cache-dir --no-deps ./contract ./operator

FROM python:3.11-slim
COPY --from=build /opt/lipsync /opt/lipsync
ENV PATH=/opt/lipsync/bin:$PATH PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["lipsync"]
CMD ["operator", "run"]
