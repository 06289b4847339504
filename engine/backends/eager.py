"""Eager backend: the generator's own PyTorch code, unchanged, in the precision that suits the device.

CPU: float32, nothing installed (a true no-op). CUDA: half precision when the model allows it, proved by a frame
compared with the float32 frame (see choose_precision); cuDNN autotuning for the fixed shapes; channels_last only
where a timed A/B at setup shows it is faster.
"""

from __future__ import annotations

import torch

from engine.backends.common import (BackendRunner, StateSnapshot, cast_modules, compare, install, render_frame,
                                    time_frames, uninstall)
from engine.errors import SetupError

_NAMES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def parse_dtype(dtype) -> torch.dtype | None:
    """'auto'/None -> None; 'fp16'/'bf16'/'fp32' or a torch.dtype -> that dtype."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() in _NAMES:
        return _NAMES[str(dtype).lower()]
    raise SetupError(f"unknown precision {dtype!r}; use auto, fp32, fp16 or bf16")


def candidate_dtypes(generator, dtype) -> list[torch.dtype]:
    """Precisions to try, best first: `dtype` itself (one, or a list tried in order), else on CUDA the
    generator's `backend_dtypes` when it declares them (e.g. (torch.float32,) for a network that runs its own
    mixed precision, like NVlabs StyleGAN2's fp16 top layers) or fp16 -> bf16 -> fp32; on CPU fp32."""
    if isinstance(dtype, (list, tuple)):
        return [parse_dtype(d) for d in dtype]
    forced = parse_dtype(dtype)
    if forced is not None:
        return [forced]
    if generator.device.type != "cuda":
        return [torch.float32]
    declared = getattr(generator, "backend_dtypes", None)
    if declared:
        return list(declared)
    if any(hasattr(m, "num_fp16_res") for m in generator.modules().values()):
        # NVlabs StyleGAN synthesis: fp16 on its top num_fp16_res resolutions with conv_clamp, fp32 below, by
        # design. Casting its weights would only lose precision (it casts them back per layer).
        return [torch.float32]
    return [torch.float16, torch.bfloat16, torch.float32]


class Precision:
    """Outcome of choose_precision: the dtype, what was tried, and how to undo the cast."""

    def __init__(self, dtype: torch.dtype, notes: list[str], snapshot: StateSnapshot | None):
        self.dtype, self.notes, self.snapshot = dtype, notes, snapshot

    def undo(self) -> None:
        if self.snapshot is not None:
            self.snapshot.restore()
        self.dtype = torch.float32


def choose_precision(generator, modules, dtype="auto", ref: torch.Tensor | None = None) -> Precision:
    """Try the candidate precisions in order; keep the first whose frame is finite and within tolerance of the
    float32 frame `ref` (rendered here when None and needed). Modules are cast in place and left without runners
    (callers install their own with the chosen dtype). A forced precision that fails raises."""
    candidates = candidate_dtypes(generator, dtype)
    notes: list[str] = []
    snapshot = None
    for dt in candidates:
        if dt == torch.float32:
            return Precision(torch.float32, notes, snapshot)
        if ref is None:
            ref = render_frame(generator)
        if snapshot is None:
            snapshot = StateSnapshot(modules)
        cast_modules(modules, dt)
        try:
            install(modules, lambda role, m: BackendRunner(m, role, dtype=dt))
            try:
                ok, how = compare(render_frame(generator), ref)
            finally:
                uninstall(modules)
        except Exception as e:  # dtype mismatch inside the model, unsupported kernel, ...
            ok, how = False, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        name = str(dt).removeprefix("torch.")
        if ok:
            notes.append(f"{name} vs float32: {how}")
            return Precision(dt, notes, snapshot)
        notes.append(f"{name} rejected ({how})")
        snapshot.restore()
    if len(candidates) == 1 and not isinstance(dtype, (list, tuple)) and parse_dtype(dtype) is not None:
        raise SetupError(f"precision {dtype} does not work for generator {generator.name!r}: {notes[-1]}")
    return Precision(torch.float32, notes, snapshot)


def set_channels_last(modules, on: bool) -> None:
    fmt = torch.channels_last if on else torch.contiguous_format
    with torch.no_grad():
        for m in modules.values():
            for p in m.parameters():
                if p.dim() == 4:
                    p.data = p.data.contiguous(memory_format=fmt)


def apply_eager(generator, *, dtype="auto", channels_last=None, **_ignored) -> tuple[object, str]:
    cuda = generator.device.type == "cuda"
    modules = generator.modules()
    parts = [f"eager on {generator.device}"]
    if cuda:
        torch.backends.cudnn.benchmark = True  # shapes are fixed: let cuDNN time its algorithms once
    if not modules or (not cuda and candidate_dtypes(generator, dtype) == [torch.float32] and not channels_last):
        parts.append("float32" if not cuda or not modules else "generator's own precision (no modules exposed)")
        return generator, ", ".join(parts)

    prec = choose_precision(generator, modules, dtype)
    if prec.dtype != torch.float32:
        install(modules, lambda role, m: BackendRunner(m, role, dtype=prec.dtype))
    parts.append(str(prec.dtype).removeprefix("torch."))
    if channels_last or (channels_last is None and cuda):
        if channels_last is None:
            # "Where it helps": time both layouts on this GPU and keep the faster (a few frames at setup).
            before = time_frames(generator)
            set_channels_last(modules, True)
            after = time_frames(generator)
            keep = after < 0.95 * before
            if not keep:
                set_channels_last(modules, False)
            parts.append(f"channels_last {'on' if keep else 'off'} ({after * 1e3:.2f} vs {before * 1e3:.2f} ms/frame)")
        else:
            set_channels_last(modules, True)
            parts.append("channels_last")
    parts.extend(prec.notes)
    return generator, ", ".join(parts)
