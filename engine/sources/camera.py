"""`camera[:TARGET]`: a camera (device index) or a video file/stream through OpenCV's VideoCapture, on a thread.

TARGET: a device index (0, 1, ...; default 0), a video file (played in a loop at its own frame rate, so a
recorded clip behaves like a live camera), or a stream URL (rtsp://, http://, ...). The capture thread keeps only
the latest frame; the render loop never waits for the camera.
"""

from __future__ import annotations

import logging
import time

import torch

from engine.errors import SetupError, UsageError
from engine.paths import user_path
from engine.sources.base import ThreadedSource

log = logging.getLogger(__name__)

_URL_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class CameraSource(ThreadedSource):
    kind = "camera"
    order = "bgr"  # OpenCV delivers BGR

    def __init__(self, target: str, height: int, width: int, device: torch.device | str, *, loop: bool = True):
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise SetupError("camera sources need OpenCV: pip install opencv-python-headless (or pip install 'engine[camera]')") from None
        target = (target or "0").strip()
        self.target = target
        self.index = int(target) if target.isdigit() else None
        path = user_path(target, "camera source")
        self.is_file = self.index is None and not target.startswith(_URL_PREFIXES)
        if self.is_file and not path.is_file():
            raise UsageError(f"camera source {target!r}: not a device index (0, 1, ...), a video file or a stream URL")
        self._path = str(path) if self.is_file else target
        self.loop = loop
        self.fps = 0.0
        super().__init__(height, width, device, name=f"camera-{target}")
        self._start()

    def _open(self):
        import cv2

        cap = cv2.VideoCapture(self.index if self.index is not None else self._path)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _run(self) -> None:
        cap = self._open()
        if cap is None:
            self._error = f"camera: cannot open {self.target!r}"
            log.warning("%s", self._error)
            return
        import cv2

        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.fps = fps if 0 < fps < 1000 else 30.0
        # Files are paced at their frame rate; devices and streams pace themselves (read() waits for a frame).
        period = 1.0 / self.fps if self.is_file else 0.0
        t_next = time.monotonic()
        failures = 0
        try:
            while not self._stop.is_set():
                ok, frame = cap.read()
                if not ok or frame is None:
                    failures += 1
                    if self.is_file and self.loop and failures == 1:
                        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # end of the clip: start again
                        continue
                    if self.is_file:
                        if not self.loop or self._seq == 0:
                            self._error = None if self._seq else f"camera: {self.target!r} has no readable frames"
                            return
                    # A device or stream hiccup: back off, reopen after repeated failures.
                    if failures % 50 == 0:
                        cap.release()
                        cap = self._open() or cap
                    self._stop.wait(min(0.5, 0.01 * failures))
                    continue
                failures = 0
                self._publish(frame)
                if period:
                    t_next += period
                    delay = t_next - time.monotonic()
                    if delay < -period:  # fell behind (machine busy): resync instead of bursting
                        t_next = time.monotonic()
                    elif delay > 0:
                        self._stop.wait(delay)
        finally:
            cap.release()
