"""StyleGAN2 (configs E/F) in plain PyTorch, module-for-module compatible with NVlabs.

Reimplements the generator half of NVlabs' `training/networks_stylegan2.py` (stylegan3 repo; the StyleGAN2-ADA
`training/networks.py` generator has the same structure) without the custom CUDA ops: upfirdn2d, bias_act and
conv2d_resample are written here with torch ops, following NVlabs' reference ("ref") implementations.

Compatibility contract (a loader builds these classes from the init kwargs stored in official .pkl files and
loads tensors by name, so none of this may drift from NVlabs):
  * constructor signatures and defaults of MappingNetwork, SynthesisLayer, ToRGBLayer, SynthesisBlock,
    SynthesisNetwork, Generator, FullyConnectedLayer, Conv2dLayer;
  * attribute names, parameter and buffer names: mapping.fc{i}.weight/bias, mapping.embed.*, mapping.w_avg,
    synthesis.b{res}.const, synthesis.b{res}.resample_filter, synthesis.b{res}.conv{0,1}.{affine.weight,
    affine.bias, weight, bias, noise_const, noise_strength, resample_filter}, synthesis.b{res}.torgb.{affine.*,
    weight, bias}, synthesis.b{res}.skip.* (resnet);
  * numerics: equalized learning rate (weight_gain), lr_multiplier, normalize_2nd_moment, demodulation,
    [1,3,3,1] resampling filter, lrelu with gain sqrt(2), conv_clamp, fp16 on the `num_fp16_res` highest
    resolutions (CUDA only; CPU runs fp32, as NVlabs does).

Additions (no renames): forward kwarg `noise_strength` (a global multiplier on every layer's learned noise
strength; float or 0-d tensor) and Generator.init_kwargs (what the network was built with, for saving).

Shapes: z (N, z_dim) -> mapping -> ws (N, num_ws, w_dim) -> synthesis -> img (N, img_channels, R, R) float32.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------------------
# Ops: torch versions of NVlabs torch_utils.ops (upfirdn2d, bias_act, conv2d_resample, fma), reference semantics.
# ----------------------------------------------------------------------------------------------------------------

_ACT_DEF_GAIN = {"linear": 1.0, "relu": math.sqrt(2), "lrelu": math.sqrt(2), "tanh": 1.0, "sigmoid": 1.0,
                 "elu": 1.0, "selu": 1.0, "softplus": 1.0, "swish": math.sqrt(2)}
_ACT_DEF_ALPHA = {"lrelu": 0.2, "elu": 1.0}


def setup_filter(f: Any, device: torch.device | str = "cpu", normalize: bool = True, flip_filter: bool = False,
                 gain: float = 1, separable: bool | None = None) -> torch.Tensor:
    """NVlabs upfirdn2d.setup_filter: [1,3,3,1] -> its normalised 4x4 outer product (sum 1), float32.
    1-D filters with >= 8 taps stay 1-D (separable), as in NVlabs."""
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    assert f.ndim in (0, 1, 2) and f.numel() > 0
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    assert f.ndim == (1 if separable else 2)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def _parse_scaling(s: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(s, int):
        return s, s
    sx, sy = s
    return int(sx), int(sy)


def _parse_padding(p: int | Sequence[int]) -> tuple[int, int, int, int]:
    if isinstance(p, int):
        return p, p, p, p
    if len(p) == 2:
        px, py = p
        return px, px, py, py
    px0, px1, py0, py1 = p
    return px0, px1, py0, py1


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    if f is None:
        return 1, 1
    fw = int(f.shape[-1])
    fh = int(f.shape[0])
    return fw, fh


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int | Sequence[int] = 1, down: int | Sequence[int] = 1,
              padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter, downsample (NVlabs _upfirdn2d_ref).

    x: (N, C, H, W); f: 2-D (fh, fw) or 1-D separable filter, or None (identity).
    out: (N, C, (H*up + py0 + py1 - fh + 1) // down, ...) -- same dtype as x.
    """
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    n, c, in_h, in_w = x.shape
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)

    # Upsample by inserting zeros.
    if upx > 1 or upy > 1:
        x = x.reshape(n, c, in_h, 1, in_w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, in_h * upy, in_w * upx)

    # Pad or crop.
    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0): x.shape[2] - max(-pady1, 0), max(-padx0, 0): x.shape[3] - max(-padx1, 0)]

    # Filter: NVlabs convolves (flips) unless flip_filter; conv2d correlates, hence the flip.
    f = f * (gain ** (f.ndim / 2))
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    # Depthwise conv with the filter repeated per channel (NVlabs). The weight must be contiguous: an
    # expand()ed view sends CPU conv2d to its slow reference kernel.
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        wgt = f[None, None].repeat(c, 1, 1)
        x = F.conv2d(x, wgt.unsqueeze(2), groups=c)
        x = F.conv2d(x, wgt.unsqueeze(3), groups=c)

    # Downsample by throwing away pixels.
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2, padding: int | Sequence[int] = 0,
               flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H*up, W*up), filtered with f (NVlabs upfirdn2d.upsample2d)."""
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [padx0 + (fw + upx - 1) // 2, padx1 + (fw - upx) // 2, pady0 + (fh + upy - 1) // 2, pady1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2, padding: int | Sequence[int] = 0,
                 flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H/down, W/down), filtered with f (NVlabs upfirdn2d.downsample2d)."""
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [padx0 + (fw - downx + 1) // 2, padx1 + (fw - downx) // 2, pady0 + (fh - downy + 1) // 2, pady1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain)


def _activate(x: torch.Tensor, act: str, alpha: float | None, inplace: bool) -> torch.Tensor:
    if act == "linear":
        return x
    if act == "lrelu":
        a = float(alpha if alpha is not None else _ACT_DEF_ALPHA["lrelu"])
        return F.leaky_relu_(x, a) if inplace else F.leaky_relu(x, a)
    if act == "relu":
        return x.relu_() if inplace else F.relu(x)
    if act == "tanh":
        return torch.tanh(x)
    if act == "sigmoid":
        return torch.sigmoid(x)
    if act == "elu":
        return F.elu(x, float(alpha if alpha is not None else 1.0))
    if act == "selu":
        return F.selu(x)
    if act == "softplus":
        return F.softplus(x)
    if act == "swish":
        return torch.sigmoid(x) * x
    raise ValueError(f"unknown activation {act!r}")


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """x + b (broadcast along `dim`), activation, * gain, clamp to +-clamp (NVlabs _bias_act_ref). Shape kept.

    Without autograd (live rendering) the steps after the bias add run in place on the fresh sum: one
    allocation instead of four, the saving NVlabs' fused CUDA kernel makes. With autograd (projection) every
    step is out of place so the backward pass sees the values it saved."""
    inplace = b is not None and not (torch.is_grad_enabled() and (x.requires_grad or b.requires_grad))
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = _activate(x, act, alpha, inplace)
    g = float(gain if gain is not None else _ACT_DEF_GAIN[act])
    if g != 1:
        x = x.mul_(g) if inplace else x * g
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-clamp, clamp) if inplace else x.clamp(-clamp, clamp)
    return x


