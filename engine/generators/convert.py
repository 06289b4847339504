"""rosinality/stylegan2-pytorch checkpoints -> NVlabs StyleGAN2 names (engine.generators.stylegan2.Generator).

rosinality's Generator(size, style_dim, n_mlp, channel_multiplier, blur_kernel=[1,3,3,1], lr_mlp=0.01) computes
the same function as NVlabs' config-F StyleGAN2 (skip generator); only names and tensor layouts differ:

  rosinality                              NVlabs                                  layout change
  style.{i+1}.weight / .bias              mapping.fc{i}.weight / .bias            none (both store w*lr_mul^-1 and
                                                                                  scale by lr_mul/sqrt(in) at run time)
  input.input            (1, C, 4, 4)     synthesis.b4.const         (C, 4, 4)    drop batch dim
  conv1.*                                 synthesis.b4.conv1.*
  convs.{2k}.* / convs.{2k+1}.*           synthesis.b{8*2^k}.conv0.* / .conv1.*
  to_rgb1.* / to_rgbs.{k}.*               synthesis.b4.torgb.* / b{8*2^k}.torgb.*
   .conv.weight          (1, O, I, k, k)   .weight                   (O, I, k, k)  drop batch dim
   .conv.modulation.weight / .bias         .affine.weight / .bias                  none (bias_init 1 in both)
   .noise.weight         (1,)              .noise_strength           ()           scalar
   .activate.bias        (O,)              .bias                     (O,)         none (FusedLeakyReLU = bias_act lrelu,
                                                                                  gain sqrt 2)
   (to_rgb) .bias        (1, 3, 1, 1)      .bias                     (3,)         flatten
  noises.noise_{j}       (1, 1, R, R)     b4.conv1 (j=0), then b{R}.conv0 / .conv1 .noise_const (R, R)
  *.blur.kernel, *.upsample.kernel        b*.resample_filter, b*.conv*.resample_filter: fixed [1,3,3,1]; checked,
                                          not copied (NVlabs' buffer is the normalised filter, rosinality's x4)
  (none)                                  mapping.w_avg: the checkpoint's 'latent_avg' when present (convert_weight.py
                                          writes it), else estimated as the mean of mapping(z) over 4096 z drawn from
                                          RandomState(0) (rosinality itself re-estimates it per run with
                                          mean_latent(4096), so truncated images differ slightly from its own)

Numerics: equalized-lr scales, demodulation (eps 1e-8), the transposed-conv + blur upsampling and its padding,
the skip-image upsampling, noise injection before the activation and the latent indexing (conv ws[i], torgb ws[i+1]
overlap) are identical, so outputs agree to float rounding (tests/test_pickle_loader.py checks < 1e-4 against a
rosinality-layout network). Settings the state dict cannot tell: lr_mlp (assumed 0.01, rosinality's fixed
default) and the blur kernel (checked against [1,3,3,1]). The result uses conv_clamp=None and num_fp16_res=0:
rosinality never clamps and runs fp32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.errors import UsageError

ROSINALITY_MARKERS = ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.conv.weight")


def find_rosinality_state(obj: Any) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
    """From a torch.load result: (g_ema state dict, latent_avg or None), or (None, None) when not rosinality."""
    if not isinstance(obj, dict):
        return None, None
    latent_avg = obj.get("latent_avg") if isinstance(obj.get("latent_avg"), torch.Tensor) else None
    for key in ("g_ema", "g"):  # prefer the EMA generator, as rosinality's generate.py does
        sd = obj.get(key)
        if isinstance(sd, dict) and all(m in sd for m in ROSINALITY_MARKERS):
            return sd, latent_avg
    if all(m in obj for m in ROSINALITY_MARKERS):
        return obj, latent_avg
    return None, None


def _blur_kernel_ok(k: torch.Tensor) -> bool:
    """rosinality's Blur/Upsample kernel for [1,3,3,1]: outer product normalised to 1, times 1 or factor^2 = 4."""
    ref = torch.tensor([1.0, 3.0, 3.0, 1.0])
    ref = torch.outer(ref, ref) / 64.0
    if tuple(k.shape) != (4, 4):
        return False
    k = k.float()
    return any(torch.allclose(k, ref * s, atol=1e-6) for s in (1.0, 4.0))


