"""The generator interface: a parameter snapshot (and, for img2img, a source image) in, an image tensor out.

Generators are plain PyTorch. They never import GL, OSC or sinks. Speedups (torch.compile, CUDA graphs,
TensorRT, Triton kernels) are applied from outside by engine.backends.

Tensor contract at the boundary (noted here once, relied on by upload/interop):
    output: (1, 3, H, W), float16/float32/bfloat16, values nominally in [-1, 1], on `generator.device`,
            row 0 = top of the image.
    source (img2img only): (1, 3, H, W) float in [-1, 1] on the same device, row 0 = top.
"""

from __future__ import annotations

import abc
from typing import Any

import torch

from engine.clock import FrameTime
from engine.params import Params


class Generator(abc.ABC):
    name: str = "generator"
    #: True for img2img generators: the loop passes the source image (feedback, camera, ...) each frame.
    wants_source: bool = False
    #: dtype of the frames it returns: the uploader compiles its layout kernel for it at setup, not on frame 0.
    output_dtype: torch.dtype = torch.float32

    def __init__(self, height: int, width: int, device: torch.device):
        self.height = int(height)
        self.width = int(width)
        self.device = torch.device(device)

    @abc.abstractmethod
    def __call__(self, snap: Params, when: FrameTime, source: torch.Tensor | None = None) -> torch.Tensor:
        """Render one frame: (1, 3, H, W) in [-1, 1] on self.device. No host syncs on CUDA."""

    def stills(self, snaps: list[Params]) -> torch.Tensor:
        """Still images, one per snapshot (engine serve, engine triton): (N, 3, H, W) in [-1, 1] on self.device.
        Each is rendered at t = 0 from its own parameters. Default: one call per snapshot; a generator that can render
        a batch in one pass (StyleGAN) overrides this."""
        still = FrameTime(t=0.0, index=0, dt=0.0)
        return torch.cat([self(snap, still, None).clone() for snap in snaps])

    def info(self) -> dict[str, Any]:
        """What `engine info --generator` and the stats print about this generator."""
        return {"name": self.name, "size": [self.width, self.height], "device": str(self.device)}

    def modules(self) -> dict[str, torch.nn.Module]:
        """The nn.Modules a backend may compile or replace, by role name (e.g. {"synthesis": ...})."""
        return {}

    def needs_source(self, snap: Params) -> bool:
        """Does this frame read its source? (wants_source generators only; diffusion's txt2img does not, and the
        loop then skips the feedback pass and the texture download.)"""
        return self.wants_source

    def validate(self, snap: Params) -> None:
        """Setup check of the show's starting parameters: raise UsageError (one line) for what the live path would
        only warn about (a layer edit naming no parameter, a raw z of the wrong length). Default: nothing to check."""

    @property
    def weights_edited(self) -> bool:
        """True while live parameters have changed the modules' weights or buffers from their setup values (layer
        edits, network blending, StyleGAN3's input transform). A backend that bakes weights into an engine
        (TensorRT) runs the module eagerly meanwhile. Default: never."""
        return False

    def shape_variants(self, base: Params) -> list[Params]:
        """Parameter snapshots that change the shapes the modules see (e.g. diffusion steps -> UNet batch), for a
        compiled backend to prepare at setup when a live control (the governor) will move between them. Default:
        none; shapes first met in the loop run eager rather than compile there."""
        return []

    def stats(self) -> dict[str, Any]:
        """Counters for the run summary (e.g. frames skipped by a similarity filter)."""
        return {}

    def close(self) -> None:
        pass
