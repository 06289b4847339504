"""Moving frames between the generator (torch) and GL textures.

Interface shared by the staged path (here) and the zero-copy CUDA-GL interop path (engine.interop):

    uploader.upload(image, texture)      image (1, 3, H, W) [-1, 1] -> RGBA texture (row 0 = top)
    uploader.download(texture, out)      RGBA texture -> out (1, 3, H, W) [-1, 1] (img2img feedback)
    uploader.host_copies_per_frame       copies per upload that touch host memory (stats; 0 on interop)
    uploader.prepare(texture, mode)      optional at setup: allocate/register for `texture` now, not on frame 1
    uploader.release(texture)            forget `texture` before texture.release() (interop unregisters it)

The staged path is what the seed projects do, minus the PIL/numpy detours: convert on the generator's device,
copy to host (when on CUDA), texture.write. It is the fallback wherever interop cannot work.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.kernels.layout import from_rgba, to_rgba


def texture_dtype(texture) -> torch.dtype:
    """torch dtype matching a moderngl RGBA texture's storage ('f1' = RGBA8, 'f2' = RGBA16F)."""
    return {"f1": torch.uint8, "f2": torch.float16, "f4": torch.float32}[texture.dtype]


class StagedUpload:
    """Staged copy: device -> host -> GL. Buffers are allocated once per (size, dtype) at first use."""

    name = "staged"

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        # A CUDA tensor costs a device->host copy before the host->GL write; a CPU tensor only the write.
        self.host_copies_per_frame = 2 if self.device.type == "cuda" else 1
        self._rgba: torch.Tensor | None = None
        self._host: torch.Tensor | None = None

    def _buffers(self, h: int, w: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if self._rgba is None or self._rgba.shape[:2] != (h, w) or self._rgba.dtype != dtype:
            self._rgba = torch.empty((h, w, 4), dtype=dtype, device=self.device)
            # Pinned host memory makes the device->host copy a single DMA.
            pin = self.device.type == "cuda"
            self._host = self._rgba if not pin else torch.empty((h, w, 4), dtype=dtype, pin_memory=True)
        return self._rgba, self._host  # type: ignore[return-value]

    def upload(self, image: torch.Tensor, texture) -> None:
        h, w = image.shape[-2:]
        if (w, h) != tuple(texture.size):
            raise ValueError(f"frame is {w}x{h} but the texture is {texture.size[0]}x{texture.size[1]}")
        rgba, host = self._buffers(h, w, texture_dtype(texture))
        with torch.no_grad():
            to_rgba(image, rgba)  # fused Triton kernel on CUDA, torch reference on CPU
            if host is not rgba:
                host.copy_(rgba)  # synchronous D2H: the cost interop removes
        texture.write(host.numpy().data)

    def download(self, texture, out: torch.Tensor) -> torch.Tensor:
        w, h = texture.size
        dtype = texture_dtype(texture)
        data = np.frombuffer(texture.read(), dtype=torch.empty((), dtype=dtype).numpy().dtype).reshape(h, w, 4)
        rgba = torch.from_numpy(data.copy()).to(out.device, non_blocking=False)
        with torch.no_grad():
            return from_rgba(rgba, out)

    def prepare(self, texture, mode: str = "write", image_dtype: torch.dtype = torch.float32) -> None:
        """Allocate the buffers for `texture` at setup (and compile the layout kernel), not on the first frame."""
        if mode != "read":
            w, h = texture.size
            rgba, _ = self._buffers(h, w, texture_dtype(texture))
            with torch.no_grad():
                to_rgba(torch.zeros((1, 3, h, w), dtype=image_dtype, device=self.device), rgba)

    def release(self, texture) -> None:
        """Nothing is tied to a texture here (buffers are per size); the interop uploader unregisters it."""

    def close(self) -> None:
        self._rgba = self._host = None
