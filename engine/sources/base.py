"""The source interface, and the conversion every host-memory source shares.

A source provides the image an img2img generator transforms each frame:

    source.read(when, fit) -> (1, 3, H, W) float32 in [-1, 1] on the source's device, row 0 = top,
                              resized/cropped to the output size; None while it has no frame yet.

`read` never blocks the render loop: capture (camera, NDI) runs on the source's own thread and keeps only the
latest frame; `read` converts a new frame (or returns the previous tensor when none arrived). The returned tensor
is the source's own buffer, valid until the next read.
"""

from __future__ import annotations

import abc
import threading
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.clock import FrameTime


def fit_into(image: torch.Tensor, out: torch.Tensor, fit: str = "cover") -> torch.Tensor:
    """Resize `image` (1, 3, h, w) into `out` (1, 3, H, W). cover: centre-crop to the target aspect ratio first
    (nothing stretched, edges lost); stretch: resize as is. Antialiased bilinear when shrinking."""
    H, W = out.shape[-2:]
    h, w = image.shape[-2:]
    if fit == "cover" and h * W != w * H:
        if w * H > h * W:  # wider than the target: crop the sides
            cw = max(1, round(h * W / H))
            x0 = (w - cw) // 2
            image = image[..., :, x0 : x0 + cw]
        else:  # taller: crop top and bottom
            ch = max(1, round(w * H / W))
            y0 = (h - ch) // 2
            image = image[..., y0 : y0 + ch, :]
    if tuple(image.shape[-2:]) == (H, W):
        out.copy_(image)
    else:
        out.copy_(F.interpolate(image.float(), size=(H, W), mode="bilinear", align_corners=False, antialias=True))
    return out


class HostUpload:
    """Host frames (h, w, 3|4) uint8 -> `out` (1, 3, H, W) float [-1, 1] on the device.

    On CUDA the frame goes through a pinned staging buffer and a non_blocking copy (no stream sync); two staging
    buffers alternate, each reused only after the event recorded behind its previous copy has passed, so a copy is
    never overwritten in flight. The staging buffers are reallocated only when the frame size changes.
    """

    def __init__(self, out: torch.Tensor):
        self.out = out
        self.device = out.device
        self._cuda = self.device.type == "cuda"
        self._staging: list[torch.Tensor] = []
        self._events: list[Any] = []
        self._i = 0

    def __call__(self, frame: np.ndarray, fit: str = "cover", order: str = "rgb") -> torch.Tensor:
        if frame.ndim != 3 or frame.shape[2] not in (3, 4) or frame.dtype != np.uint8:
            raise ValueError(f"expected an (h, w, 3|4) uint8 frame, got {frame.shape} {frame.dtype}")
        host = torch.from_numpy(np.ascontiguousarray(frame))
        if self._cuda:
            if not self._staging or self._staging[0].shape != host.shape:
                self._staging = [torch.empty(host.shape, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
                self._events = [torch.cuda.Event(), torch.cuda.Event()]
                self._events[0].record()
                self._events[1].record()
            slot = self._i % 2
            self._i += 1
            self._events[slot].synchronize()  # the copy from this buffer two frames ago; long done in practice
            self._staging[slot].copy_(host)
            dev = self._staging[slot].to(self.device, non_blocking=True)
            self._events[slot].record()
        else:
            dev = host
        rgb = dev[..., :3].permute(2, 0, 1).unsqueeze(0)  # (1, 3, h, w) uint8 view
        if order == "bgr":
            rgb = rgb.flip(1)
        x = rgb.to(torch.float32).div_(127.5).sub_(1.0)
        return fit_into(x, self.out, fit)


class Source(abc.ABC):
    kind: str = "source"

    def __init__(self, height: int, width: int, device: torch.device | str):
        self.height = int(height)
        self.width = int(width)
        self.device = torch.device(device)
        self.out = torch.zeros((1, 3, self.height, self.width), device=self.device, dtype=torch.float32)

    @abc.abstractmethod
    def read(self, when: FrameTime | None = None, fit: str = "cover") -> torch.Tensor | None:
        """The latest image, (1, 3, H, W) float32 [-1, 1] on self.device; None until there is one. Never blocks."""

    @property
    def error(self) -> str | None:
        """Why the source has no frames (device gone, stream failed), or None."""
        return None

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class ThreadedSource(Source):
    """A source whose frames arrive on a capture thread: the thread calls `_publish(frame)`; the latest wins."""

    def __init__(self, height: int, width: int, device: torch.device | str, name: str):
        super().__init__(height, width, device)
        self._lock = threading.Lock()
        self._latest: np.ndarray | None = None
        self._seq = 0
        self._read_seq = 0
        self._reads = 0
        self._fit: str | None = None
        self._error: str | None = None
        self._stop = threading.Event()
        self._upload = HostUpload(self.out)
        self._thread = threading.Thread(target=self._run_guarded, name=name, daemon=True)

    def _start(self) -> None:
        self._thread.start()

    order = "rgb"

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception as e:  # a capture thread must report, not vanish silently
            self._error = f"{self.kind}: {type(e).__name__}: {e}"

    @abc.abstractmethod
    def _run(self) -> None:
        """Capture until self._stop is set."""

    def _publish(self, frame: np.ndarray) -> None:
        with self._lock:
            self._latest = frame
            self._seq += 1

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def frames_captured(self) -> int:
        return self._seq

    def read(self, when: FrameTime | None = None, fit: str = "cover") -> torch.Tensor | None:
        with self._lock:
            frame, seq = self._latest, self._seq
        if frame is None:
            return None
        if seq != self._read_seq or fit != self._fit:
            self._upload(frame, fit, self.order)
            self._read_seq = seq
            self._fit = fit
            self._reads += 1
        return self.out

    def stats(self) -> dict[str, Any]:
        # Frames captured but never read: the loop ran slower than the source (latest frame wins).
        return {"captured": self._seq, "used": self._reads, "dropped": max(0, self._seq - self._reads)}

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
