"""Test helpers for NDI: bring Avahi up, and a real cyndilib receiver that finds a source and collects frames.

Nothing here is simulated: the receiver is the NDI runtime's own, talking to our sender over loopback, found
through avahi-daemon like any NDI tool on the network would find it.

Also: frames that carry their own index (so a test knows which sent frame a received one is, even after
drops) in a way that survives NDI's lossy SpeedHQ compression: 16x16 black/white blocks, one bit each.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

BITS = 12  # frame indices up to 4095
BLOCK = 16  # px per bit: big enough that compression cannot flip a block's mean across 128


def require_ndi() -> None:
    """Skip (developer machine) or fail (CI) when NDI cannot run here, with the one-line reason.
    CI installs cyndilib, avahi-daemon and dbus, so there a missing piece is a broken setup, not a skip."""
    try:
        import cyndilib  # noqa: F401
    except ImportError:
        reason = "cyndilib not installed (pip install cyndilib)"
    else:
        from engine.system import ensure_avahi

        reason = ensure_avahi()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"NDI test environment: {reason}")
        pytest.skip(reason)


def encode_index(frame: np.ndarray, index: int) -> None:
    """Write `index` into the top-left BITS*BLOCK x BLOCK pixels as black/white blocks (opaque)."""
    for b in range(BITS):
        v = 255 if (index >> b) & 1 else 0
        frame[0:BLOCK, b * BLOCK:(b + 1) * BLOCK, :3] = v
        frame[0:BLOCK, b * BLOCK:(b + 1) * BLOCK, 3] = 255


def decode_index(frame: np.ndarray) -> int:
    index = 0
    for b in range(BITS):
        # The block's centre: the edges bleed into neighbours under 4:2:2 chroma and DCT compression.
        m = frame[4:BLOCK - 4, b * BLOCK + 4:(b + 1) * BLOCK - 4, :3].mean()
        if m > 128:
            index |= 1 << b
    return index


def make_frame(index: int, width: int, height: int) -> np.ndarray:
    """A smooth opaque RGBA frame with its index: gradients in R and G, a flat B that steps by 73 levels per
    index (so neighbours differ clearly), no hard colour edges except the index blocks (lossy video smears
    sharp chroma edges, which is the codec's business, not what these tests are about)."""
    y, x = np.mgrid[0:height, 0:width]
    f = np.empty((height, width, 4), np.uint8)
    f[..., 0] = x * 255 // max(width - 1, 1)
    f[..., 1] = y * 255 // max(height - 1, 1)
    f[..., 2] = (index * 73) % 256
    f[..., 3] = 255
    encode_index(f, index)
    return f



@dataclass
class Received:
    pixels: np.ndarray  # (H, W, 4) uint8 RGBA
    resolution: tuple[int, int]
    fourcc: str
    frame_rate: object  # fractions.Fraction
    arrival: float  # time.monotonic() when the receiver saw it (within POLL_S of its arrival)
    timestamp: float  # the sender's NDI timestamp, posix seconds


class NDIReceiver:
    """A cyndilib receiver connected to the first source named "... (`name`)", collecting every new video frame
    on its own thread.

    It reads through NDI's FrameSync (as receiving apps such as OBS do), polled well above the frame rate, and
    keeps each frame once (new sender timestamp = new frame). Why not `Receiver.receive()`: on this machine
    (gVisor sandbox) NDI's blocking capture misses most wake-ups and delivered ~25% of the frames the receiver
    had taken off the network (its own counters said 90 received, 0 dropped), while FrameSync polled every
    3 ms delivered 90 of 90. receive() also waits holding the GIL, which would stall a sender in this process.
    """

    POLL_S = 0.003
    STALL_S = 0.1  # a gap between two polls this long means this thread was held up (GIL, GC, a loaded machine)

    def __init__(self, name: str, timeout: float = 20.0):
        from cyndilib import Finder, Receiver, RecvBandwidth, RecvColorFormat, VideoFrameSync

        self.finder = Finder()
        self.finder.open()
        self.source = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.source is None:
            self.finder.wait_for_sources(0.5)
            for n in self.finder.get_source_names():
                if n.endswith(f"({name})"):
                    self.source = self.finder.get_source(n)
                    break
        if self.source is None:
            names = self.finder.get_source_names()
            self.finder.close()
            raise AssertionError(f"NDI source ({name}) not found within {timeout} s; sources seen: {names}")
        # RGBX_RGBA: deliver RGBA as sent (not the UYVY default), so pixels compare directly.
        self.receiver = Receiver(color_format=RecvColorFormat.RGBX_RGBA, bandwidth=RecvBandwidth.highest)
        self.video = VideoFrameSync()
        self.receiver.frame_sync.set_video_frame(self.video)
        self.receiver.connect_to(self.source)
        self.frames: list[Received] = []
        # Gaps between polls of STALL_S or more, in seconds. FrameSync keeps only the newest frame, so a receiver
        # that stalls for longer than a frame period loses frames the sender did send: the receiver's gap, not the
        # stream's (the tests count them apart from the sender's drops).
        self.stalls: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ndi-test-receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from cyndilib import FrameFormat

        last_stamp = None
        last_poll = time.monotonic()
        while not self._stop.wait(self.POLL_S):
            polled = time.monotonic()
            if polled - last_poll >= self.STALL_S:
                self.stalls.append(polled - last_poll)
            last_poll = polled
            self.receiver.frame_sync.capture_video(FrameFormat.progressive)
            w, h = self.video.xres, self.video.yres
            if w == 0 or h == 0:
                continue  # nothing received yet
            stamp = self.video.get_timestamp_posix()
            if stamp == last_stamp:
                continue  # FrameSync repeats the latest frame until a new one arrives
            last_stamp = stamp
            now = time.monotonic()
            data = np.asarray(self.video.get_array())
            stride = self.video.get_line_stride()
            pixels = data[: stride * h].reshape(h, stride)[:, : w * 4].reshape(h, w, 4).copy()
            fourcc = int(self.video.get_fourcc()).to_bytes(4, "little").decode("ascii", "replace")
            with self._lock:
                self.frames.append(Received(pixels, (w, h), fourcc, self.video.get_frame_rate(), now, stamp))

    def connected(self) -> bool:
        return self.receiver.is_connected()

    def wait_frames(self, n: int, timeout: float) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.frames) >= n:
                    break
            time.sleep(0.02)
        with self._lock:
            return list(self.frames)

    def clear(self) -> None:
        with self._lock:
            self.frames.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        try:
            self.receiver.disconnect()
        finally:
            self.finder.close()
