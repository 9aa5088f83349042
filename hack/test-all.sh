#!/usr/bin/env bash
# Everything `make test` (and CI) runs: lint, types, then every test tier.
#
# The cluster tier needs the Go-built test bed (hack/cluster/build.sh, cached in
# ~/.cache/lipsync). On a cold machine that build is the longest step, so it
# starts first, in the background at the lowest CPU priority, and compiles while
# lint, types and the unit, component and gpu tiers run; the cluster tier then
# waits for it. A warm cache makes the build a one-second no-op.
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
setsid nice -n 19 hack/cluster/build.sh >"${build_log}" 2>&1 &
build_pid=$!
stop_build() { kill -- "-${build_pid}" 2>/dev/null || true; }
trap stop_build EXIT
stamp "test bed build started in the background (log: ${build_log})"

"${uv[@]}" run ruff check .
"${uv[@]}" run ruff format --check .
"${uv[@]}" run mypy
stamp "lint and types passed after $((SECONDS - start))s"

"${uv[@]}" run pytest -m "not cluster" "${pytest_args[@]}"
stamp "unit, component and gpu tiers passed after $((SECONDS - start))s"

if kill -0 "${build_pid}" 2>/dev/null; then
    stamp "waiting for the test bed build: $(grep 'build.sh:' "${build_log}" | tail -n 1)"
fi
if ! wait "${build_pid}"; then
    tail -n 40 "${build_log}" >&2
    stamp "test bed build failed (full log: ${build_log})" >&2
    exit 1
fi
trap - EXIT
grep 'build.sh: .*built in\|build.sh: done' "${build_log}" || true
stamp "test bed ready after $((SECONDS - start))s"

"${uv[@]}" run pytest -m cluster "${pytest_args[@]}"
stamp "all tiers passed in $((SECONDS - start))s"
