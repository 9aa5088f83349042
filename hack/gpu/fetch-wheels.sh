#!/usr/bin/env bash
# Fill hack/gpu/wheels with what `device-run.sh` installs offline on a GPU machine that already has
# torch, numpy, onnxruntime and the CUDA wheels: the locked runtime dependencies minus those, the
# gpu test tier's pytest, and hatchling to install the workspace packages without an index.
# Run where PyPI is reachable; the folder plus the repository must stay under 64 MiB.
#
#   DEVICE_PYTHON=3.12 hack/gpu/fetch-wheels.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
UV=${UV:-python3 -m uv}
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}
# TorchCodec follows torch's minor version: 0.16 is the first for torch 2.11, the device's torch.
DEVICE_TORCHCODEC=${DEVICE_TORCHCODEC:-0.16.0}
LIMIT_MIB=${LIMIT_MIB:-56}
WHEELS=hack/gpu/wheels
# On the device already, or only for charts the device run does not draw.
PRESENT='^(numpy|onnxruntime|torch|triton|sympy|mpmath|networkx|jinja2|markupsafe|filelock|ml-dtypes|cuda-.*|nvidia-.*|matplotlib|contourpy|cycler|fonttools|kiwisolver|pillow|pyparsing|python-dateutil|six)=='
# Imported only where used, and the device run uses neither: PyAV (H.264 streams; H100 and A100
# have no NVENC) and eSpeak NG (the demo's speech).
UNUSED='^(av|espeakng-loader)=='
mkdir -p "$WHEELS"
$UV export --frozen --no-dev --no-emit-workspace --no-hashes --package lipsync-bench \
  --package lipsync-engine-builder --package lipsync-server --extra torch \
  | grep -E '^[a-z0-9]' | sed 's/ ;.*//' | grep -Ev "$PRESENT" | grep -Ev "$UNUSED" \
  | sed "s/^torchcodec==.*/torchcodec==${DEVICE_TORCHCODEC}/" > "$WHEELS/requirements.txt"
printf '%s\n' pytest==9.2.0 pytest-timeout==2.4.0 pluggy iniconfig packaging \
  hatchling==1.33.0 pathspec trove-classifiers >> "$WHEELS/requirements.txt"
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" \
  --python-version "$DEVICE_PYTHON" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  -r "$WHEELS/requirements.txt"
size=$(du -sm "$WHEELS" | cut -f1)
if [ "$size" -gt "$LIMIT_MIB" ] && compgen -G "$WHEELS/opencv_python_headless-*.whl" >/dev/null; then
  # OpenCV alone is about 60 MB: without it the PyTorch modes and the gpu tier still run; the
  # served step needs cv2 on the machine.
  rm "$WHEELS"/opencv_python_headless-*.whl
  echo "left out opencv-python-headless to stay under ${LIMIT_MIB} MiB" >&2
  size=$(du -sm "$WHEELS" | cut -f1)
fi
echo "$WHEELS: $(ls "$WHEELS"/*.whl | wc -l) wheels, ${size} MiB"
if [ "$size" -gt "$LIMIT_MIB" ]; then
  echo "more than ${LIMIT_MIB} MiB: drop what the device already has (edit PRESENT)" >&2
  exit 1
fi
