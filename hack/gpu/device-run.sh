#!/usr/bin/env bash
# A prepared device run (hack/gpu/README.md): PyTorch modes of the reference UNet-328 at batch
# 1, 8, 32 (CUDA events), `lipsync serve --backend torch` under `lipsync bench run` at 1..64
# streams, and the gpu test tier; JSON + Markdown under $OUT. No network: wheels the machine
# lacks come from hack/gpu/wheels (hack/gpu/fetch-wheels.sh fills it beforehand).
#
#   OUT=/tmp/out hack/gpu/device-run.sh                                   # on a GPU machine
#   OUT=/tmp/out LIPSYNC_DEVICE=cpu LIPSYNC_DRY_RUN=1 hack/gpu/device-run.sh   # CPU dry run (CI)
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the folder for the report}"
PYTHON=${PYTHON:-python3}
export LIPSYNC_DEVICE=${LIPSYNC_DEVICE:-cuda}
export LIPSYNC_BUDGET_S=${LIPSYNC_BUDGET_S:-480}  # the whole run stays under 9 minutes
mkdir -p "$OUT"

if ! "$PYTHON" -c "import lipsync_server, lipsync_bench, lipsync_engine_builder" 2>/dev/null; then
  if compgen -G "hack/gpu/wheels/*.whl" >/dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --no-deps hack/gpu/wheels/*.whl
  fi
  # The workspace packages, offline (hatchling comes from the wheels folder).
  "$PYTHON" -m pip install --quiet --no-index --no-deps --no-build-isolation \
    ./core ./engine_builder ./server ./bench
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
OUT=$OUT "$PYTHON" hack/gpu/device_run.py
