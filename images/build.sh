#!/usr/bin/env bash
# Build the project's images without a Docker daemon (buildah) and write them as OCI archives:
#   out/images/operator.oci.tar      ghcr.io/lipsync/operator:<version>
#   out/images/runtime-cpu.oci.tar   ghcr.io/lipsync/runtime:<version>-cpu
# The gpu flavour of the runtime image (the chart's default) needs NVIDIA's NGC base:
#   images/build.sh runtime-gpu      ghcr.io/lipsync/runtime:<version> (out/images/runtime-gpu.oci.tar)
#
# Usage: images/build.sh [--out DIR] [image ...]   (images: operator runtime-cpu runtime-gpu;
#        default: operator runtime-cpu)
#
# Where the public Python base cannot be pulled, the base is made of Debian packages with
# mmdebstrap (bookworm, python3 3.11) and kept as localhost/lipsync/debian-python:bookworm.
# Push an archive to your registry with skopeo, e.g.
#   skopeo copy oci-archive:out/images/operator.oci.tar docker://registry.example.com/lipsync/operator:0.1.0
#
# Environment:
#   LIPSYNC_CACHE      cache root (default: $HOME/.cache/lipsync): buildah's image store lives
#                      in $LIPSYNC_CACHE/containers, so layers are reused by the next build
#   LIPSYNC_IMAGE_BASE base of the operator and runtime-cpu images (default: the Debian base)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${ROOT}/out/images"
if [[ "${1:-}" == "--out" ]]; then
    OUT="$(realpath -m "$2")"
    shift 2
fi
images=("$@")
[[ ${#images[@]} -gt 0 ]] || images=(operator runtime-cpu)

CACHE="${LIPSYNC_CACHE:-${HOME}/.cache/lipsync}"
VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "${ROOT}/charts/lipsync-operator/Chart.yaml")"
DEBIAN_BASE=localhost/lipsync/debian-python:bookworm
BASE="${LIPSYNC_IMAGE_BASE:-${DEBIAN_BASE}}"

log() { printf '%s images: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# shellcheck source=../hack/host-packages.sh
source "${ROOT}/hack/host-packages.sh"
ensure_host_packages buildah podman mmdebstrap runc

# buildah/podman settings for hosts without systemd or a raised open-files limit (no
# CAP_SYS_RESOURCE): runc, cgroupfs, and no ulimit above what the host allows.
CONF_DIR="${CACHE}/containers"
mkdir -p "${CONF_DIR}"
nofile="$(ulimit -Hn)"
[[ "${nofile}" == unlimited || "${nofile}" -gt 20000 ]] && nofile=20000
# runc could not raise the process limit of its container to the host's own hard limit here.
nproc=4096
cat >"${CONF_DIR}/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
cat >"${CONF_DIR}/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "${CONF_DIR}/storage"
runroot = "/run/lipsync-containers"
EOF
export CONTAINERS_CONF="${CONF_DIR}/containers.conf"
export CONTAINERS_STORAGE_CONF="${CONF_DIR}/storage.conf"
# Build stages can leave working containers (and their overlay mounts) behind, an interrupted
# build always does; this store is ours alone, so none of them is anyone else's.
trap 'buildah rm --all >/dev/null 2>&1 || true' EXIT

# The host's CA bundle during builds only (pip behind a TLS-inspecting proxy); never in an image.
build_volumes=()
for bundle in /etc/ssl/certs/ca-certificates.crt; do
    [[ -f "${bundle}" ]] && build_volumes+=(--volume "${bundle}:${bundle}:ro")
done

ensure_debian_base() {
    if buildah inspect --type image "${DEBIAN_BASE}" >/dev/null 2>&1; then
        return
    fi
    local start=${SECONDS} ctr mnt
    log "making ${DEBIAN_BASE} from Debian packages (mmdebstrap bookworm minbase + python3)"
    ctr="$(buildah from --pull-never scratch)"
    mnt="$(buildah mount "${ctr}")"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm "${mnt}"
    buildah umount "${ctr}" >/dev/null
    buildah config --env LANG=C.UTF-8 --cmd /bin/bash "${ctr}"
    buildah commit --rm --quiet "${ctr}" "${DEBIAN_BASE}" >/dev/null
    log "${DEBIAN_BASE} in $((SECONDS - start))s"
}

# build NAME DOCKERFILE TAG BUILD_ARG...
build() {
    local name="$1" dockerfile="$2" tag="$3"
    shift 3
    local start=${SECONDS}
    log "${name}: building ${tag} from ${dockerfile}"
    buildah bud --quiet --layers --network host --isolation chroot \
        "${build_volumes[@]}" -f "${ROOT}/${dockerfile}" -t "${tag}" "$@" "${ROOT}" >/dev/null
    mkdir -p "${OUT}"
    rm -f "${OUT}/${name}.oci.tar"
    buildah push --quiet "${tag}" "oci-archive:${OUT}/${name}.oci.tar:${tag}"
    local version
    version="$(podman run --rm --network none "${tag}" --version)"
    log "${name}: '${version}' in a container; $(du -m "${OUT}/${name}.oci.tar" | cut -f1) MB" \
        "archive, built in $((SECONDS - start))s"
}

for image in "${images[@]}"; do
    case "${image}" in
        operator | runtime-cpu) [[ "${BASE}" != "${DEBIAN_BASE}" ]] || ensure_debian_base ;;
    esac
    case "${image}" in
        operator)
            build operator images/operator.Dockerfile "ghcr.io/lipsync/operator:${VERSION}" \
                --pull=false --build-arg "BASE=${BASE}"
            ;;
        runtime-cpu)
            build runtime-cpu images/runtime.Dockerfile "ghcr.io/lipsync/runtime:${VERSION}-cpu" \
                --pull=false --build-arg "BASE=${BASE}" --build-arg FLAVOR=cpu
            ;;
        runtime-gpu)
            build runtime-gpu images/runtime.Dockerfile "ghcr.io/lipsync/runtime:${VERSION}" \
                --build-arg FLAVOR=gpu
            ;;
        *)
            echo "images/build.sh: unknown image '${image}' (operator runtime-cpu runtime-gpu)" >&2
            exit 2
            ;;
    esac
done