def _conv2d_wrapper(x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding: int | Sequence[int] = 0,
                    groups: int = 1, transpose: bool = False, flip_weight: bool = True) -> torch.Tensor:
    # torch conv2d correlates; NVlabs' flip_weight=False means a true convolution.
    kh, kw = w.shape[2], w.shape[3]
    if not flip_weight and (kw > 1 or kh > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    padding: int | Sequence[int] = 0, groups: int = 1, flip_weight: bool = True,
                    flip_filter: bool = False) -> torch.Tensor:
    """2-D convolution with optional up/down-sampling through the FIR filter f (NVlabs conv2d_resample, same
    fast paths so results match it). x: (N, C_in, H, W), w: (C_out, C_in/groups, kh, kw)."""
    assert isinstance(up, int) and up >= 1 and isinstance(down, int) and down >= 1
    out_channels, in_channels_per_group, kh, kw = w.shape
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Adjust padding to account for up/downsampling.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 kernel, downsampling only: downsample first, then convolve.
    if kw == 1 and kh == 1 and (down > 1 and up == 1):
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)

    # 1x1 kernel, upsampling only: convolve first, then upsample.
    if kw == 1 and kh == 1 and (up > 1 and down == 1):
        x = _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)

    # Downsampling only: strided convolution.
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d_wrapper(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling: transposed strided convolution, then the FIR filter.
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_channels // groups, in_channels_per_group, kh, kw)
            w = w.transpose(1, 2)
            w = w.reshape(groups * in_channels_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        # contiguous(): a transposed weight view sends CPU conv_transpose2d to its slow reference kernel.
        x = _conv2d_wrapper(x, w.contiguous(), stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # No resampling: plain conv2d when the padding is symmetric.
    if up == 1 and down == 1:
        if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            return _conv2d_wrapper(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # Fallback: generic pad/filter + convolution.
    x = upfirdn2d(x, (f if up > 1 else None), up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)
    x = _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,                         # (N, C_in, H, W)
    weight: torch.Tensor,                    # (C_out, C_in, kh, kw)
    styles: torch.Tensor,                    # (N, C_in) modulation coefficients
    noise: torch.Tensor | None = None,       # added to the output, broadcastable to (N, C_out, H', W')
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """StyleGAN2 weight (de)modulation. Fused path = one grouped convolution over the batch (NVlabs).
    Returns (N, C_out, H*up/down, W*up/down)."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    assert x.shape[1] == in_channels and styles.shape == (batch_size, in_channels), (x.shape, styles.shape, weight.shape)

    # Pre-normalize inputs to avoid FP16 overflow.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    # Per-sample weights and demodulation coefficients.
    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)  # (N, O, I, kh, kw)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # (N, O)
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)

    # Not fused: scale the activations before and after a shared-weight convolution.
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)
        if demodulate and noise is not None:
            x = torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1))
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        elif noise is not None:
            x = x.add_(noise.to(x.dtype))
        return x

    # Fused: fold the batch into groups of one grouped convolution.
    x = x.reshape(1, -1, *x.shape[2:])  # (1, N*I, H, W)
    w = w.reshape(-1, in_channels, kh, kw)  # (N*O, I, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=batch_size, flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])  # (N, O, H', W')
    if noise is not None:
        x = x.add_(noise)
    return x


# ----------------------------------------------------------------------------------------------------------------
# Layers.
# ----------------------------------------------------------------------------------------------------------------


class FullyConnectedLayer(torch.nn.Module):
    """Equalized-lr linear layer: runtime weight = weight * lr_multiplier / sqrt(in_features)."""

    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1.0, bias_init=0.0,
                 trainable=True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier
        weight = torch.randn([out_features, in_features]) / lr_multiplier
        bias_t = torch.full([out_features], np.float32(bias_init)) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias_t) if bias_t is not None else None
        else:
            self.register_buffer("weight", weight)
            if bias_t is not None:
                self.register_buffer("bias", bias_t)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_features) -> (N, out_features)."""
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features:d}, out_features={self.out_features:d}, activation={self.activation:s}"


class Conv2dLayer(torch.nn.Module):
    """Equalized-lr convolution with optional resampling (used by the 'resnet' synthesis skip path)."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1,
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False, trainable=True):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))
        self.act_gain = _ACT_DEF_GAIN[activation]
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias_t = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias_t) if bias_t is not None else None
        else:
            self.register_buffer("weight", weight)
            if bias_t is not None:
                self.register_buffer("bias", bias_t)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        flip_weight = self.up == 1  # slightly faster (NVlabs)
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=flip_weight)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)


class MappingNetwork(torch.nn.Module):
    """z (N, z_dim) [+ c (N, c_dim)] -> ws (N, num_ws, w_dim) (or (N, w_dim) when num_ws is None)."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.998, freeze_layers=0, freeze_embed=False):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        self.trainable_layers = 0

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features_list = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features, trainable=not freeze_embed)
        for idx in range(num_layers):
            trainable = self.trainable_layers >= freeze_layers
            self.trainable_layers += 1
            layer = FullyConnectedLayer(features_list[idx], features_list[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier, trainable=trainable)
            setattr(self, f"fc{idx}", layer)

        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, skip_w_avg_update=True):
        # skip_w_avg_update: StyleGAN2-ADA's name for (not update_emas); accepted so ADA-style callers work.
        # Embed, normalize, and concat inputs.
        x = None
        if self.z_dim > 0:
            assert z.shape[1] == self.z_dim, f"z has {z.shape[1]} dims, the mapping expects {self.z_dim}"
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            assert c.shape[1] == self.c_dim, f"c has {c.shape[1]} dims, the mapping expects {self.c_dim}"
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y

        # Main layers: (N, z_dim + embed) -> (N, w_dim).
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        # Moving average of W (training only; kept for fidelity).
        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        # Broadcast: (N, w_dim) -> (N, num_ws, w_dim).
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        # Truncation (exactly NVlabs): lerp towards w_avg on the first truncation_cutoff ws. psi may be a 0-d tensor
        # (the engine's, so a psi fader does not recompile compiled code): then always lerp, which at psi = 1 gives x
        # exactly, instead of comparing on the host (a device sync).
        if not (isinstance(truncation_psi, (int, float)) and truncation_psi == 1):
            assert self.w_avg_beta is not None
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim:d}, c_dim={self.c_dim:d}, w_dim={self.w_dim:d}, num_ws={self.num_ws}"


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 conv (+ x2 upsampling when up=2), noise, bias, lrelu. (N, C_in, R/up, R/up) -> (N, C_out, R, R)."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = _ACT_DEF_GAIN[activation]

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode="random", fused_modconv=True, gain=1, noise_strength=1):
        """x (N, C_in, R/up, R/up), w (N, w_dim) -> (N, C_out, R, R).
        noise_strength: global multiplier on self.noise_strength (our addition; float or 0-d tensor)."""
        assert noise_mode in ("random", "const", "none"), f"noise_mode must be random, const or none, not {noise_mode!r}"
        in_resolution = self.resolution // self.up
        assert x.shape[1:] == (self.in_channels, in_resolution, in_resolution), (tuple(x.shape), self.in_channels, in_resolution)
        styles = self.affine(w)  # (N, C_in)

        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * (self.noise_strength * noise_strength)
        if self.use_noise and noise_mode == "const":
            noise = self.noise_const * (self.noise_strength * noise_strength)  # (R, R), broadcast over N, C

        flip_weight = self.up == 1  # slightly faster (NVlabs)
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=flip_weight, fused_modconv=fused_modconv)

        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}, "
                f"resolution={self.resolution:d}, up={self.up}, activation={self.activation:s}")


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 conv without demodulation: (N, C, R, R) -> (N, img_channels, R, R)."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}"


