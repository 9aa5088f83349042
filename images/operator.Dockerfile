# The operator: kopf, the Kubernetes client and the contract package (API types, engine keys,
# build requests). No ML or GPU libraries: the engine key needs none.
# Build from the repository root (`make images` builds it with buildah, no daemon needed):
#   docker build -f images/operator.Dockerfile -t ghcr.io/lipsync/operator:0.1.0 .
# BASE: any Debian or Ubuntu image with python3 (3.11+) and its venv module;
# `make images` uses one made of Debian packages (images/base.sh).
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
ARG UV_VERSION=0.13.9
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first (one cached layer while the lock is unchanged), then the project's code.
# uv resolves the whole workspace: every member's metadata must be present, not its code.
COPY pyproject.toml uv.lock ./
COPY contract/pyproject.toml contract/pyproject.toml
COPY operator/pyproject.toml operator/pyproject.toml
COPY core/pyproject.toml core/pyproject.toml
COPY engine_builder/pyproject.toml engine_builder/pyproject.toml
COPY server/pyproject.toml server/pyproject.toml
COPY testbed/pyproject.toml testbed/pyproject.toml
COPY bench/pyproject.toml bench/pyproject.toml
COPY gateway/pyproject.toml gateway/pyproject.toml
COPY pipecat/pyproject.toml pipecat/pyproject.toml
RUN /opt/uv/bin/uv export --frozen --no-dev --no-emit-workspace --package lipsync-operator \
      -o requirements.txt \
 && python3 -m venv /opt/lipsync \
 && /opt/lipsync/bin/pip install --no-cache-dir -r requirements.txt
COPY contract contract
COPY operator operator
RUN /opt/lipsync/bin/pip install --no-cache-dir --no-deps ./contract ./operator \
 && /opt/lipsync/bin/lipsync --version

FROM ${BASE}
# A named user: kopf (getpass.getuser) and other libraries look the uid up in /etc/passwd.
RUN groupadd --gid 10001 lipsync \
 && useradd --uid 10001 --gid 10001 --home-dir /home/lipsync --create-home \
      --shell /usr/sbin/nologin lipsync
COPY --from=build /opt/lipsync /opt/lipsync
ENV PATH=/opt/lipsync/bin:$PATH PYTHONUNBUFFERED=1 HOME=/home/lipsync
USER 10001:10001
ENTRYPOINT ["lipsync"]
CMD ["operator", "run"]
