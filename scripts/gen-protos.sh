#!/usr/bin/env bash
# Regenerate the committed Python stubs beside their .proto files (a test checks they match):
#   protos/dcgan/v1/generator.proto  dcgan.v1, with its grpc stubs
#   protos/dcgan/oip/inference.proto the Open Inference Protocol's messages (package `inference`),
#     built into a descriptor pool of their own, POOL: tritonclient registers the same names in
#     protobuf's default pool, and both must import in one process. Its servicer is registered
#     from the service descriptor (dcgan.service.inference), so it has no grpc stub.
# Usage: bash scripts/gen-protos.sh [OUT_ROOT]   (default: protos)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-protos}"
python -m grpc_tools.protoc -Iprotos --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
    protos/dcgan/v1/generator.proto
python -m grpc_tools.protoc -Iprotos --python_out="$out" --pyi_out="$out" \
    protos/dcgan/oip/inference.proto
stub="$out/dcgan/oip/inference_pb2.py"
default_pool="DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
if ! grep -qF "$default_pool" "$stub"; then
    echo "gen-protos.sh: $stub does not add its file to the default pool as expected" >&2
    exit 1
fi
sed -i "s/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile(/" "$stub"
sed -i "s/^DESCRIPTOR: _descriptor.FileDescriptor$/POOL: _descriptor_pool.DescriptorPool\nDESCRIPTOR: _descriptor.FileDescriptor/; s/^from google.protobuf import descriptor as _descriptor$/&\nfrom google.protobuf import descriptor_pool as _descriptor_pool/" "$out/dcgan/oip/inference_pb2.pyi"
