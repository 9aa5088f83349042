#!/usr/bin/env bash
# Cold CI: `bash .ci/run` on a clean clone of HEAD with an empty HOME, so nothing is cached:
# no uv or wheel cache, no Go module or build cache, no test-bed binaries (~/.cache/lipsync),
# no Go toolchain download. Prints the timeline of the run and its wall time.
#
# Usage: benchmarks/cold_ci.sh [WORK_DIR]   (default: a new /tmp/lipsync-cold-ci.XXXXXX)
# The clone, the empty HOME and the full log (ci.log) stay in WORK_DIR.
set -uo pipefail

repo="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
work="${1:-$(mktemp -d /tmp/lipsync-cold-ci.XXXXXX)}"
mkdir -p "${work}/home"
git clone --quiet "${repo}" "${work}/src"
echo "cold CI of $(git -C "${work}/src" log -1 --format='%h %s')"
echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg)"

start=$(date +%s)
echo "started $(date -u '+%Y-%m-%d %H:%M:%S') UTC; log: ${work}/ci.log"
HOME="${work}/home" bash "${work}/src/.ci/run" >"${work}/ci.log" 2>&1
rc=$?
elapsed=$(($(date +%s) - start))

grep -E 'test-all: |build\.sh: .*(built in|done in)|^=+ .* in [0-9.]+s' "${work}/ci.log"
printf 'exit %d after %d s (%d min %02d s); load at the end %s\n' \
    "${rc}" "${elapsed}" $((elapsed / 60)) $((elapsed % 60)) "$(cut -d' ' -f1-3 /proc/loadavg)"
exit "${rc}"
