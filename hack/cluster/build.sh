#!/usr/bin/env bash
# Build the local test bed binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok, helm, the node components kubelet, kube-proxy,
# containerd, kube-router and CoreDNS, and the autoscaling components prometheus,
# keda-operator, keda-adapter, karpenter-kwok) from the Go module proxy, copy the
# CRDs the autoscaling components need next to them (crds/), and pack the node's
# own images (pause, CoreDNS) as OCI archives (images/).
#
# Usage: hack/cluster/build.sh [--print-bin-dir] [component ...]
#   components: etcd kubernetes kwok helm containerd kube-router coredns pause
#               prometheus keda karpenter (default: all)
#
# Environment:
#   LIPSYNC_CACHE    cache root (default: $HOME/.cache/lipsync)
#   LIPSYNC_BIN_DIR  output directory (default: $LIPSYNC_CACHE/k8s-<version>/bin)
#   GO               go command (default: go on PATH, else /usr/local/go/bin/go)
#
# Every component is built through a generated wrapper module that requires the
# upstream module at the pinned version. Upstream replace directives that point to
# local folders (Kubernetes staging modules, etcd's sibling modules) are turned
# into replacements by the published versions of those modules; the list is read
# from the upstream go.mod, never hard-coded. A component whose stamp matches the
# pinned version is skipped, so a warm run takes about a second.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${HERE}/versions.env"

CACHE="${LIPSYNC_CACHE:-${HOME}/.cache/lipsync}"
BIN_DIR="${LIPSYNC_BIN_DIR:-${CACHE}/k8s-${KUBERNETES_VERSION}/bin}"

if [[ "${1:-}" == "--print-bin-dir" ]]; then
    echo "${BIN_DIR}"
    exit 0
fi

if [[ -z "${GO:-}" ]]; then
    if command -v go >/dev/null 2>&1; then
        GO="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then
        GO=/usr/local/go/bin/go
    else
        echo "build.sh: no go command found (set GO=/path/to/go)" >&2
        exit 1
    fi
fi

export GOMODCACHE="${CACHE}/go/mod"
export GOCACHE="${CACHE}/go/build"
export GOFLAGS="-mod=mod -modcacherw -buildvcs=false"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
WRAPPERS="${CACHE}/wrappers"
IMAGE_DIR="${BIN_DIR}/../images"
mkdir -p "${BIN_DIR}" "${GOMODCACHE}" "${GOCACHE}" "${WRAPPERS}"

log() { printf '%s build.sh: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# stamp_ok NAME VERSION BINARY...: the component is built at VERSION.
stamp_ok() {
    local name="$1" version="$2"
    shift 2
    [[ -f "${BIN_DIR}/.stamp-${name}" ]] || return 1
    [[ "$(cat "${BIN_DIR}/.stamp-${name}")" == "${version}" ]] || return 1
    local b
    for b in "$@"; do
        [[ -x "${BIN_DIR}/${b}" ]] || return 1
    done
}

# write_wrapper NAME MODULE VERSION LOCAL_VERSION TOOL...
# Generates ${WRAPPERS}/NAME-VERSION/go.mod and prints that directory. With
# WRAPPER_SOURCE set, MODULE is built from that folder (a trimmed copy of the
# release) instead of the module cache.
write_wrapper() {
    local name="$1" module="$2" version="$3" local_version="$4"
    shift 4
    local dir="${WRAPPERS}/${name}-${version}"
    mkdir -p "${dir}"
    local gomod
    gomod="$("${GO}" mod download -json "${module}@${version}" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["GoMod"])')"
    "${GO}" mod edit -json "${gomod}" >"${dir}/upstream.json"
    python3 - "${dir}/upstream.json" "${module}" "${version}" "${local_version}" \
        "${WRAPPER_SOURCE:-}" "${name}" "$@" >"${dir}/go.mod" <<'PY'
import json
import sys

upstream_json, module, version, local_version, source, name, *tools = sys.argv[1:]
with open(upstream_json, encoding="utf-8") as fh:
    upstream = json.load(fh)
required = {r["Path"] for r in upstream.get("Require") or []}
lines = [
    f"module lipsync.local/testbed-build/{name}",
    "",
    f"go {upstream['Go']}",
    "",
    f"require {module} {version}",
    "",
]
for rep in upstream.get("Replace") or []:
    old, new = rep["Old"], rep["New"]
    old_spec = old["Path"] + (" " + old["Version"] if old.get("Version") else "")
    if new["Path"].startswith(("./", "../")):
        # A local folder in the upstream repository: use the published module.
        if old["Path"] not in required:
            continue  # e.g. forbidden-dependency guards, not part of the graph
        lines.append(f"replace {old_spec} => {old['Path']} {local_version}")
    else:
        new_spec = new["Path"] + (" " + new["Version"] if new.get("Version") else "")
        lines.append(f"replace {old_spec} => {new_spec}")
if source:
    lines.append(f"replace {module} => {source}")
lines.append("")
lines.extend(f"tool {t}" for t in tools)
print("\n".join(lines))
PY
    log "${name}: resolving module graph in ${dir}"
    (cd "${dir}" && "${GO}" mod tidy -compat="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Go"])' "${dir}/upstream.json")")
    echo "${dir}"
}

