#!/usr/bin/env bash
# Everything `make test` (and CI) runs: lint, types, then every test tier.
#
# The cluster tier needs the Go-built test bed (hack/cluster/build.sh, cached in
# ~/.cache/lipsync) and the project's images (images/build.sh, out/images). On a
# cold machine that build is the longest step, so it starts first, in the
# background at the lowest CPU priority, and compiles while the unit, component
# and gpu tiers run; the cluster tier then waits for it.
# Helm comes first, beside lint and types, because the chart's unit tests render
# with it (without it they would be skipped). A warm cache makes both builds
# one-second no-ops.
#
# Environment: UV (uv command, default `python3 -m uv`), PYTEST_ARGS (extra
# pytest arguments for both runs), LIPSYNC_BUILD_LOG (build log file).
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a uv <<<"${UV:-python3 -m uv}"
read -r -a pytest_args <<<"${PYTEST_ARGS:-}"
build_log="${LIPSYNC_BUILD_LOG:-${TMPDIR:-/tmp}/lipsync-cluster-build.$$.log}"
start=${SECONDS}

stamp() { printf '%s test-all: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# Its own session, so that an early exit can stop the whole build (go and its compilers).
build_pid=
start_build() {
    setsid nice -n "$1" "${@:2}" >>"${build_log}" 2>&1 &
    build_pid=$!
}
stop_build() {
    # The group once setsid has run; the process itself if it has not yet.
    [[ -z "${build_pid}" ]] || kill -- "-${build_pid}" 2>/dev/null || kill "${build_pid}" 2>/dev/null || true
}
wait_build() {
    if ! wait "${build_pid}"; then
        tail -n 40 "${build_log}" >&2
        stamp "test bed build failed (full log: ${build_log})" >&2
        exit 1
    fi
}
trap stop_build EXIT

start_build 0 hack/cluster/build.sh helm
stamp "building helm beside lint and types (log: ${build_log})"
"${uv[@]}" run ruff check .
"${uv[@]}" run ruff format --check .
"${uv[@]}" run mypy
stamp "lint and types passed after $((SECONDS - start))s"
wait_build

# The real nodes of the cluster tier run the project's images (`make images`).
start_build 19 bash -c 'hack/cluster/build.sh && images/build.sh'
stamp "rest of the test bed and the images building in the background"
# The gateway's page runs in headless Chromium (tests/component/test_gateway_browser.py).
source hack/host-packages.sh
ensure_host_packages chromium
LIPSYNC_REQUIRE_HELM=1 "${uv[@]}" run pytest -m "not cluster" "${pytest_args[@]}"
stamp "unit, component and gpu tiers passed after $((SECONDS - start))s"

if kill -0 "${build_pid}" 2>/dev/null; then
    stamp "waiting for the test bed build: $(grep 'build.sh:' "${build_log}" | tail -n 1)"
fi
wait_build
trap - EXIT
grep 'build.sh: .*built in\|build.sh: done\|images: ' "${build_log}" || true
stamp "test bed ready after $((SECONDS - start))s"

hack/test-cluster.sh
stamp "all tiers passed in $((SECONDS - start))s"
