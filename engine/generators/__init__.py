"""Generator registry: turn a `--generator SPEC` into a Generator.

SPEC:
  stylegan2               the embedded default: a StyleGAN2 (config-f architecture) randomly initialised from a
                          fixed seed; needs no download.
  PATH                    a StyleGAN network file: .pkl (official NVlabs StyleGAN2-ADA / StyleGAN3), .pt
                          (rosinality or our state dict), .safetensors (ours).
  diffusion:MODEL         few-step diffusion; MODEL is a local folder or a hub id found in the local HF cache.
Modules are imported lazily: diffusers is only imported for diffusion specs.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.errors import UsageError
from engine.generators.base import Generator
from engine.paths import user_path

__all__ = ["Generator", "create_generator", "STYLEGAN_SUFFIXES"]

STYLEGAN_SUFFIXES = (".pkl", ".pt", ".pth", ".safetensors")


def create_generator(spec: str, *, size: int | None = None, device: torch.device, options: dict[str, Any] | None = None,
                     output: tuple[int, int] | None = None) -> Generator:
    """Build the generator for `spec` on `device`.

    size: an exact square render size (StyleGAN: resized on the device; diffusion: N x N), as `engine project` uses.
    output: the show's output size (width, height) from --size WxH: the generator picks its native render size
    for it (StyleGAN: its square, see engine.output.stylegan_square; diffusion: the output's aspect, each side
    rounded to a multiple of 8). Neither: the generator's own size.
    `options` are generator-specific settings from the config file's [generator] table.
    Raises UsageError (unknown spec, missing file, unsupported size) with one clear line.
    """
    options = dict(options or {})
    if spec == "stylegan2":
        from engine.generators.stylegan import StyleGANGenerator

        return StyleGANGenerator.default(size=size, device=device, output=output, **options)
    if spec.startswith("diffusion:") or spec == "diffusion":
        from engine.generators.diffusion import DiffusionGenerator

        model = spec.partition(":")[2]
        return DiffusionGenerator.from_spec(model, size=size if output is None else output, device=device, **options)
    path = user_path(spec, "--generator")
    if path.suffix.lower() in STYLEGAN_SUFFIXES:
        if not path.is_file():
            raise UsageError(f"generator file not found: {path} (pass a .pkl/.pt/.safetensors StyleGAN network, or --generator stylegan2)")
        from engine.generators.stylegan import StyleGANGenerator

        return StyleGANGenerator.from_file(path, size=size, device=device, output=output, **options)
    raise UsageError(
        f"unknown generator {spec!r}; use stylegan2, a StyleGAN network file (.pkl/.pt/.safetensors) or diffusion:MODEL"
    )
