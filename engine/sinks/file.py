"""`--sink file:PATH`: record the output.

  file:out.mp4 | .mov | .mkv   H.264 (libx264 through PyAV, yuv420p, CRF 18), at the run's --fps
  file:frames/%05d.png         a lossless PNG sequence (printf-style frame number, starting at 0), one file per frame

A video's frames are stamped with their show time (pts = round(t x fps)), so it plays as long as the show ran even
when the loop ran below --fps or the sink dropped frames (the previous frame holds for the gap), and a live show
running faster than --fps keeps one frame per time slot (the others are counted as `merged`). An offline render's
show time is index / fps: every frame gets its own slot.

Encoding runs on a worker thread (engine.sinks._worker): a live show drops frames if the encoder falls behind
(counted in the stats), an offline render waits so every frame is written.

A recording that cannot be written fails loudly but alone: the path is checked for writing at setup (exit 2); the
first write error (a full disk, a removed drive) stops this sink's writing, with one log line, while the show and the
other sinks go on; at the end a video is opened again to check that it holds every frame written. `failed` in the
stats says why a recording was lost, and `engine run` then exits 1 naming it.
"""

from __future__ import annotations

import logging
import re
import tempfile
from fractions import Fraction

import numpy as np

from engine.errors import SetupError, UsageError
from engine.paths import user_path
from engine.sinks._worker import FrameWorker
from engine.sinks.base import Sink

log = logging.getLogger("engine.sinks.file")

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv"}
_SEQUENCE = re.compile(r"%0?\d*d")


class FileSink(Sink):
    kind = "file"
    needs_host = True

    def __init__(self, target: str = ""):
        super().__init__(target)
        if not target:
            raise UsageError("the file sink needs a path: --sink file:out.mp4 or --sink file:frames/%05d.png")
        self.path = user_path(target, "file sink")
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
        self.failed: str | None = None  # why the recording was lost; nothing more is written once set
        self.lost = 0  # frames not in the recording: after a failure, and for a video every frame before it too
        self.merged = 0  # frames of a show faster than --fps that fell in an already written time slot
        self._last_pts = -1
        self._rate = Fraction(30)

    def open(self, gl, width: int, height: int, fps: float) -> None:
        self.width, self.height = width, height
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SetupError(f"file sink: cannot create folder {self.path.parent}: {e.strerror}") from None
        self._check_writable()
        if not self.sequence:
            if width % 2 or height % 2:
                raise SetupError(f"file sink: H.264 needs even dimensions, got {width}x{height}; use an even --size")
            import av

            try:
                self.container = av.open(str(self.path), mode="w")
            except Exception as e:  # av raises its own OSError subclasses
                raise SetupError(f"file sink: cannot write {self.path}: {e}") from None
            rate = Fraction(fps).limit_denominator(1001)
            self._rate = rate
            self.stream = self.container.add_stream("libx264", rate=rate)
            self.stream.width, self.stream.height = width, height
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": "18", "preset": "veryfast"}
        # drop="newest" in a live show: a recording that falls behind loses the frames it cannot take, in order.
        self.worker = FrameWorker(self.label, self._write, depth=8, drop="newest")

    def send_pixels(self, pixels: np.ndarray, frame_index: int, t: float | None = None) -> None:
        # The worker copies into its own recycled buffers: the readback buffer is reused two frames later.
        if not self.sequence and t is not None:
            frame_index = int(round(t * self._rate))  # the show-time slot: the video's pts (time base 1/rate)
        self.worker.submit(pixels, frame_index, block=not self.realtime)

    def _check_writable(self) -> None:
        """At setup: can this path be written at all (a read-only or virtual file system, a missing permission)?"""
        try:
            if self.sequence:
                with tempfile.NamedTemporaryFile(dir=self.path.parent, prefix=".engine-write-check-"):
                    pass
            else:
                with open(self.path, "wb"):
                    pass
        except OSError as e:
            raise SetupError(f"file sink: cannot write {self.path}: {e.strerror or e}") from None

    def _write(self, pixels: np.ndarray, frame_index: int) -> None:
        if self.failed:
            self.lost += 1
            return
        try:
            if self.sequence:
                from PIL import Image

                Image.fromarray(pixels[..., :3]).save(str(self.path) % self.count, compress_level=1)
            else:
                import av

                if frame_index <= self._last_pts:
                    self.merged += 1  # this time slot has its frame (a show running faster than --fps)
                    return
                frame = av.VideoFrame.from_ndarray(pixels, format="rgba")
                frame.pts = frame_index
                frame.time_base = Fraction(1) / self._rate
                self._last_pts = frame_index
                for packet in self.stream.encode(frame):
                    self.container.mux(packet)
        except Exception as e:  # OSError (ENOSPC, EIO), av's errors: stop here, never write into a broken file
            self._fail(f"writing frame {self.count} failed: {_reason(e)}")
            self.lost += 1
            return
        self.count += 1

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
            if not self.sequence:  # a video without its end (the index) is lost whole; PNGs already written stay
                self.lost += self.count
                self.count = 0
            log.error("file sink %s: %s; this recording stops here, the show goes on", self.path, reason)

    def stats(self):
        out = self.worker.stats() if self.worker is not None else super().stats()
        out.update(written=self.count, failed=self.failed, lost=self.lost, merged=self.merged)
        return out

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close(timeout=300.0)  # an offline render drains every queued frame
        if self.container is not None:
            container, self.container = self.container, None
            try:
                if not self.failed:
                    for packet in self.stream.encode():  # flush the encoder's delayed frames
                        container.mux(packet)
            except Exception as e:
                self._fail(f"finishing the file failed: {_reason(e)}")
            try:
                container.close()
            except Exception as e:
                self._fail(f"closing the file failed: {_reason(e)}")
            if not self.failed:
                self._verify()

    def _verify(self) -> None:
        """Open the finished video again: an encoder or file system that swallowed an error leaves a file without
        its index, or with fewer frames than were written."""
        import av

        try:
            with av.open(str(self.path)) as c:
                frames = c.streams.video[0].frames if c.streams.video else 0
        except Exception as e:
            self._fail(f"the finished file cannot be read back ({_reason(e)}): it is incomplete")
            return
        # Matroska keeps no frame count in its header (and survives truncation by design): check the others.
        if self.count and frames != self.count and (frames or self.path.suffix.lower() != ".mkv"):
            self._fail(f"the finished file holds {frames} of the {self.count} frames written: it is incomplete")


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.splitlines()[0]
