"""`--sink file:PATH`: record the output.

  file:out.mp4 | .mov | .mkv   H.264 (libx264 through PyAV, yuv420p, CRF 18), at the run's --fps
  file:frames/%05d.png         a lossless PNG sequence (printf-style frame number, starting at 0)

Encoding runs on a worker thread (engine.sinks._worker): a live show drops frames if the encoder falls behind
(counted in the stats), an offline render waits so every frame is written.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np

from engine.errors import SetupError, UsageError
from engine.sinks.base import Sink
from engine.sinks._worker import FrameWorker

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv"}
_SEQUENCE = re.compile(r"%0?\d*d")


class FileSink(Sink):
    kind = "file"
    needs_host = True

    def __init__(self, target: str = ""):
        super().__init__(target)
        if not target:
            raise UsageError("the file sink needs a path: --sink file:out.mp4 or --sink file:frames/%05d.png")
        self.path = Path(target).expanduser()
        self.sequence = bool(_SEQUENCE.search(target))
        if self.sequence:
            if self.path.suffix.lower() != ".png":
                raise UsageError(f"file sink {target!r}: image sequences are written as PNG; use e.g. frames/%05d.png")
            try:
                target % 0
            except (TypeError, ValueError):
                raise UsageError(f"file sink {target!r}: put exactly one frame-number field like %05d in the name") from None
        elif self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise UsageError(
                f"file sink {target!r}: unsupported file type {self.path.suffix or '(none)'}; "
                "use .mp4, .mov, .mkv or a PNG sequence like frames/%05d.png"
            )
        self.worker: FrameWorker | None = None
        self.container = None
        self.stream = None
        self.count = 0

    def open(self, gl, width: int, height: int, fps: float) -> None:
        self.width, self.height = width, height
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SetupError(f"file sink: cannot create folder {self.path.parent}: {e.strerror}") from None
        if not self.sequence:
            if width % 2 or height % 2:
                raise SetupError(f"file sink: H.264 needs even dimensions, got {width}x{height}; use an even --size")
            import av

            try:
                self.container = av.open(str(self.path), mode="w")
            except Exception as e:  # av raises its own OSError subclasses
                raise SetupError(f"file sink: cannot write {self.path}: {e}") from None
            rate = Fraction(fps).limit_denominator(1001)
            self.stream = self.container.add_stream("libx264", rate=rate)
            self.stream.width, self.stream.height = width, height
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": "18", "preset": "veryfast"}
        # drop="newest" in a live show: a recording that falls behind loses the frames it cannot take, in order.
        self.worker = FrameWorker(self.label, self._write, depth=8, drop="newest")

    def send_pixels(self, pixels: np.ndarray, frame_index: int) -> None:
        # The worker copies into its own recycled buffers: the readback buffer is reused two frames later.
        self.worker.submit(pixels, frame_index, block=not self.realtime)

    def _write(self, pixels: np.ndarray, frame_index: int) -> None:
        if self.sequence:
            from PIL import Image

            Image.fromarray(pixels[..., :3]).save(str(self.path) % self.count, compress_level=1)
        else:
            import av

            frame = av.VideoFrame.from_ndarray(pixels, format="rgba")
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        self.count += 1

    def stats(self):
        out = self.worker.stats() if self.worker is not None else super().stats()
        out["written"] = self.count
        return out

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close(timeout=300.0)  # an offline render drains every queued frame
        if self.container is not None:
            try:
                for packet in self.stream.encode():  # flush the encoder's delayed frames
                    self.container.mux(packet)
            finally:
                self.container.close()
                self.container = None