class SynthesisBlock(torch.nn.Module):
    """One resolution: (x (N, C_in, R/2, R/2), img (N, 3, R/2, R/2), ws (N, num_conv + num_torgb, w_dim))
    -> (x (N, C_out, R, R), img (N, 3, R, R) float32). The first block (in_channels=0) starts from `const`."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture="skip",
                 resample_filter=(1, 3, 3, 1), conv_clamp=256, use_fp16=False, fp16_channels_last=False,
                 fused_modconv_default=True, **layer_kwargs):
        assert architecture in ("orig", "skip", "resnet")
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))

        if in_channels != 0:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1

        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1

        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1

        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, update_emas=False, **layer_kwargs):
        _ = update_emas
        assert ws.shape[1] == self.num_conv + self.num_torgb and ws.shape[2] == self.w_dim, tuple(ws.shape)
        w_iter = iter(ws.unbind(dim=1))
        if ws.device.type != "cuda":
            force_fp32 = True  # fp16 convolutions are slow or unsupported on CPU (NVlabs does the same)
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv == "inference_only":
            fused_modconv = not self.training

        # Input.
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])  # (N, C, 4, 4)
        else:
            assert x.shape[1:] == (self.in_channels, self.resolution // 2, self.resolution // 2), tuple(x.shape)
            x = x.to(dtype=dtype, memory_format=memory_format)

        # Main layers.
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=np.sqrt(0.5), **layer_kwargs)
            x = y.add_(x)
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        # ToRGB (skip architecture: upsample the running image and add this resolution's contribution).
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y

        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution:d}, architecture={self.architecture:s}"


class SynthesisNetwork(torch.nn.Module):
    """ws (N, num_ws, w_dim) -> img (N, img_channels, img_resolution, img_resolution) float32.
    Blocks b4, b8, ..., b{img_resolution}; channels per block min(channel_base // res, channel_max)."""

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=4,
                 **block_kwargs):
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.channels_dict = channels_dict
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res // 2] if res > 4 else 0
            out_channels = channels_dict[res]
            use_fp16 = res >= fp16_resolution
            is_last = res == self.img_resolution
            block = SynthesisBlock(in_channels, out_channels, w_dim=w_dim, resolution=res, img_channels=img_channels,
                                   is_last=is_last, use_fp16=use_fp16, **block_kwargs)
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws, drop_blocks=0, **block_kwargs):
        """drop_blocks (our addition): stop before the last N blocks and return the skip architecture's image at
        img_resolution / 2**N: the coarse image every skip generator builds on its way up (the engine's live
        render-scale knob; only the 'skip' architecture has an image before its last block)."""
        assert ws.ndim == 3 and ws.shape[1] == self.num_ws and ws.shape[2] == self.w_dim, \
            f"ws has shape {tuple(ws.shape)}, expected (N, {self.num_ws}, {self.w_dim})"
        ws = ws.to(torch.float32)
        # Each block reads its convs' ws plus the next one for torgb (overlapping windows, as NVlabs).
        block_ws = []
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws.append(ws.narrow(1, w_idx, block.num_conv + block.num_torgb))
            w_idx += block.num_conv

        x = img = None
        keep = len(self.block_resolutions) - int(drop_blocks)
        for res, cur_ws in zip(self.block_resolutions[:keep], block_ws[:keep]):
            x, img = getattr(self, f"b{res}")(x, img, cur_ws, **block_kwargs)
        return img

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim:d}, num_ws={self.num_ws:d}, img_resolution={self.img_resolution:d}, "
                f"img_channels={self.img_channels:d}, num_fp16_res={self.num_fp16_res:d}")