def rosinality_to_nvlabs(sd: dict[str, torch.Tensor], latent_avg: torch.Tensor | None = None,
                         source: str = "checkpoint") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Convert a rosinality Generator state dict. Returns (NVlabs Generator init kwargs, full NVlabs state dict
    including resample filters and mapping.w_avg; w_avg is zeros when latent_avg is None -- see estimate_w_avg)."""
    from engine.generators.stylegan2 import setup_filter

    def take(name: str) -> torch.Tensor:
        t = sd.get(name)
        if not isinstance(t, torch.Tensor):
            raise UsageError(f"{source}: rosinality checkpoint lacks {name}; cannot convert it")
        used.add(name)
        return t.detach().to(torch.float32)

    used: set[str] = set()
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in sd:
        n_mlp += 1
    n_up = 0
    while f"to_rgbs.{n_up}.conv.weight" in sd:
        n_up += 1
    resolutions = [4 * 2 ** k for k in range(n_up + 1)]
    img_resolution = resolutions[-1]
    w_dim = int(sd["style.1.weight"].shape[1])
    z_dim = w_dim  # rosinality's mapping is square: style_dim -> style_dim

    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = take(f"style.{i + 1}.weight")
        out[f"mapping.fc{i}.bias"] = take(f"style.{i + 1}.bias")

    def styled_conv(src: str, dst: str, noise_idx: int) -> None:
        out[f"{dst}.weight"] = take(f"{src}.conv.weight")[0]  # (1, O, I, k, k) -> (O, I, k, k)
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.noise_strength"] = take(f"{src}.noise.weight").reshape([])
        out[f"{dst}.bias"] = take(f"{src}.activate.bias")
        out[f"{dst}.noise_const"] = take(f"noises.noise_{noise_idx}")[0, 0]  # (1, 1, R, R) -> (R, R)

    def to_rgb(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = take(f"{src}.conv.weight")[0]
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.bias"] = take(f"{src}.bias").reshape(-1)  # (1, 3, 1, 1) -> (3,)

    out["synthesis.b4.const"] = take("input.input")[0]
    styled_conv("conv1", "synthesis.b4.conv1", 0)
    to_rgb("to_rgb1", "synthesis.b4.torgb")
    for k, res in enumerate(resolutions[1:]):
        styled_conv(f"convs.{2 * k}", f"synthesis.b{res}.conv0", 2 * k + 1)
        styled_conv(f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1", 2 * k + 2)
        to_rgb(f"to_rgbs.{k}", f"synthesis.b{res}.torgb")

    # Fixed filters: verify they are the standard [1,3,3,1] ones (NVlabs' buffers are rebuilt below).
    for name, t in sd.items():
        if name.endswith(".kernel") and isinstance(t, torch.Tensor):
            if not _blur_kernel_ok(t):
                raise UsageError(f"{source}: {name} is not the [1,3,3,1] blur kernel; only standard StyleGAN2 converts")
            used.add(name)
    leftover = sorted(k for k in sd if k not in used)
    if leftover:
        raise UsageError(f"{source}: rosinality checkpoint has tensors the conversion does not know: "
                         f"{', '.join(leftover[:3])}" + (f" (+{len(leftover) - 3} more)" if len(leftover) > 3 else ""))

    # Channel widths -> NVlabs' min(channel_base // res, channel_max).
    channels = {res: int(out[f"synthesis.b{res}.conv1.weight"].shape[0]) for res in resolutions}
    channel_max = max(channels.values())
    below = [res for res in resolutions if channels[res] < channel_max]
    channel_base = channels[below[0]] * below[0] if below else channel_max * img_resolution
    if any(min(channel_base // res, channel_max) != c for res, c in channels.items()):
        raise UsageError(f"{source}: channel widths {channels} do not follow min(base / res, max); cannot express "
                         f"this network as an NVlabs StyleGAN2")

    filt = setup_filter([1, 3, 3, 1])
    for res in resolutions:
        out[f"synthesis.b{res}.resample_filter"] = filt.clone()
        out[f"synthesis.b{res}.conv1.resample_filter"] = filt.clone()
        if res > 4:
            out[f"synthesis.b{res}.conv0.resample_filter"] = filt.clone()
    out["mapping.w_avg"] = (latent_avg.detach().to(torch.float32).reshape(-1) if latent_avg is not None
                            else torch.zeros([w_dim]))

    kwargs: dict[str, Any] = dict(
        z_dim=z_dim, c_dim=0, w_dim=w_dim, img_resolution=img_resolution, img_channels=3,
        mapping_kwargs=dict(num_layers=n_mlp, lr_multiplier=0.01),
        channel_base=int(channel_base), channel_max=int(channel_max), num_fp16_res=0, conv_clamp=None,
        architecture="skip",
    )
    return kwargs, out


@torch.no_grad()
def estimate_w_avg(net: torch.nn.Module, n: int = 4096, seed: int = 0) -> None:
    """mapping.w_avg := mean of mapping(z) over n z ~ RandomState(seed).randn (what training's EMA tracks)."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(n, net.z_dim).astype(np.float32))
    c = torch.zeros([n, net.c_dim])
    ws = net.mapping(z, c)  # (n, num_ws, w_dim)
    net.mapping.w_avg.copy_(ws[:, 0].mean(dim=0))

