"""`ndi[:NAME]`: an NDI video source received with cyndilib (which ships the NDI runtime), on a thread.

NAME is the source's name as NDI tools list it ("HOST (NAME)"), or just the part in parentheses; empty = the first
source found. Discovery runs on the thread, so a source that appears later (or comes back after a restart) is
picked up without blocking the render loop. Frames arrive as RGBA (RecvColorFormat.RGBX_RGBA).

Reading goes through NDI's FrameSync, polled every few ms, with a new sender timestamp marking a new frame: the
NDI sink's tests found that on this kind of sandbox the blocking `Receiver.receive()` misses wake-ups and holds the
GIL while it waits, while a polled FrameSync delivers every frame.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from engine.errors import SetupError
from engine.sources.base import ThreadedSource

POLL_S = 0.003


def _matches(full: str, name: str) -> bool:
    return not name or full == name or full.endswith(f"({name})")


class NDISource(ThreadedSource):
    kind = "ndi"

    def __init__(self, name: str, height: int, width: int, device: torch.device | str):
        try:
            import cyndilib  # noqa: F401
        except ImportError:
            raise SetupError("NDI sources need cyndilib: pip install cyndilib (or pip install 'engine[ndi]')") from None
        except OSError as e:
            raise SetupError(f"cyndilib is installed but its NDI library did not load ({e}); reinstall cyndilib") from None
        self.name = (name or "").strip()
        self.connected_to: str | None = None
        super().__init__(height, width, device, name=f"ndi-{self.name or 'any'}")
        self._start()

    def _run(self) -> None:
        from cyndilib import Finder, FrameFormat, Receiver, RecvBandwidth, RecvColorFormat, VideoFrameSync

        finder = Finder()
        finder.open()
        try:
            source = None
            while source is None and not self._stop.is_set():
                finder.wait_for_sources(0.5)
                for full in finder.get_source_names():
                    if _matches(full, self.name):
                        source = finder.get_source(full)
                        self.connected_to = full
                        break
            if source is None:
                return
            receiver = Receiver(color_format=RecvColorFormat.RGBX_RGBA, bandwidth=RecvBandwidth.highest)
            video = VideoFrameSync()
            receiver.frame_sync.set_video_frame(video)
            receiver.connect_to(source)
            last_stamp = None
            try:
                while not self._stop.wait(POLL_S):
                    receiver.frame_sync.capture_video(FrameFormat.progressive)
                    w, h = video.xres, video.yres
                    if w == 0 or h == 0:
                        continue
                    stamp = video.get_timestamp_posix()
                    if stamp == last_stamp:
                        continue  # FrameSync repeats the latest frame until a new one arrives
                    last_stamp = stamp
                    data = np.asarray(video.get_array())
                    stride = video.get_line_stride()
                    frame = data[: stride * h].reshape(h, stride)[:, : w * 4].reshape(h, w, 4).copy()
                    self._publish(frame)
            finally:
                receiver.disconnect()
        finally:
            finder.close()

    def wait_connected(self, timeout: float) -> bool:
        """Block (tests, setup tools; never the render loop) until a source is found or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while self.connected_to is None and time.monotonic() < deadline and self._error is None:
            time.sleep(0.05)
        return self.connected_to is not None
