import os

# onnxruntime's Linux wheels carry Microsoft telemetry that is on by default (a device id under
# ~/.cache/Microsoft, uploads to events.data.microsoft.com): off, unless a user turns it on.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
