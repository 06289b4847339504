"""The sink interface. A sink publishes the engine's output frame.

Two kinds of sink:
  * texture sinks (window, Spout, Syphon) take the output GL texture directly: no host copy. They are called on
    the render thread with the engine's GL context current.
  * host sinks (file, NDI, v4l2) set `needs_host = True` and get pixels in host memory, read back
    asynchronously (double-buffered PBOs in engine.gl.Readback), one frame late, never stalling the loop.

Pixel contract: `pixels` is a (H, W, 4) uint8 RGBA numpy array, row 0 = top of the image. It is only valid
for the duration of the call: copy it if you keep it. `t` is the frame's show time in seconds (a recording stamps
frames with it; None when unknown).
A sink must not block the render loop for longer than a frame: slow work (encoding, network) goes to a worker
thread with a bounded queue that drops frames (and counts the drops) rather than stalling.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np


class Sink(abc.ABC):
    #: Short type name used in specs: "file", "ndi", ...
    kind: str = "sink"
    #: True: the loop reads the output back to host memory for this sink (send_pixels); False: send_texture.
    needs_host: bool = False

    def __init__(self, target: str = ""):
        self.target = target
        #: Set by the loop before open(): True in a live show (drop frames rather than stall the loop), False
        #: for an offline render (only file/null sinks: every frame must be written, waiting is fine).
        self.realtime = False
        self.frames_sent = 0
        self.frames_dropped = 0

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.target}" if self.target else self.kind

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(available, reason): whether this sink can work on this machine, and if not, what to do about it."""
        return True, ""

    def open(self, gl: Any, width: int, height: int, fps: float) -> None:
        """Called once at setup with the engine's GL context (engine.gl.GL). Raise SetupError on failure."""

    def send_texture(self, texture: Any, frame_index: int, t: float | None = None) -> None:
        """Texture sinks: publish `texture` (moderngl.Texture, RGBA8, row 0 = top)."""

    def send_pixels(self, pixels: np.ndarray, frame_index: int, t: float | None = None) -> None:
        """Host sinks: publish (H, W, 4) uint8 RGBA pixels, row 0 = top."""

    def should_close(self) -> bool:
        """True when the user asked to stop through this sink (e.g. closed the preview window)."""
        return False

    def stats(self) -> dict[str, Any]:
        return {"sent": self.frames_sent, "dropped": self.frames_dropped}

    def close(self) -> None:
        """Flush and release. Called once at exit, also after errors."""
