"""Layout conversion at the generator -> texture boundary.

    in : image (1, 3, H, W) float (fp16/bf16/fp32), nominally [-1, 1], row 0 = top
    out: (H, W, 4) uint8 RGBA (for RGBA8 textures) or float16 RGBA in [0, 1] (for RGBA16F), alpha = 1,
         row 0 = top (the vertical flip for GL's bottom-left origin happens in the present shader, not here).

`to_rgba_torch` is the reference. Byte values follow the NVlabs convention: (x * 127.5 + 128).clamp(0, 255),
truncated to uint8 (the seeds' `img * 127.5 + 128).clamp(0, 255).to(torch.uint8)`).

`to_rgba` / `from_rgba` are what the uploaders call: on CUDA they run one fused Triton kernel
(engine.kernels.layout_triton, same numerics, bit-identical bytes) when triton imports, otherwise the torch reference.
CPU tensors always take the torch path (Triton has no CPU backend; tests run the kernels through its interpreter).
"""

from __future__ import annotations

import torch


def to_rgba_torch(image: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write `image` (1, 3, H, W) into preallocated `out` (H, W, 4) uint8 or float16. Returns `out`."""
    rgb = image[0].permute(1, 2, 0)  # (H, W, 3) view, no copy
    if out.dtype == torch.uint8:
        out[..., :3].copy_((rgb.float() * 127.5 + 128).clamp_(0, 255))  # copy_ to uint8 truncates
        out[..., 3].fill_(255)
    else:
        out[..., :3].copy_((rgb.float() * 0.5 + 0.5).clamp_(0, 1))
        out[..., 3].fill_(1)
    return out


def from_rgba_torch(rgba: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Inverse direction (texture -> generator source): (H, W, 4) uint8/float16 into preallocated (1, 3, H, W)
    float in [-1, 1]. Returns `out`."""
    rgb = rgba[..., :3].permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W) view
    if rgba.dtype == torch.uint8:
        out.copy_(rgb.float() / 127.5 - 1.0)
    else:
        out.copy_(rgb.float() * 2.0 - 1.0)
    return out


_triton_state: dict[str, object] = {}


def foreign_llvm_loaded() -> str | None:
    """The path of a system libLLVM already mapped into this process (Mesa's llvmpipe loads one with its GL
    context), or None. Importing triton (which carries its own LLVM) after it segfaults the process (seen with
    Mesa 22.3 / LLVM 15 and triton 3.9); triton first, then Mesa, works."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                if "libLLVM" in line:
                    return line.split()[-1]
    except OSError:
        pass
    return None


def _triton_module():
    """engine.kernels.layout_triton, or None when triton is missing, broken or cannot be loaded safely (then the torch
    path is used, and `triton_unavailable_reason()` says why). Imported on first use, not at import: triton is
    optional and slow to import."""
    if "module" not in _triton_state:
        import sys

        llvm = None if "triton" in sys.modules else foreign_llvm_loaded()
        if llvm is not None:
            _triton_state["module"] = None
            _triton_state["reason"] = (f"triton not loaded: {llvm} (Mesa GL) is already in this process and triton's "
                                       "own LLVM would crash it; call engine.kernels.layout.preload_triton() before creating "
                                       "the GL context")
            return None
        try:
            from engine.kernels import layout_triton

            _triton_state["module"] = layout_triton
        except Exception as exc:  # ImportError, or a triton that fails to initialise (no driver, bad install)
            _triton_state["module"] = None
            _triton_state["reason"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return _triton_state["module"]


def preload_triton() -> str | None:
    """Import the Triton kernels now (setup, before any GL context exists). Returns None, or why they are not
    available. Only worth calling when frames will be on CUDA."""
    _triton_module()
    return _triton_state.get("reason")  # type: ignore[return-value]


def triton_unavailable_reason() -> str | None:
    """None when the Triton kernels are usable on CUDA, else why not (for `engine info`)."""
    _triton_module()
    return _triton_state.get("reason")  # type: ignore[return-value]


def to_rgba(image: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Dispatcher: (1, 3, H, W) float -> preallocated (H, W, 4) uint8/float16; fused Triton kernel on CUDA."""
    if out.is_cuda and image.is_cuda and out.is_contiguous():
        mod = _triton_module()
        if mod is not None:
            return mod.to_rgba_triton(image, out)
    return to_rgba_torch(image, out)


def from_rgba(rgba: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Dispatcher: (H, W, 4) uint8/float16 -> preallocated (1, 3, H, W) float; fused Triton kernel on CUDA."""
    if out.is_cuda and rgba.is_cuda:
        mod = _triton_module()
        if mod is not None:
            return mod.from_rgba_triton(rgba, out)
    return from_rgba_torch(rgba, out)