build_etcd() {
    if stamp_ok etcd "${ETCD_VERSION}" etcd; then
        log "etcd ${ETCD_VERSION}: up to date"
        return
    fi
    local start=${SECONDS} dir
    dir="$(write_wrapper etcd go.etcd.io/etcd/server/v3 "${ETCD_VERSION}" "${ETCD_VERSION}" \
        go.etcd.io/etcd/server/v3)"
    log "etcd ${ETCD_VERSION}: building"
    (cd "${dir}" && "${GO}" build -trimpath \
        -ldflags="-s -w" \
        -o "${BIN_DIR}/etcd" go.etcd.io/etcd/server/v3)
    echo "${ETCD_VERSION}" >"${BIN_DIR}/.stamp-etcd"
    log "etcd ${ETCD_VERSION}: built in $((SECONDS - start))s"
}

build_kubernetes() {
    if [[ "${KUBECTL_VERSION}" != "${KUBERNETES_VERSION}" ]]; then
        echo "build.sh: KUBECTL_VERSION must equal KUBERNETES_VERSION" >&2
        exit 1
    fi
    if stamp_ok kubernetes "${KUBERNETES_VERSION}" \
        kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; then
        log "kubernetes ${KUBERNETES_VERSION}: up to date"
        return
    fi
    local start=${SECONDS} dir v="${KUBERNETES_VERSION#v}"
    local major="${v%%.*}" rest="${v#*.}"
    local minor="${rest%%.*}"
    # Staging modules k8s.io/foo are published as v0.<minor>.<patch>.
    local staging_version="v0.${v#*.}"
    local cmds=(
        k8s.io/kubernetes/cmd/kube-apiserver
        k8s.io/kubernetes/cmd/kube-controller-manager
        k8s.io/kubernetes/cmd/kube-scheduler
        k8s.io/kubernetes/cmd/kubectl
        k8s.io/kubernetes/cmd/kubelet
        k8s.io/kubernetes/cmd/kube-proxy
    )
    dir="$(write_wrapper kubernetes k8s.io/kubernetes "${KUBERNETES_VERSION}" "${staging_version}" "${cmds[@]}")"
    local ldflags="-s -w" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X ${pkg}.gitVersion=${KUBERNETES_VERSION}"
        ldflags+=" -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
        ldflags+=" -X ${pkg}.gitTreeState=clean"
    done
    log "kubernetes ${KUBERNETES_VERSION}: building ${cmds[*]##*/}"
    (cd "${dir}" && "${GO}" build -trimpath -ldflags="${ldflags}" -o "${BIN_DIR}/" "${cmds[@]}")
    echo "${KUBERNETES_VERSION}" >"${BIN_DIR}/.stamp-kubernetes"
    log "kubernetes ${KUBERNETES_VERSION}: built in $((SECONDS - start))s"
}

