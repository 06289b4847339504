"""Device selection shared by every command (`--device auto|cpu|cuda[:N]|mps`).

auto: CUDA when available, else Apple's GPU through MPS (Apple Silicon: Syphon users generate on their own GPU),
else the CPU. MPS is written against torch's documented API (torch.backends.mps) and unverified here (no Mac):
frames cross host memory on the way to GL (the staged upload), as on the CPU.
"""

from __future__ import annotations

import torch

from engine.errors import SetupError, UsageError

DEVICES = "auto, cpu, cuda, cuda:N or mps"


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str) -> torch.device:
    """auto = CUDA, else MPS, else CPU. UsageError for a malformed name, SetupError for a device this machine
    does not have."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use {DEVICES}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SetupError(f"--device {name}: no CUDA device is available (torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SetupError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        if dev.index is None:  # "cuda" means the current device; name it, so EGL matching and interop use the same one
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type == "mps":
        if not mps_available():
            built = getattr(getattr(torch.backends, "mps", None), "is_built", lambda: False)()
            why = "this torch has MPS but macOS or the Mac does not offer it (macOS 12.3+ on Apple Silicon)" if built \
                else "this torch was built without MPS (it is a macOS build's feature)"
            raise SetupError(f"--device mps: {why}; use --device cpu")
        dev = torch.device("mps")
    elif dev.type != "cpu":
        raise UsageError(f"unsupported device {name!r}; use {DEVICES}")
    return dev
