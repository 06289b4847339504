"""The show's output: its size, how the generator's image is framed in it, and the master fader.

No torch and no GL here: the numbers the GL stage (engine.gl) and the loop use, testable on their own.

    output size    `--size WxH` (or N for N x N). Every stage after the generator (textures, shaders, feedback,
                   sinks) runs at it.
    framing        the generator's image (native size) -> the output: `output.fit` cover | contain | stretch,
                   then `output.zoom` and `output.pan_x/pan_y`. `fit_transform` gives the affine map from
                   output uv to generator uv that fit.frag applies.
    master fader   `output.opacity` x (1 - blackout level); the blackout level glides to 0 or 1 over
                   `output.fade_seconds` of show time (MasterFader).
"""

from __future__ import annotations

import math
import re

from engine.errors import UsageError

#: Largest side accepted for --size: 8K. Beyond it textures stop fitting GPUs (and 3840x2160 is the practical top).
MAX_SIDE = 8192
_SIZE = re.compile(r"^\s*(\d+)\s*(?:[xX\u00d7]\s*(\d+))?\s*$")


def parse_size(text: str | int, what: str = "--size") -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080); '256' -> (256, 256). UsageError naming the value otherwise."""
    if isinstance(text, bool):
        raise UsageError(f"{what} {text!r} is not a size; use N or WIDTHxHEIGHT, e.g. 512 or 1920x1080")
    if isinstance(text, int):
        text = str(text)
    m = _SIZE.match(str(text))
    if not m:
        raise UsageError(f"{what} {text!r} is not a size; use N or WIDTHxHEIGHT, e.g. 512 or 1920x1080")
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) is not None else w
    for side in (w, h):
        if side < 16 or side > MAX_SIDE:
            raise UsageError(f"{what} {text!r}: each side must be 16..{MAX_SIDE} pixels")
    return w, h


def format_size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def stylegan_square(output: tuple[int, int], native: int, lo: int = 64, hi: int = 1024) -> int:
    """The square a StyleGAN network renders for an output: its native size, or, when that is larger than the
    output needs, the smallest power of two that covers the output's longer side (resized on the device, with
    antialiasing, so the GL fit never minifies by more than 2x). A network smaller than the output renders
    natively and the GL fit scales it up (bilinear)."""
    need = max(lo, min(hi, 1 << max(0, math.ceil(math.log2(max(output))))))
    return min(native, need) if native >= lo else native


def diffusion_size(output: tuple[int, int], multiple: int = 8) -> tuple[int, int]:
    """Diffusion renders natively at the output's aspect: each side rounded to the nearest multiple of `multiple`
    (the VAE's scale factor, 8), never below one multiple. The fit stage stretches the few pixels of rounding."""
    return tuple(max(multiple, int(side / multiple + 0.5) * multiple) for side in output)  # type: ignore[return-value]


FITS = ("cover", "contain", "stretch")


def fit_transform(native: tuple[int, int], output: tuple[int, int], fit: str = "cover", zoom: float = 1.0,
                  pan_x: float = 0.0, pan_y: float = 0.0) -> tuple[float, float, float, float]:
    """The map from output uv (0..1, row 0 = top) to generator-image uv: src = (uv - 0.5) * scale + 0.5 + offset.
    Returns (scale_x, scale_y, offset_x, offset_y). Outside 0..1 of the source is background (contain, zoom < 1).

    cover: the image fills the output, cropped on the long side; contain: all of it shows, letterboxed;
    stretch: fills the output, aspect ignored. zoom > 1 magnifies; pan_x/pan_y (-1..1) move the view across what is
    not shown (+x right, +y down): +-1 reaches the image's edge and never beyond it while the image covers the output."""
    nw, nh = native
    ow, oh = output
    zoom = max(float(zoom), 1e-3)
    if fit == "stretch":
        sx = sy = 1.0
    else:
        # How many image widths/heights one output width/height spans.
        ratio = (ow / oh) / (nw / nh)  # > 1: the output is wider than the image
        if fit == "cover":
            sx, sy = (1.0, 1.0 / ratio) if ratio >= 1.0 else (ratio, 1.0)
        elif fit == "contain":
            sx, sy = (ratio, 1.0) if ratio >= 1.0 else (1.0, 1.0 / ratio)
        else:
            raise ValueError(f"unknown fit {fit!r}")
    sx, sy = sx / zoom, sy / zoom
    # The pan is the view's position: -1 = the image's left (top) edge, +1 = its right (bottom) edge, over the part
    # of the image the view does not show. Where the view is larger than the image (contain, zoom < 1) the same
    # sign moves the image the other way inside the frame. At scale 1 there is nothing to pan.
    ox = float(pan_x) * abs(1.0 - sx) / 2.0
    oy = float(pan_y) * abs(1.0 - sy) / 2.0
    return sx, sy, ox, oy


def is_identity(native: tuple[int, int], output: tuple[int, int], transform: tuple[float, float, float, float]) -> bool:
    """True when the fit maps every output pixel to the same generator pixel (no resampling pass needed)."""
    return tuple(native) == tuple(output) and transform == (1.0, 1.0, 0.0, 0.0)


class MasterFader:
    """output.opacity x (1 - blackout level). The level moves towards 1 (blackout on) or 0 at 1/fade_seconds per
    second of show time, so a blackout and its return are fades, never jumps (fade_seconds 0 = cut)."""

    def __init__(self) -> None:
        self.level = 0.0  # 0 = picture, 1 = black
        self._last_t: float | None = None

    def update(self, t: float, blackout: bool, fade_seconds: float, opacity: float) -> float:
        """Advance to show time t and return the gain the present pass multiplies the picture with."""
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        target = 1.0 if blackout else 0.0
        if fade_seconds <= 0.0:
            self.level = target
        else:
            step = dt / fade_seconds
            self.level = min(target, self.level + step) if target > self.level else max(target, self.level - step)
        return max(0.0, min(1.0, opacity)) * (1.0 - self.level)
