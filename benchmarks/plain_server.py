"""The baseline the service is held against: a plain gRPC server, as one would write it first.

A thread-pool grpc server whose Generate runs onnxruntime once per request, with no batching,
speaking the same dcgan.v1 API (packed latents, uint8 output) so dcgan-bench can load both.
Usage: python benchmarks/plain_server.py EXPORT_DIR PORT
"""

from __future__ import annotations

import sys
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from dcgan.contract.manifest import ONNX_SERVING, read_manifest
from dcgan.contract.providers import ort
from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc

MAX_LATENTS_PER_REQUEST = 256  # as dcgan-serve's default; dcgan-bench checks --latents against it


class PlainGenerator(pb_grpc.GeneratorServicer):
    def __init__(self, export_dir: Path) -> None:
        manifest = read_manifest(export_dir)
        self.nz = manifest.model.nz
        self.session = ort.InferenceSession(
            str(export_dir / manifest.file_of(ONNX_SERVING)), providers=["CPUExecutionProvider"]
        )

    def Generate(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> pb.GenerateResponse:
        latents = np.frombuffer(request.packed, dtype="<f4").reshape(-1, self.nz)
        (pixels,) = self.session.run(["pixels"], {"z": latents})
        return pb.GenerateResponse(shape=pixels.shape, dtype="uint8", data=pixels.tobytes())

    def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> pb.ModelInfo:
        return pb.ModelInfo(nz=self.nz, max_latents_per_request=MAX_LATENTS_PER_REQUEST)


def main() -> None:
    export_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_GeneratorServicer_to_server(PlainGenerator(export_dir), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
