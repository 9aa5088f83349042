#!/usr/bin/env bash
# Regenerate the Python modules of protos/ into server/src/lipsync_server/_generated/ (or $1).
# Imports are rewritten to package-absolute ones so the modules live inside lipsync_server.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/server/src/lipsync_server/_generated}"
mkdir -p "$out"
rm -rf "$out/lipsync" "$out/inference"
python -m grpc_tools.protoc \
  --proto_path="$root/protos" \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  lipsync/v1/lipsync.proto inference/grpc_service.proto
find "$out" -name '*.py' -o -name '*.pyi' | while read -r file; do
  sed -i -E \
    -e 's/^from (lipsync\.v1|inference) import /from lipsync_server._generated.\1 import /' \
    -e 's/^import (lipsync\.v1|inference)\.([a-z_0-9]+)$/import lipsync_server._generated.\1.\2/' \
    -e 's/([^.a-z_])(lipsync\.v1|inference)\.([a-z_0-9]+_pb2)\./\1lipsync_server._generated.\2.\3./g' \
    "$file"
done
# The OIP messages live in a private descriptor pool: OIP client packages (tritonclient) register
# the same message names in the default pool, and both must load in one process.
sed -i -e 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile(/' \
  "$out/inference/grpc_service_pb2.py"
for dir in "$out" "$out/lipsync" "$out/lipsync/v1" "$out/inference"; do
  [ -f "$dir/__init__.py" ] || echo '"""Generated from protos/ by server/generate_protos.sh; do not edit."""' > "$dir/__init__.py"
done
