"""Sources computed without capture: `image:PATH` (a still, loaded once), `noise` (smooth animated noise), and
`feedback` (the previous output after the perturb shader, handed in by the render loop)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.clock import FrameTime
from engine.errors import UsageError
from engine.paths import user_path
from engine.sources.base import HostUpload, Source


class ImageSource(Source):
    """A still image file (PNG, JPEG, ...), decoded once; converted again only when `fit` changes."""

    kind = "image"

    def __init__(self, path: str, height: int, width: int, device: torch.device | str):
        super().__init__(height, width, device)
        if not path:
            raise UsageError("image source needs a file: --source image:PATH (or set source.image)")
        p = user_path(path, "image source")
        if not p.is_file():
            raise UsageError(f"image source: file not found: {p}")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(p) as im:
                self._pixels = np.array(im.convert("RGB"))  # (h, w, 3) uint8, writable (torch.from_numpy wants that)
        except (UnidentifiedImageError, OSError) as e:
            raise UsageError(f"image source: cannot read {p}: {e}") from None
        self.path = str(p)
        self._fit: str | None = None
        self._upload = HostUpload(self.out)

    def read(self, when: FrameTime | None = None, fit: str = "cover") -> torch.Tensor:
        if fit != self._fit:
            self._upload(self._pixels, fit)
            self._fit = fit
        return self.out


class NoiseSource(Source):
    """Smooth value noise that evolves over time: a random field of `cells` x `cells` values (one new field per
    second of show time, cross-faded with a smoothstep), upsampled bicubically to the frame. Deterministic: field
    n is drawn from torch.Generator(device).manual_seed(seed + n)."""

    kind = "noise"

    def __init__(self, height: int, width: int, device: torch.device | str, *, seed: int = 0):
        super().__init__(height, width, device)
        self.seed = int(seed)
        self._gen = torch.Generator(device=self.device)
        self._fields: dict[tuple[int, int], torch.Tensor] = {}

    def _field(self, n: int, cells: int) -> torch.Tensor:
        key = (n, cells)
        f = self._fields.get(key)
        if f is None:
            self._gen.manual_seed(self.seed + n)
            f = torch.randn((1, 3, cells, cells), generator=self._gen, device=self.device) * 0.5
            if len(self._fields) > 4:  # keep the two in use (and a few around a seek)
                self._fields.pop(next(iter(self._fields)))
            self._fields[key] = f
        return f

    def read(self, when: FrameTime | None = None, fit: str = "cover", cells: float = 8.0) -> torch.Tensor:
        t = when.t if when is not None else 0.0
        n = math.floor(t)
        u = t - n
        u = u * u * (3 - 2 * u)
        c = max(1, int(round(cells)))
        mixed = torch.lerp(self._field(n, c), self._field(n + 1, c), u)
        up = F.interpolate(mixed, size=(self.height, self.width), mode="bicubic", align_corners=False)
        return self.out.copy_(up.clamp_(-1, 1))


class FeedbackSource(Source):
    """The previous output after the perturb shader (seed 001's loop). The render loop fills it each frame with
    `capture(uploader, texture)` (engine.upload's `download`: RGBA texture -> (1, 3, H, W) [-1, 1]); until the
    first capture `read` returns None and the generator feeds back its own previous output (white at first)."""

    kind = "feedback"

    def __init__(self, height: int, width: int, device: torch.device | str):
        super().__init__(height, width, device)
        self.captured = 0

    def capture(self, uploader: Any, texture: Any) -> torch.Tensor:
        w, h = texture.size
        if (h, w) != (self.height, self.width):
            raise ValueError(f"feedback texture is {w}x{h}, the source is {self.width}x{self.height}")
        uploader.download(texture, self.out)
        self.captured += 1
        return self.out

    def write(self, image: torch.Tensor) -> torch.Tensor:
        """Set the feedback image from a tensor (1, 3, H, W) [-1, 1] (loops without GL)."""
        self.out.copy_(image)
        self.captured += 1
        return self.out

    def read(self, when: FrameTime | None = None, fit: str = "cover") -> torch.Tensor | None:
        return self.out if self.captured else None
