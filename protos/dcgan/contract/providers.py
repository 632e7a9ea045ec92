"""How dcgan-serving opens onnxruntime: one policy for export's parity checks and the server.

- Telemetry off. onnxruntime's Linux wheels carry Microsoft telemetry that is on by default (a
  device id under ~/.cache/Microsoft, uploads to events.data.microsoft.com). It reads the setting
  when it is imported, so this module sets it and then imports onnxruntime for everyone else:
  `from dcgan.contract.providers import ort`. A user may still turn it on.
- Providers read back, never assumed. onnxruntime-gpu falls back to the CPU without a word when
  CUDA cannot start, so callers check `session.get_providers()`.
- CUDA in true float32 (`use_tf32=0`): onnxruntime's default TF32 convolutions would compute
  something other than what the float32 parity checks prove, and the server serves what they
  proved.

No torch here. onnxruntime is a dependency of the packages that open sessions (dcgan-export,
dcgan-serve), not of dcgan-protos: the clients never import this module.
"""

from __future__ import annotations

import os
from pathlib import Path

TELEMETRY_SETTING = "ORT_DISABLE_TELEMETRY"
os.environ.setdefault(TELEMETRY_SETTING, "1")
import onnxruntime as ort  # noqa: E402  (after the setting, which it reads on import)

__all__ = [
    "CPU",
    "CUDA",
    "CUDA_OPTIONS",
    "Providers",
    "cuda_unavailable_reason",
    "ort",
    "session_providers",
]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
CUDA_OPTIONS = {"use_tf32": "0"}
NVIDIA_CONTROL_DEVICE = Path("/dev/nvidiactl")

Providers = list[str | tuple[str, dict[str, str]]]


def session_providers(provider: str) -> Providers:
    """The `providers` argument for a session on `provider`: CUDA with its options, CPU behind."""
    return [CPU] if provider == CPU else [(CUDA, CUDA_OPTIONS), CPU]


def cuda_unavailable_reason() -> str | None:
    """Why a CUDA session will not be tried here, or None when it will be.

    A machine without an NVIDIA device is skipped at once: onnxruntime-gpu would spend seconds
    failing to start CUDA there, then run on the CPU anyway.
    """
    if CUDA not in ort.get_available_providers():
        return "this onnxruntime has no CUDA provider"
    if not NVIDIA_CONTROL_DEVICE.exists():
        return "no NVIDIA device on this machine"
    if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from the nvidia-* wheels, if installed
        ort.preload_dlls()
    return None
