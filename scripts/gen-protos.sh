#!/usr/bin/env bash
# Regenerate the Python stubs of protos/dcgan/v1/*.proto beside them (committed; a test checks
# they match). Usage: bash scripts/gen-protos.sh [OUT_ROOT]   (default: protos)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-protos}"
python -m grpc_tools.protoc -Iprotos --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
    protos/dcgan/v1/generator.proto
