"""Sources: the image an img2img generator (diffusion) transforms each frame, switchable live by `source.mode`.

SPEC (`--source SPEC`) -> parameter values (`parse_source_spec`):
    feedback           the previous output after the perturb shader (default; seed 001's loop)
    camera[:TARGET]    a camera index (default 0), a video file (looped at its frame rate) or a stream URL
    ndi[:NAME]         an NDI source ("HOST (NAME)" or NAME; empty = the first found)
    image:PATH         a still image, loaded once
    noise              smooth animated noise (source.noise_scale cells across)

`SourceManager.read(mode, snap, when)` returns the image of source `mode` (normally snap.source.mode), (1, 3, H, W) float32 [-1, 1] on the device,
or None when there is none yet (the generator then feeds back its own previous output). A source is opened the
first time its mode is selected and stays open while its target is unchanged, so switching back is instant;
opening never blocks on a device (capture threads open cameras and find NDI sources).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from engine.clock import FrameTime
from engine.errors import EngineError, UsageError
from engine.params import Params
from engine.sources.base import Source, fit_into
from engine.sources.still import FeedbackSource, ImageSource, NoiseSource

log = logging.getLogger(__name__)

__all__ = ["Source", "SourceManager", "FeedbackSource", "parse_source_spec", "open_source", "fit_into", "MODES"]

MODES = ("feedback", "camera", "ndi", "image", "noise")


def parse_source_spec(spec: str) -> dict[str, Any]:
    """`--source SPEC` -> {"source.mode": ..., "source.<target>": ...} for ParamStore.update. UsageError if bad."""
    spec = (spec or "").strip()
    kind, sep, target = spec.partition(":")
    kind = kind.lower()
    if kind not in MODES:
        raise UsageError(f"unknown source {spec!r}; use feedback, camera[:INDEX|FILE|URL], ndi[:NAME], image:PATH or noise")
    values: dict[str, Any] = {"source.mode": kind}
    if kind == "camera":
        values["source.camera"] = target or "0"
    elif kind == "ndi":
        values["source.ndi"] = target
    elif kind == "image":
        if not target:
            raise UsageError("--source image needs a file: --source image:PATH")
        values["source.image"] = target
    elif target:
        raise UsageError(f"source {kind!r} takes no target (got {spec!r})")
    return values


def open_source(mode: str, target: str, height: int, width: int, device: torch.device | str, *, seed: int = 0) -> Source:
    """Open one source. Raises UsageError (bad target) or SetupError (missing package)."""
    if mode == "camera":
        from engine.sources.camera import CameraSource

        return CameraSource(target, height, width, device)
    if mode == "ndi":
        from engine.sources.ndi import NDISource

        return NDISource(target, height, width, device)
    if mode == "image":
        return ImageSource(target, height, width, device)
    if mode == "noise":
        return NoiseSource(height, width, device, seed=seed)
    if mode == "feedback":
        return FeedbackSource(height, width, device)
    raise UsageError(f"unknown source mode {mode!r}; one of {', '.join(MODES)}")


def _target(snap: Params, mode: str) -> str:
    s = snap.source
    return {"camera": s.camera, "ndi": s.ndi, "image": s.image}.get(mode, "")


class SourceManager:
    """Holds the open sources and answers the current one's image each frame (render thread).

    The feedback source is `self.feedback`: a loop that does its own feedback readback (engine.loop downloads the
    perturbed previous output itself) never needs it; a loop without GL can `feedback.write(image)` each frame."""

    def __init__(self, width: int, height: int, device: torch.device | str, *, seed: int = 0):
        self.height = int(height)
        self.width = int(width)
        self.device = torch.device(device)
        self.seed = seed
        #: The loop writes the perturbed previous output here: feedback.capture(uploader, texture).
        self.feedback = FeedbackSource(self.height, self.width, self.device)
        self._open: dict[str, tuple[str, Source]] = {"feedback": ("", self.feedback)}
        self._failed: dict[str, tuple[str, str]] = {}  # mode -> (target, reason), so a bad target is said once

    def open(self, mode: str, target: str = "", *, log_failure: bool = True) -> Source | None:
        """The source for (mode, target), opening it (and closing the previous target of that mode) if needed.
        Returns None when it cannot be opened; the reason is logged once per target and kept in `problems`."""
        current = self._open.get(mode)
        if current is not None and current[0] == target:
            return current[1]
        failed = self._failed.get(mode)
        if failed is not None and failed[0] == target:
            return None
        if current is not None:
            current[1].close()
            del self._open[mode]
        try:
            src = open_source(mode, target, self.height, self.width, self.device, seed=self.seed)
        except EngineError as e:
            # Live switching must not end the show: a bad path sent over OSC is reported, not raised.
            self._failed[mode] = (target, str(e))
            if log_failure:
                log.warning("source %s: %s", mode, e)
            return None
        self._failed.pop(mode, None)
        self._open[mode] = (target, src)
        return src

    @property
    def problems(self) -> dict[str, str]:
        out = {m: reason for m, (_, reason) in self._failed.items()}
        for m, (_, src) in self._open.items():
            if src.error:
                out[m] = src.error
        return out

    def open_at_setup(self, snap: Params) -> None:
        """Open the show's starting source now. Unlike a live switch (logged, the show goes on), a source that
        cannot open at setup is an error: an offline render would otherwise write the wrong video."""
        mode = snap.source.mode
        if mode == "feedback":
            return
        target = _target(snap, mode)
        if self.open(mode, target, log_failure=False) is None:
            reason = self._failed[mode][1].removeprefix(f"{mode} source: ")
            raise UsageError(f"--source {mode}{':' + target if target else ''}: {reason}")

    def read(self, mode: str, snap: Params, when: FrameTime | None = None) -> torch.Tensor | None:
        """(1, 3, H, W) float32 [-1, 1] on the device, or None (no frame yet, or the source failed: see problems)."""
        src = self.open(mode, _target(snap, mode))
        if src is None:
            return None
        if isinstance(src, NoiseSource):
            return src.read(when, snap.source.fit, cells=snap.source.noise_scale)
        return src.read(when, snap.source.fit)

    def stats(self) -> dict[str, Any]:
        return {m: src.stats() for m, (_, src) in self._open.items() if src.stats()}

    def close(self) -> None:
        for _, src in self._open.values():
            src.close()
        self._open = {"feedback": ("", self.feedback)}