build_kwok() {
    if stamp_ok kwok "${KWOK_VERSION}" kwok; then
        log "kwok ${KWOK_VERSION}: up to date"
        return
    fi
    local start=${SECONDS} dir
    dir="$(write_wrapper kwok sigs.k8s.io/kwok "${KWOK_VERSION}" "${KWOK_VERSION}" sigs.k8s.io/kwok/cmd/kwok)"
    log "kwok ${KWOK_VERSION}: building"
    (cd "${dir}" && "${GO}" build -trimpath \
        -ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" \
        -o "${BIN_DIR}/kwok" sigs.k8s.io/kwok/cmd/kwok)
    echo "${KWOK_VERSION}" >"${BIN_DIR}/.stamp-kwok"
    log "kwok ${KWOK_VERSION}: built in $((SECONDS - start))s"
}

build_helm() {
    if stamp_ok helm "${HELM_VERSION}" helm; then
        log "helm ${HELM_VERSION}: up to date"
        return
    fi
    local start=${SECONDS} dir
    dir="$(write_wrapper helm helm.sh/helm/v3 "${HELM_VERSION}" "${HELM_VERSION}" helm.sh/helm/v3/cmd/helm)"
    log "helm ${HELM_VERSION}: building"
    (cd "${dir}" && "${GO}" build -trimpath \
        -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
        -o "${BIN_DIR}/helm" helm.sh/helm/v3/cmd/helm)
    echo "${HELM_VERSION}" >"${BIN_DIR}/.stamp-helm"
    log "helm ${HELM_VERSION}: built in $((SECONDS - start))s"
}

build_prometheus() {
    if stamp_ok prometheus "${PROMETHEUS_VERSION}" prometheus; then
        log "prometheus ${PROMETHEUS_VERSION}: up to date"
        return
    fi
    local start=${SECONDS} dir pkg=github.com/prometheus/common/version
    dir="$(write_wrapper prometheus github.com/prometheus/prometheus "${PROMETHEUS_VERSION}" \
        "${PROMETHEUS_VERSION}" github.com/prometheus/prometheus/cmd/prometheus)"
    log "prometheus ${PROMETHEUS_VERSION}: building (service discovery: kubernetes only)"
    # Module versions are v0.3MM.P for Prometheus 3.MM.P.
    local v="${PROMETHEUS_VERSION#v0.}"
    local release="3.$((10#${v%%.*} - 300)).${v#*.}"
    # The test bed only uses kubernetes_sd; the other discovery plugins would
    # double the build time (plugins/*.go build tags).
    (cd "${dir}" && "${GO}" build -trimpath -tags remove_all_sd,enable_kubernetes_sd \
        -ldflags="-s -w -X ${pkg}.Version=${release} -X ${pkg}.Branch=release" \
        -o "${BIN_DIR}/prometheus" github.com/prometheus/prometheus/cmd/prometheus)
    echo "${PROMETHEUS_VERSION}" >"${BIN_DIR}/.stamp-prometheus"
    log "prometheus ${PROMETHEUS_VERSION}: built in $((SECONDS - start))s"
}

# The trigger types compiled into KEDA (keda_triggers.py): the operator's
# ScaledObjects use Prometheus triggers, cpu/memory are KEDA's built-in ones.
KEDA_TRIGGERS=(prometheus cpu memory)

build_keda() {
    local stamp="${KEDA_VERSION}+triggers=$(IFS=,; echo "${KEDA_TRIGGERS[*]}")"
    if stamp_ok keda "${stamp}" keda-operator keda-adapter; then
        log "keda ${KEDA_VERSION}: up to date"
        return
    fi
    local start=${SECONDS} dir src module=github.com/kedacore/keda/v2
    # A trimmed copy of the release: every other scaler would pull in its SDK.
    src="${WRAPPERS}/keda-src-${KEDA_VERSION}"
    rm -rf "${src}"
    cp -r "$("${GO}" mod download -json "${module}@${KEDA_VERSION}" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')" "${src}"
    chmod -R u+w "${src}"
    python3 "${HERE}/keda_triggers.py" "${src}" "${KEDA_TRIGGERS[@]}" >&2
    dir="$(WRAPPER_SOURCE="${src}" write_wrapper keda "${module}" "${KEDA_VERSION}" "${KEDA_VERSION}" \
        "${module}/cmd/operator" "${module}/cmd/adapter")"
    local ldflags="-s -w -X ${module}/version.Version=${KEDA_VERSION#v}"
    log "keda ${KEDA_VERSION}: building operator and adapter (triggers: ${KEDA_TRIGGERS[*]})"
    (cd "${dir}" && "${GO}" build -trimpath -ldflags="${ldflags}" \
        -o "${BIN_DIR}/keda-operator" "${module}/cmd/operator")
    (cd "${dir}" && "${GO}" build -trimpath -ldflags="${ldflags}" \
        -o "${BIN_DIR}/keda-adapter" "${module}/cmd/adapter")
    copy_crds keda "${src}/config/crd/bases"
    echo "${stamp}" >"${BIN_DIR}/.stamp-keda"
    log "keda ${KEDA_VERSION}: built in $((SECONDS - start))s"
}

build_karpenter() {
    if stamp_ok karpenter "${KARPENTER_VERSION}" karpenter-kwok; then
        log "karpenter ${KARPENTER_VERSION}: up to date"
        return
    fi
    # A subshell, so the toolchain switch stays inside this component.
    (
        # Karpenter's go.mod asks for a newer Go than the local one; the module
        # proxy serves the pinned toolchain (golang.org/toolchain).
        export GOTOOLCHAIN="${KARPENTER_GOTOOLCHAIN}"
        local start=${SECONDS} dir src
        dir="$(write_wrapper karpenter sigs.k8s.io/karpenter "${KARPENTER_VERSION}" \
            "${KARPENTER_VERSION}" sigs.k8s.io/karpenter/kwok)"
        log "karpenter ${KARPENTER_VERSION}: building the KWOK provider (${GOTOOLCHAIN})"
        (cd "${dir}" && "${GO}" build -trimpath \
            -ldflags="-s -w -X sigs.k8s.io/karpenter/pkg/operator.Version=${KARPENTER_VERSION}" \
            -o "${BIN_DIR}/karpenter-kwok" sigs.k8s.io/karpenter/kwok)
        src="$(cd "${dir}" && "${GO}" list -m -f '{{.Dir}}' sigs.k8s.io/karpenter)"
        copy_crds karpenter "${src}/pkg/apis/crds" "${src}/kwok/apis/crds"
        echo "${KARPENTER_VERSION}" >"${BIN_DIR}/.stamp-karpenter"
        log "karpenter ${KARPENTER_VERSION}: built in $((SECONDS - start))s"
    )
}

build_containerd() {
    if stamp_ok containerd "${CONTAINERD_VERSION}" containerd ctr containerd-shim-runc-v2; then
        log "containerd ${CONTAINERD_VERSION}: up to date"
        return
    fi
    local start=${SECONDS} dir module=github.com/containerd/containerd/v2
    local cmds=("${module}/cmd/containerd" "${module}/cmd/ctr" "${module}/cmd/containerd-shim-runc-v2")
    dir="$(write_wrapper containerd "${module}" "${CONTAINERD_VERSION}" "${CONTAINERD_VERSION}" "${cmds[@]}")"
    log "containerd ${CONTAINERD_VERSION}: building"
    # Snapshotters the test bed does not use need cgo or kernel features it lacks.
    (cd "${dir}" && "${GO}" build -trimpath -tags "no_btrfs no_devmapper no_zfs no_aufs" \
        -ldflags="-s -w -X ${module}/version.Version=${CONTAINERD_VERSION}" \
        -o "${BIN_DIR}/" "${cmds[@]}")
    echo "${CONTAINERD_VERSION}" >"${BIN_DIR}/.stamp-containerd"
    log "containerd ${CONTAINERD_VERSION}: built in $((SECONDS - start))s"
}

build_kube_router() {
    if stamp_ok kube-router "${KUBE_ROUTER_VERSION}" kube-router; then
        log "kube-router ${KUBE_ROUTER_VERSION}: up to date"
        return
    fi
    local start=${SECONDS} dir module=github.com/cloudnativelabs/kube-router/v2
    dir="$(write_wrapper kube-router "${module}" "${KUBE_ROUTER_VERSION}" "${KUBE_ROUTER_VERSION}" \
        "${module}/cmd/kube-router")"
    log "kube-router ${KUBE_ROUTER_VERSION}: building"
    (cd "${dir}" && "${GO}" build -trimpath \
        -ldflags="-s -w -X ${module}/pkg/version.Version=${KUBE_ROUTER_VERSION}" \
        -o "${BIN_DIR}/kube-router" "${module}/cmd/kube-router")
    echo "${KUBE_ROUTER_VERSION}" >"${BIN_DIR}/.stamp-kube-router"
    log "kube-router ${KUBE_ROUTER_VERSION}: built in $((SECONDS - start))s"
}

# The plugins of the test bed's Corefile, in CoreDNS's plugin order (plugin.cfg): a main
# package of our own links only these, as CoreDNS documents for custom builds.
COREDNS_PLUGINS=(reload health ready errors log loop cache kubernetes loadbalance)

build_coredns() {
    local stamp="${COREDNS_VERSION}+plugins=$(IFS=,; echo "${COREDNS_PLUGINS[*]}")"
    if stamp_ok coredns "${stamp}" coredns && [[ -f "${IMAGE_DIR}/coredns.oci.tar" ]]; then
        log "coredns ${COREDNS_VERSION}: up to date"
        return
    fi
    local start=${SECONDS} dir="${WRAPPERS}/coredns-${COREDNS_VERSION}" p
    mkdir -p "${dir}"
    {
        echo "package main"
        echo
        echo "import ("
        echo '    "github.com/coredns/coredns/core/dnsserver"'
        echo '    "github.com/coredns/coredns/coremain"'
        for p in "${COREDNS_PLUGINS[@]}"; do
            echo "    _ \"github.com/coredns/coredns/plugin/${p}\""
        done
        echo ")"
        echo
        echo "func init() {"
        printf '    dnsserver.Directives = []string{'
        printf '"%s", ' "${COREDNS_PLUGINS[@]}"
        echo "}"
        echo "}"
        echo
        echo "func main() { coremain.Run() }"
    } >"${dir}/main.go"
    dir="$(write_wrapper coredns github.com/coredns/coredns "${COREDNS_VERSION}" "${COREDNS_VERSION}")"
    log "coredns ${COREDNS_VERSION}: building (plugins: ${COREDNS_PLUGINS[*]})"
    (cd "${dir}" && "${GO}" build -trimpath \
        -ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit=${COREDNS_VERSION}" \
        -o "${BIN_DIR}/coredns" .)
    pack_image coredns "${COREDNS_IMAGE}" "${BIN_DIR}/coredns" /coredns
    echo "${stamp}" >"${BIN_DIR}/.stamp-coredns"
    log "coredns ${COREDNS_VERSION}: built in $((SECONDS - start))s"
}

# The pod sandbox image, compiled from the Kubernetes release's own pause.c (no registry here).
build_pause() {
    if stamp_ok pause "${PAUSE_IMAGE}" && [[ -f "${IMAGE_DIR}/pause.oci.tar" ]]; then
        log "pause ${PAUSE_IMAGE}: up to date"
        return
    fi
    local start=${SECONDS} src
    src="$("${GO}" mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')/build/pause/linux/pause.c"
    log "pause: compiling ${src##*/} (static) for ${PAUSE_IMAGE}"
    mkdir -p "${WRAPPERS}/pause"
    gcc -Os -Wall -Werror -static -DVERSION="${PAUSE_IMAGE##*:}" -o "${WRAPPERS}/pause/pause" "${src}"
    strip "${WRAPPERS}/pause/pause"
    pack_image pause "${PAUSE_IMAGE}" "${WRAPPERS}/pause/pause" /pause
    echo "${PAUSE_IMAGE}" >"${BIN_DIR}/.stamp-pause"
    log "pause: built in $((SECONDS - start))s"
}

# pack_image NAME REF BINARY PATH: a one-binary image (BINARY at PATH, its entrypoint) as the
# OCI archive ${IMAGE_DIR}/NAME.oci.tar, for `ctr images import`.
pack_image() {
    local name="$1" ref="$2" binary="$3" path="$4" ctr
    ctr="$(buildah from --pull-never scratch)"
    buildah copy --quiet "${ctr}" "${binary}" "${path}" >/dev/null
    buildah config --entrypoint "[\"${path}\"]" --user 65535:65535 "${ctr}"
    buildah commit --rm --quiet "${ctr}" "${ref}" >/dev/null
    mkdir -p "${IMAGE_DIR}"
    rm -f "${IMAGE_DIR}/${name}.oci.tar"
    buildah push --quiet "${ref}" "oci-archive:${IMAGE_DIR}/${name}.oci.tar:${ref}"
    buildah rmi "${ref}" >/dev/null
}

# copy_crds NAME DIR...: the CRD manifests of a component, into ${BIN_DIR}/../crds/NAME.
copy_crds() {
    local name="$1"
    shift
    local out="${BIN_DIR}/../crds/${name}"
    rm -rf "${out}"
    mkdir -p "${out}"
    local d
    for d in "$@"; do
        cp "${d}"/*.yaml "${out}/"
    done
    chmod -R u+w "${out}"
}

components=("$@")
if [[ ${#components[@]} -eq 0 ]]; then
    components=(etcd kubernetes kwok helm containerd kube-router coredns pause prometheus keda karpenter)
fi
total_start=${SECONDS}
# What real nodes run from Debian: runc, the CNI plugins, and the tools kube-proxy and
# kube-router call (iptables, ipset, conntrack); buildah packs the node's own images; nft lets
# the clean-host check read the nftables rule set the iptables-nft rules live in.
if [[ " ${components[*]} " =~ \ (containerd|kube-router|coredns|pause)\  ]]; then
    # shellcheck source=../host-packages.sh
    source "${HERE}/../host-packages.sh"
    ensure_host_packages runc containernetworking-plugins iptables ipset conntrack buildah nftables
fi
for c in "${components[@]}"; do
    case "${c}" in
        etcd) build_etcd ;;
        kubernetes) build_kubernetes ;;
        kwok) build_kwok ;;
        helm) build_helm ;;
        containerd) build_containerd ;;
        kube-router) build_kube_router ;;
        coredns) build_coredns ;;
        pause) build_pause ;;
        prometheus) build_prometheus ;;
        keda) build_keda ;;
        karpenter) build_karpenter ;;
        *)
            echo "build.sh: unknown component '${c}' (etcd kubernetes kwok helm containerd kube-router coredns pause prometheus keda karpenter)" >&2
            exit 2
            ;;
    esac
done
log "done in $((SECONDS - total_start))s; binaries in ${BIN_DIR}"
