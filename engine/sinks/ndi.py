"""`--sink ndi[:NAME]`: publish the output as an NDI source (cyndilib, which ships the NDI runtime).

Receivers list it as "HOSTNAME (NAME)"; NAME defaults to `engine`.

Frames go out as RGBA (FourCC RGBA, progressive) at the engine's resolution and frame rate. The render thread
only copies the pixels into a queue (engine.sinks._worker); a worker thread hands them to
`Sender.write_video_async`, which copies them into cyndilib's own send buffer and returns while the NDI library
compresses and sends. A slow network or a slow receiver therefore costs dropped frames (counted in stats), never
render time. With no receiver connected NDI sends nothing and the sink keeps running; a receiver that comes
(back) later gets the stream from then on.

NDI video is compressed (SpeedHQ, 4:2:2 chroma): measured on loopback here, colour comes back within a few
levels of what was sent on smooth images, alpha exactly. It is a live-video link, not a lossless one.

Discovery is mDNS: on Linux the NDI runtime needs avahi-daemon (see engine.system).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

import numpy as np

from engine.errors import SetupError, UsageError
from engine.sinks._worker import FrameWorker
from engine.sinks.base import Sink

log = logging.getLogger("engine.sinks")

INSTALL_HINT = "install cyndilib (pip install cyndilib, or pip install 'engine[ndi]')"


def _frame_rate(fps: float) -> Fraction:
    # NDI carries the rate as N/D. 29.97 and friends are 30000/1001 in broadcast terms; limit_denominator(1001)
    # recovers exactly that from a float, and integer rates stay N/1.
    if fps <= 0:
        raise SetupError(f"ndi: frame rate must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


class NDISink(Sink):
    kind = "ndi"
    needs_host = True

    # Frames queued between the render thread and the sender: 2 absorbs a hiccup of one frame without adding
    # more than a frame of latency when the worker keeps up.
    QUEUE_DEPTH = 2

    def __init__(self, target: str = ""):
        name = target.strip() or "engine"
        if any(ord(c) < 32 for c in name):
            raise UsageError(f"ndi: source name {name!r} contains control characters; use e.g. --sink ndi:visuals")
        super().__init__(name)
        self.name = name
        self._sender: Any = None
        self._frame: Any = None
        self._worker: FrameWorker | None = None
        self._final_stats: dict[str, Any] | None = None
        self.width = self.height = 0
        self.fps = 0.0

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import cyndilib  # noqa: F401
        except ImportError:
            return False, INSTALL_HINT
        except OSError as e:  # the bundled libndi failed to load
            return False, f"cyndilib is installed but its NDI library did not load ({e}); reinstall cyndilib"
        from engine.system import avahi_problem

        problem = avahi_problem()
        if problem:
            return False, problem
        return True, ""

    def open(self, gl: Any, width: int, height: int, fps: float) -> None:
        ok, reason = self.availability()
        if not ok:
            raise SetupError(f"ndi: {reason}")
        from cyndilib import FourCC, Sender, VideoSendFrame

        self.width, self.height, self.fps = int(width), int(height), float(fps)
        try:
            vf = VideoSendFrame()
            vf.set_resolution(self.width, self.height)
            vf.set_frame_rate(_frame_rate(self.fps))
            vf.set_fourcc(FourCC.RGBA)
            # clock_video=False: the render loop already paces frames to --fps. NDI's clocking would make the
            # worker also sleep to NDI's own schedule, and any drift between the two clocks would turn into
            # blocked sends and dropped frames.
            sender = Sender(self.name, clock_video=False, clock_audio=False)
            sender.set_video_frame(vf)
            sender.open()
        except SetupError:
            raise
        except Exception as e:
            raise SetupError(f"ndi: could not create NDI sender {self.name!r}: {e}") from None
        self._sender, self._frame = sender, vf
        self._worker = FrameWorker(self.label, self._send, depth=self.QUEUE_DEPTH, drop="oldest")
        log.info("ndi: publishing %r as %s, %dx%d @ %s fps", self.name, sender.name, self.width, self.height, _frame_rate(self.fps))

    @property
    def source_name(self) -> str:
        """The full name receivers list ("HOSTNAME (NAME)"), once open."""
        return self._sender.name if self._sender is not None else self.name

    def send_pixels(self, pixels: np.ndarray, frame_index: int, t: float | None = None) -> None:
        if self._worker is None:
            return
        if pixels.shape != (self.height, self.width, 4) or pixels.dtype != np.uint8:
            raise ValueError(f"ndi: expected ({self.height}, {self.width}, 4) uint8 pixels, got {pixels.shape} {pixels.dtype}")
        # The loop sets `realtime` (False only for offline renders, where waiting beats dropping).
        self._worker.submit(pixels, frame_index, block=not getattr(self, "realtime", True))
        self.frames_sent, self.frames_dropped = self._worker.sent, self._worker.dropped

    def _send(self, pixels: np.ndarray, frame_index: int) -> None:
        # Worker thread. write_video_async wants a flat uint8 view; the buffer is C-contiguous (H, W, 4), which
        # matches RGBA with a line stride of 4 * width. It copies into cyndilib's buffer and releases the GIL.
        self._sender.write_video_async(pixels.reshape(-1))

    def connections(self) -> int:
        """Receivers connected right now (0 when closed)."""
        if self._sender is None:
            return 0
        try:
            return int(self._sender.get_num_connections(0))
        except Exception:
            return 0

    def stats(self) -> dict[str, Any]:
        if self._worker is None:
            # The loop asks for stats after close(): report the final counts then.
            return dict(self._final_stats) if self._final_stats else super().stats()
        s = self._worker.stats()
        self.frames_sent, self.frames_dropped = s["sent"], s["dropped"]
        s["connections"] = self.connections()
        s["source"] = self.source_name
        return s

    def close(self) -> None:
        worker, self._worker = self._worker, None
        finished = True
        if worker is not None:
            finished = worker.close(timeout=5.0)
            self.frames_sent, self.frames_dropped = worker.sent, worker.dropped
            self._final_stats = {**worker.stats(), "source": self.source_name}
        sender, self._sender = self._sender, None
        if not finished:
            # Destroying the sender under a thread still inside write_video_async would crash the process;
            # leave it to process exit (the thread is a daemon).
            log.warning("ndi: sender thread did not finish within 5 s; leaving the NDI sender open")
        elif sender is not None:
            try:
                sender.close()
            except Exception as e:  # closing must not mask the error that brought us here
                log.warning("ndi: closing sender: %s", e)
        self._frame = None
