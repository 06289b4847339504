"""The show clock's unit: when a frame is. The render loop (engine/loop.py) makes one FrameTime per frame, from the
wall clock or from the frame index (--clock), and hands it to the generator, the sources and every controller.

It lives here, with no heavy imports, because many rooms use it: control and the CLI must not import torch (or the
generators) just to name a frame's time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FrameTime:
    """When a frame is: `t` seconds on the show clock (wall or frame-based, see loop), its index, and `dt` seconds
    since the previous frame."""

    t: float
    index: int
    dt: float = 0.0