class Generator(torch.nn.Module):
    """z (N, z_dim), c (N, c_dim) -> img (N, img_channels, img_resolution, img_resolution), nominally [-1, 1]."""

    # StyleGAN3's Generator is this one with its own mapping and synthesis networks.
    mapping_class: type[torch.nn.Module] = MappingNetwork
    synthesis_class: type[torch.nn.Module] = SynthesisNetwork

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, **synthesis_kwargs):  # noqa: B006 (NVlabs signature)
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        # What the network was built with (NVlabs persistence keeps the same dict): Generator(**init_kwargs).
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                img_channels=img_channels, mapping_kwargs=dict(mapping_kwargs), **synthesis_kwargs)
        self.synthesis = self.synthesis_class(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                              **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = self.mapping_class(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, noise_mode="const",
                **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, noise_mode=noise_mode, **synthesis_kwargs)


def config_f_kwargs(img_resolution: int, *, z_dim: int = 512, w_dim: int = 512, c_dim: int = 0,
                    channel_base: int = 32768, channel_max: int = 512, num_fp16_res: int = 4,
                    conv_clamp: int | None = 256, mapping_layers: int = 8) -> dict[str, Any]:
    """Init kwargs of a config-f StyleGAN2 generator (as the stylegan3 repo's train.py builds it, cfg=stylegan2)."""
    return dict(
        z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=3,
        mapping_kwargs=dict(num_layers=mapping_layers),
        channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
        architecture="skip",
    )
