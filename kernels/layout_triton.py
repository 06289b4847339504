"""Triton kernels for the layout conversion in engine.kernels.layout (import this module lazily: it imports triton).

One fused pass per direction instead of the torch reference's 4-5 kernels (permute-copy, mul, add, clamp, fill):

    to_rgba   : image (1, 3, H, W) fp32/fp16/bf16, any strides -> out (H, W, 4) uint8 or float16, contiguous
    from_rgba : rgba (H, W, 4) uint8 or float16, any strides   -> out (1, 3, H, W) float, any strides

Numerics are those of engine.kernels.layout.to_rgba_torch / from_rgba_torch, operation for operation (fp32 math, a
separate rounding after each multiply and add, truncation to uint8), so the uint8 result is bit-identical. The
launches pass enable_fp_fusion=False because a fused multiply-add rounds once, and (x * 127.5 + 128) truncated to a
byte can then differ from torch's two-rounding result by one step at exact integer boundaries.

On CPU these kernels only run under the Triton interpreter (TRITON_INTERPRET=1 set before this module is
imported); the dispatcher in engine.kernels.layout never routes CPU tensors here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Pixels per program along a row. 4 channels x 1024 px = 4 KiB (uint8) per program: enough bytes in flight to
# saturate bandwidth at 1024x1024, small enough that a 64 px test image is still one program per row.
_BLOCK = 1024


@triton.jit
def _to_rgba_kernel(src, dst, W, s_c, s_h, s_w, OUT_U8: tl.constexpr, BLOCK: tl.constexpr):
    # grid = (cdiv(W, BLOCK), H): one row segment of BLOCK pixels per program, so no per-element div/mod.
    row = tl.program_id(1)
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,)
    mask = cols < W
    base = row.to(tl.int64) * s_h + cols * s_w
    r = tl.load(src + base, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(src + base + s_c, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(src + base + 2 * s_c, mask=mask, other=0.0).to(tl.float32)
    if OUT_U8:
        # NVlabs: (x * 127.5 + 128).clamp(0, 255) then truncation to uint8.
        r = tl.minimum(tl.maximum(r * 127.5 + 128.0, 0.0), 255.0)
        g = tl.minimum(tl.maximum(g * 127.5 + 128.0, 0.0), 255.0)
        b = tl.minimum(tl.maximum(b * 127.5 + 128.0, 0.0), 255.0)
        a = tl.full((BLOCK,), 255.0, tl.float32)
    else:
        r = tl.minimum(tl.maximum(r * 0.5 + 0.5, 0.0), 1.0)
        g = tl.minimum(tl.maximum(g * 0.5 + 0.5, 0.0), 1.0)
        b = tl.minimum(tl.maximum(b * 0.5 + 0.5, 0.0), 1.0)
        a = tl.full((BLOCK,), 1.0, tl.float32)
    # Build a (BLOCK, 4) tile so each pixel's RGBA is written as one contiguous 4-element store.
    ch = tl.arange(0, 4)[None, :]  # (1, 4)
    val = tl.where(ch == 0, r[:, None], tl.where(ch == 1, g[:, None], tl.where(ch == 2, b[:, None], a[:, None])))
    offs = (row.to(tl.int64) * W + cols[:, None]) * 4 + ch  # (BLOCK, 4) into contiguous (H, W, 4)
    # float -> uint8 conversion truncates toward zero (values are already in [0, 255]), as torch's copy_ does.
    tl.store(dst + offs, val.to(dst.dtype.element_ty), mask=mask[:, None])


@triton.jit
def _from_rgba_kernel(src, dst, W, si_h, si_w, si_c, so_c, so_h, so_w, IN_U8: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(1)
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < W
    ibase = row.to(tl.int64) * si_h + cols * si_w
    obase = row.to(tl.int64) * so_h + cols * so_w
    for c in tl.static_range(3):
        x = tl.load(src + ibase + c * si_c, mask=mask, other=0).to(tl.float32)
        if IN_U8:
            # IEEE-rounded division, as torch's x / 127.5 on CPU (the default fp32 `/` may be approximate on GPU).
            y = tl.math.div_rn(x, tl.full((BLOCK,), 127.5, tl.float32)) - 1.0
        else:
            y = x * 2.0 - 1.0
        tl.store(dst + obase + c * so_c, y.to(dst.dtype.element_ty), mask=mask)


def to_rgba_triton(image: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Fused `to_rgba_torch`: image (1, 3, H, W) float -> preallocated contiguous out (H, W, 4) uint8/float16."""
    _, c, h, w = image.shape
    if c != 3 or out.shape != (h, w, 4) or not out.is_contiguous() or out.dtype not in (torch.uint8, torch.float16):
        raise ValueError(f"to_rgba: image {tuple(image.shape)} -> out {tuple(out.shape)} {out.dtype} (need (H, W, 4) uint8/float16, contiguous)")
    grid = (triton.cdiv(w, _BLOCK), h)
    _to_rgba_kernel[grid](image, out, w, image.stride(1), image.stride(2), image.stride(3),
                          OUT_U8=out.dtype == torch.uint8, BLOCK=_BLOCK, enable_fp_fusion=False)
    return out


def from_rgba_triton(rgba: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Fused `from_rgba_torch`: rgba (H, W, 4) uint8/float16 -> preallocated out (1, 3, H, W) float."""
    h, w, c = rgba.shape
    if c != 4 or out.shape != (1, 3, h, w) or rgba.dtype not in (torch.uint8, torch.float16):
        raise ValueError(f"from_rgba: rgba {tuple(rgba.shape)} {rgba.dtype} -> out {tuple(out.shape)} (need (H, W, 4) uint8/float16 -> (1, 3, H, W))")
    grid = (triton.cdiv(w, _BLOCK), h)
    _from_rgba_kernel[grid](rgba, out, w, rgba.stride(0), rgba.stride(1), rgba.stride(2),
                            out.stride(1), out.stride(2), out.stride(3),
                            IN_U8=rgba.dtype == torch.uint8, BLOCK=_BLOCK, enable_fp_fusion=False)
    return out
