"""Optimisation profiles: which dimensions of a module's inputs are dynamic, and their min/opt/max.

One engine per network serves every shape the show uses, instead of one plan per call signature:

    unet, vae_decoder   latents (B, C, h, w): B = the stream batch (denoising steps 1-4, doubled by cfg=full), h and w
                        over the resolution range (in latent pixels: image pixels / 8); other batched inputs (timesteps,
                        text embeddings, SDXL's added conditions) follow B.
    vae_encoder         images (B, 3, H, W), the same range in image pixels.
    mapping, synthesis  static: StyleGAN renders one resolution at batch 1 (its psi, noise strength and the 0-d live
                        knobs are inputs; fixed shapes).

opt is the shape recorded from the show's own frame; min/max cover it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from engine.errors import UsageError

IMAGE_ROLES = {"unet": 8, "vae_decoder": 8, "vae_encoder": 1}  # role -> image pixels per tensor pixel of its 4-D input


@dataclass(frozen=True)
class Ranges:
    """The shapes a folder of engines must serve: batch 1..max_batch, each image side min_side..max_side pixels."""

    max_batch: int = 8
    min_side: int = 256
    max_side: int = 1024

    def __post_init__(self):
        if not (1 <= self.max_batch <= 64):
            raise UsageError(f"--max-batch {self.max_batch}: use 1..64")
        if not (16 <= self.min_side <= self.max_side <= 8192):
            raise UsageError(f"--sides {self.min_side}:{self.max_side}: need 16 <= min <= max <= 8192")


@dataclass
class TensorSpec:
    name: str
    dtype: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def covers(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.opt) and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    def json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], d["dtype"], tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass
class Profile:
    """The export's dynamic_shapes (torch.export.Dim per axis) and the engine's min/opt/max per input."""

    dynamic_shapes: tuple | None
    inputs: list[TensorSpec] = field(default_factory=list)

    @property
    def dynamic(self) -> bool:
        return any(s.min != s.max for s in self.inputs)


def profile_for(role: str, fed: list[torch.Tensor], ranges: Ranges) -> Profile:
    """The profile of one module (its recorded call's engine inputs `fed`, named in0, in1, ...)."""
    names = [f"in{i}" for i in range(len(fed))]
    static = [TensorSpec(n, dtype_name(x.dtype), tuple(x.shape), tuple(x.shape), tuple(x.shape)) for n, x in zip(names, fed)]
    scale = IMAGE_ROLES.get(role)
    if scale is None:
        return Profile(None, static)
    image = next((x for x in fed if x.ndim == 4), None)
    if image is None:
        return Profile(None, static)
    batch = int(image.shape[0])
    per_latent = 8 // scale  # 1 for latent inputs, 8 for the encoder's image
    # In the tensor's own pixels; the recorded size always fits.
    lo = min(ranges.min_side // 8, image.shape[2] // per_latent, image.shape[3] // per_latent)
    hi = max(ranges.max_side // 8, image.shape[2] // per_latent, image.shape[3] // per_latent)
    max_batch = max(ranges.max_batch, batch)
    b_dim = torch.export.Dim(f"{role}_batch", min=1, max=max_batch) if max_batch > 1 else None
    # A Dim needs min < max: a range of one size (--sides 512:512) keeps those axes static.
    h_dim = torch.export.Dim(f"{role}_h", min=lo, max=hi) if lo < hi else None
    w_dim = torch.export.Dim(f"{role}_w", min=lo, max=hi) if lo < hi else None
    dyn, specs = [], []
    for spec, x in zip(static, fed):
        if x.ndim == 4:
            dims = {0: b_dim}
            if h_dim is not None:
                dims.update({2: h_dim * per_latent, 3: w_dim * per_latent} if per_latent > 1 else {2: h_dim, 3: w_dim})
                lo_side, hi_side = lo * per_latent, hi * per_latent
            else:
                lo_side, hi_side = None, None
            lo_shape = (1, x.shape[1], lo_side or x.shape[2], lo_side or x.shape[3])
            hi_shape = (max_batch, x.shape[1], hi_side or x.shape[2], hi_side or x.shape[3])
        elif x.ndim >= 1 and x.shape[0] == batch:
            dims = {0: b_dim}
            lo_shape = (1, *x.shape[1:])
            hi_shape = (max_batch, *x.shape[1:])
        else:
            dyn.append(None)
            specs.append(spec)
            continue
        dims = {axis: d for axis, d in dims.items() if d is not None}
        if not dims:
            dyn.append(None)
            specs.append(spec)
            continue
        dyn.append(dims)
        specs.append(TensorSpec(spec.name, spec.dtype, tuple(int(v) for v in lo_shape), spec.opt, tuple(int(v) for v in hi_shape)))
    return Profile((tuple(dyn),), specs)
