"""`--sink v4l2[:/dev/videoN]` (Linux): a virtual webcam through v4l2loopback, via pyvirtualcam.

Any app that takes a webcam (OBS, Zoom, a browser, TouchDesigner's Video Device In TOP) can pick the engine up.
Without a device path the first v4l2loopback device is used.

Needs the v4l2loopback kernel module, which no CI machine or container here has: this sink's frame path is
written but NOT verified; only its availability checks run here (see README "Sinks").

Frames are host pixels (needs_host): the render thread copies them into a bounded queue and a worker thread
writes them to the device, so a slow or stalled
consumer costs dropped frames, never render time. pyvirtualcam's v4l2loopback backend takes RGB, BGR, GRAY, I420,
NV12, YUYV or UYVY, not RGBA: the worker drops alpha into a buffer allocated at open, and pyvirtualcam converts
RGB to the device's YUV format. A device that goes away makes sends fail: they are counted
and logged, and the engine keeps running.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import SetupError, UsageError
from engine.sinks._worker import FrameWorker
from engine.sinks.base import Sink

log = logging.getLogger("engine.sinks")

INSTALL_HINT = "install pyvirtualcam (pip install pyvirtualcam, or pip install 'engine[v4l2]')"
MODPROBE_HINT = (
    "no v4l2loopback device; load the module: sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
    "card_label=engine (Debian/Ubuntu package: v4l2loopback-dkms)"
)
# v4l2loopback devices are virtual: they live under /sys/devices/virtual/video4linux, real cameras under their bus.
SYSFS = Path("/sys/devices/virtual/video4linux")


def loopback_devices(sysfs: Path = SYSFS) -> list[str]:
    """/dev paths of the v4l2loopback devices on this machine, in number order. Real cameras (and vivid) hang
    off a bus or platform device in sysfs; only loopback devices sit under devices/virtual/video4linux."""
    if not sysfs.is_dir():
        return []
    nums = sorted(int(d.name[5:]) for d in sysfs.iterdir() if d.name.startswith("video") and d.name[5:].isdigit())
    return [f"/dev/video{n}" for n in nums]


def camera_kwargs(device: str | None) -> dict[str, Any]:
    """pyvirtualcam.Camera options for a v4l2loopback device: RGB frames (the backend refuses RGBA)."""
    import pyvirtualcam

    return dict(fmt=pyvirtualcam.PixelFormat.RGB, device=device, backend="v4l2loopback")


class V4L2Sink(Sink):
    kind = "v4l2"
    needs_host = True
    QUEUE_DEPTH = 2

    def __init__(self, target: str = ""):
        device = target.strip()
        if device and not device.startswith("/dev/video"):
            raise UsageError(f"v4l2: expected a device like /dev/video10, got {device!r} (e.g. --sink v4l2:/dev/video10)")
        super().__init__(device)
        self.device = device or None
        self._cam: Any = None
        self._worker: FrameWorker | None = None
        self._final_stats: dict[str, Any] | None = None
        self.width = self.height = 0

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return cls._check(None)

    @classmethod
    def _check(cls, device: str | None) -> tuple[bool, str]:
        if not sys.platform.startswith("linux"):
            return False, "Linux only"
        missing = []
        try:
            import pyvirtualcam  # noqa: F401
        except ImportError:
            missing.append(INSTALL_HINT)
        devices = loopback_devices()
        if not devices:
            missing.append(MODPROBE_HINT)
        elif device is not None and device not in devices:
            missing.append(f"{device} is not a v4l2loopback device (found: {', '.join(devices)})")
        # Both problems in one line when both apply: fixing one only to meet the other wastes a restart.
        return (not missing), "; ".join(missing)

    def open(self, gl: Any, width: int, height: int, fps: float) -> None:
        ok, reason = self._check(self.device)
        if not ok:
            raise SetupError(f"v4l2: {reason}")
        import pyvirtualcam

        self.width, self.height = int(width), int(height)
        try:
            cam = pyvirtualcam.Camera(self.width, self.height, float(fps), **camera_kwargs(self.device))
        except Exception as e:
            raise SetupError(f"v4l2: could not open {self.device or 'a v4l2loopback device'}: {' '.join(str(e).split())}") from None
        self._cam = cam
        self._rgb = np.empty((self.height, self.width, 3), dtype=np.uint8)  # worker thread only
        self.target = cam.device
        self._worker = FrameWorker(self.label, self._send, depth=self.QUEUE_DEPTH, drop="oldest")
        log.info("v4l2: virtual camera on %s, %dx%d @ %s fps", cam.device, self.width, self.height, fps)

    def send_pixels(self, pixels: np.ndarray, frame_index: int, t: float | None = None) -> None:
        if self._worker is None:
            return
        # The loop sets `realtime` (False only for offline renders, where waiting beats dropping).
        self._worker.submit(pixels, frame_index, block=not getattr(self, "realtime", True))
        self.frames_sent, self.frames_dropped = self._worker.sent, self._worker.dropped

    def _send(self, pixels: np.ndarray, frame_index: int) -> None:
        np.copyto(self._rgb, pixels[..., :3])  # (H, W, 4) RGBA -> (H, W, 3) RGB
        self._cam.send(self._rgb)

    def stats(self) -> dict[str, Any]:
        if self._worker is None:
            # The loop asks for stats after close(): report the final counts then.
            return dict(self._final_stats) if self._final_stats else super().stats()
        s = self._worker.stats()
        self.frames_sent, self.frames_dropped = s["sent"], s["dropped"]
        s["device"] = self.target
        return s

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close(timeout=5.0)
            self.frames_sent, self.frames_dropped = worker.sent, worker.dropped
            self._final_stats = worker.stats()
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.close()
            except Exception as e:
                log.warning("v4l2: closing %s: %s", self.target, e)
