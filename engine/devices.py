"""Device selection shared by every command (`--device auto|cpu|cuda[:N]`)."""

from __future__ import annotations

import torch

from engine.errors import SetupError, UsageError


def resolve_device(name: str) -> torch.device:
    """auto = CUDA when available, else CPU. UsageError for a malformed name, SetupError for a CUDA device this
    machine does not have."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SetupError(f"--device {name}: no CUDA device is available (torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SetupError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        if dev.index is None:  # "cuda" means the current device; name it, so EGL matching and interop use the same one
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise UsageError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return dev
