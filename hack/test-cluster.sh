#!/usr/bin/env bash
# The cluster tier (`make cluster`, and the last step of `make test`).
#
# Its tests mostly wait (kubelets, grace periods, the operator's resync, Karpenter's
# consolidation), so they run in LIPSYNC_CLUSTER_WORKERS pytest workers (default 2), each with
# its own test beds on its own network slot. A module runs whole in one worker (its chart install
# is module-scoped), and the modules on the autoscaling test bed share one
# (lipsync_testbed.workers). Tests marked `alone` compare the whole host before and after, so
# they run last, with no other test bed beside them.
#
# Environment: UV (uv command, default `python3 -m uv`), PYTEST_ARGS (extra pytest arguments),
# LIPSYNC_CLUSTER_WORKERS (1 runs everything in one process, in order).
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a uv <<<"${UV:-python3 -m uv}"
read -r -a pytest_args <<<"${PYTEST_ARGS:-}"
workers="${LIPSYNC_CLUSTER_WORKERS:-2}"

if [[ "${workers}" -le 1 ]]; then
    exec "${uv[@]}" run pytest -m cluster "${pytest_args[@]}"
fi
"${uv[@]}" run pytest -m "cluster and not alone" -n "${workers}" --dist loadscope \
    --no-loadscope-reorder "${pytest_args[@]}"
"${uv[@]}" run pytest -m "cluster and alone" "${pytest_args[@]}"
