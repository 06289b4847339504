"""StyleGAN3 (configs T and R) in plain PyTorch, module-for-module compatible with NVlabs.

Reimplements the generator of NVlabs' `training/networks_stylegan3.py` ("Alias-Free Generative Adversarial
Networks") without custom CUDA ops: filtered_lrelu follows NVlabs' reference path (upfirdn2d up, bias + leaky ReLU
+ gain + clamp, upfirdn2d down), and the Kaiser low-pass filters are designed here in numpy so scipy is not needed.

Compatibility contract (the .pkl loader builds these classes from the init kwargs stored in official pickles and
loads tensors by name, so none of this may drift from NVlabs):
  * constructor signatures and defaults of FullyConnectedLayer, MappingNetwork, SynthesisInput, SynthesisLayer,
    SynthesisNetwork, Generator;
  * parameter/buffer names: mapping.fc{i}.{weight,bias}, mapping.embed.*, mapping.w_avg,
    synthesis.input.{weight, affine.weight, affine.bias, transform, freqs, phases},
    synthesis.L{i}_{size}_{channels}.{affine.weight, affine.bias, weight, bias, magnitude_ema, up_filter,
    down_filter} (e.g. L0_36_512 .. L14_1024_3 at 1024 px);
  * numerics: equalized lr, modulated conv with input_gain = magnitude_ema^-1/2, filter design, padding,
    sampling-rate/cutoff schedule, output_scale, fp16 on CUDA for the layers NVlabs runs in fp16.
Config T = defaults (conv_kernel=3); config R = conv_kernel=1, use_radial_filters=True.

Additions (no renames): Generator.init_kwargs (what it was built with, for saving), make_transform /
set_input_transform (the user translate/rotate NVlabs' gen_images and visualizer apply).

Shapes: z (N, z_dim) -> mapping -> ws (N, num_ws = num_layers + 2, w_dim) -> synthesis -> img (N, C, R, R) fp32.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.generators import stylegan2 as _sg2
from engine.generators.stylegan2 import bias_act, upfirdn2d

# ----------------------------------------------------------------------------------------------------------------
# Filter design: numpy versions of scipy.signal.firwin(window=kaiser) and scipy.special.j1, so the buffers the
# network computes at construction match NVlabs' to float32 precision without depending on scipy.
# ----------------------------------------------------------------------------------------------------------------


def kaiser_atten(numtaps: int, width: float) -> float:
    """Attenuation (dB) of a Kaiser FIR filter; width is the transition width as a fraction of Nyquist."""
    return 2.285 * (numtaps - 1) * np.pi * width + 7.95


def kaiser_beta(a: float) -> float:
    """Kaiser window beta for a stopband attenuation of `a` dB (Kaiser's empirical formula, as scipy)."""
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a > 21:
        return 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    return 0.0


def firwin_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> np.ndarray:
    """scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs) for a low-pass: windowed sinc, Kaiser window whose
    beta comes from the transition width, scaled to unit gain at DC. Returns (numtaps,) float64."""
    nyq = 0.5 * fs
    c = float(cutoff) / nyq
    if not 0 < c < 1:
        raise ValueError(f"cutoff {cutoff} must lie strictly between 0 and fs/2 = {nyq}")
    beta = kaiser_beta(kaiser_atten(numtaps, float(width) / nyq))
    m = np.arange(numtaps) - 0.5 * (numtaps - 1)
    h = c * np.sinc(c * m)
    h *= np.kaiser(numtaps, beta)
    # Unit gain at DC (scipy scales at the centre of the first passband, which is 0 for a low-pass).
    return h / np.sum(h)


def bessel_j1(x: np.ndarray) -> np.ndarray:
    """J1(x) = (1/2pi) * integral over [0, 2pi] of cos(t - x sin t) dt. The integrand is periodic and smooth, so the
    trapezoidal rule converges exponentially: 512 nodes give ~1e-15 absolute error for |x| < 100 (filter
    arguments here stay below ~40)."""
    x = np.asarray(x, dtype=np.float64)
    t = np.arange(512) * (2 * np.pi / 512)
    return np.cos(t - x[..., None] * np.sin(t)).mean(axis=-1)


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """NVlabs SynthesisLayer.design_lowpass_filter. None = identity (1 tap); separable -> (numtaps,);
    radial (jinc with a separable Kaiser window) -> (numtaps, numtaps). float32."""
    assert numtaps >= 1
    if numtaps == 1:
        return None
    if not radial:
        return torch.as_tensor(firwin_lowpass(numtaps, cutoff, width, fs), dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    f = bessel_j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = kaiser_beta(kaiser_atten(numtaps, width / (fs / 2)))
    w = np.kaiser(numtaps, beta)
    f *= np.outer(w, w)
    f /= np.sum(f)
    return torch.as_tensor(f, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# Ops.
# ----------------------------------------------------------------------------------------------------------------


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                   b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding: list[int] | int = 0,
                   gain: float = math.sqrt(2), slope: float = 0.2, clamp: float | None = None,
                   flip_filter: bool = False) -> torch.Tensor:
    """NVlabs filtered_lrelu, reference formulation: bias, upsample (zero insertion + fu, gain up^2) with padding
    [px0, px1, py0, py1] relative to the upsampled image, leaky ReLU * gain, clamp, filter with fd, keep every
    `down`-th pixel. x: (N, C, H, W) -> (N, C, H', W'), dtype kept. Backends may swap in a fused kernel."""
    if isinstance(padding, int):
        padding = [padding] * 4
    elif len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    x = bias_act(x, b)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up ** 2, flip_filter=flip_filter)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return upfirdn2d(x, fd, down=down, flip_filter=flip_filter)


def modulated_conv2d(
    x: torch.Tensor,                          # (N, I, H, W)
    w: torch.Tensor,                          # (O, I, k, k)
    s: torch.Tensor,                          # (N, I) styles
    demodulate: bool = True,
    padding: int = 0,
    input_gain: torch.Tensor | None = None,   # scalar, (I,) or (N, I)
) -> torch.Tensor:
    """StyleGAN3 modulated convolution: one grouped conv over the batch. Returns (N, O, H + 2p - k + 1, ...)."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = w.shape
    assert x.shape[1] == in_channels and s.shape == (batch_size, in_channels), (x.shape, w.shape, s.shape)

    # Pre-normalise weight and styles (SG3 does this always, not only in fp16): demodulation cancels the scale but
    # it keeps fp16 intermediates in range.
    if demodulate:
        w = w * w.square().mean([1, 2, 3], keepdim=True).rsqrt()
        s = s * s.square().mean().rsqrt()

    w = w.unsqueeze(0) * s.reshape(batch_size, 1, in_channels, 1, 1)  # (N, O, I, k, k)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # (N, O)
        w = w * dcoefs.reshape(batch_size, out_channels, 1, 1, 1)
    if input_gain is not None:
        input_gain = input_gain.expand(batch_size, in_channels)  # (N, I)
        w = w * input_gain.reshape(batch_size, 1, in_channels, 1, 1)

    x = x.reshape(1, -1, *x.shape[2:])  # (1, N*I, H, W)
    w = w.reshape(-1, in_channels, kh, kw)  # (N*O, I, k, k)
    x = F.conv2d(x, w.to(x.dtype), padding=padding, groups=batch_size)
    return x.reshape(batch_size, -1, *x.shape[2:])


# ----------------------------------------------------------------------------------------------------------------
# Layers.
# ----------------------------------------------------------------------------------------------------------------


class FullyConnectedLayer(_sg2.FullyConnectedLayer):
    """Equalized-lr linear layer (SG3 flavour: weight_init and per-output bias_init). Runtime weight =
    weight * lr_multiplier / sqrt(in_features); runtime bias = bias * lr_multiplier. Only the initialisation
    differs from StyleGAN2's layer: forward is inherited."""

    def __init__(self, in_features, out_features, activation="linear", bias=True, lr_multiplier=1.0,
                 weight_init=1.0, bias_init=0.0, trainable=True):
        torch.nn.Module.__init__(self)  # not StyleGAN2's __init__: the initialisation is what differs
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier
        weight = torch.randn([out_features, in_features]) * (weight_init / lr_multiplier)
        bias_t = None
        if bias:
            b0 = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features])
            bias_t = torch.from_numpy(b0 / lr_multiplier)
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias_t) if bias_t is not None else None
        else:
            # Frozen layers (Freeze-M) keep the same names as buffers.
            self.register_buffer("weight", weight)
            if bias_t is not None:
                self.register_buffer("bias", bias_t)
            else:
                self.bias = None


class MappingNetwork(torch.nn.Module):
    """z (N, z_dim) [, c (N, c_dim)] -> ws (N, num_ws, w_dim); SG3 default is 2 layers at lr 0.01."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=2, lr_multiplier=0.01, w_avg_beta=0.998,
                 freeze_layers=0, freeze_embed=False):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        self.embed = FullyConnectedLayer(c_dim, w_dim, trainable=not freeze_embed) if c_dim > 0 else None
        features = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                        lr_multiplier=lr_multiplier, trainable=idx >= freeze_layers)
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        assert z.ndim == 2 and z.shape[1] == self.z_dim, (z.shape, self.z_dim)
        if truncation_cutoff is None:
            truncation_cutoff = self.num_ws
        x = z.to(torch.float32)
        x = x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        if self.c_dim > 0:
            assert c is not None and c.shape[-1] == self.c_dim, "this network is conditional: pass c of shape (N, c_dim)"
            y = self.embed(c.to(torch.float32))
            y = y * (y.square().mean(1, keepdim=True) + 1e-8).rsqrt()
            x = torch.cat([x, y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # (N, num_ws, w_dim)
        # `psi` may be a 0-d tensor (a live parameter on the device); comparing it with 1 would sync, so apply always
        # unless it is exactly the Python number 1.
        if not (isinstance(truncation_psi, (int, float)) and truncation_psi == 1):
            x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim:d}, c_dim={self.c_dim:d}, w_dim={self.w_dim:d}, num_ws={self.num_ws:d}"


class SynthesisInput(torch.nn.Module):
    """Fourier features: w (N, w_dim) -> (N, channels, size, size). `transform` is the user's inverse transform of
    the resulting image (identity by default; see set_input_transform)."""

    def __init__(self, w_dim, channels, size, sampling_rate, bandwidth):
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = np.broadcast_to(np.asarray(size), [2])  # [width, height]
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth

        # Random frequencies, uniform over a disc of radius `bandwidth`; random phases.
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs /= radii * radii.square().exp().pow(0.25)
        freqs *= bandwidth
        phases = torch.rand([channels]) - 0.5

        self.weight = torch.nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))  # (3, 3)
        self.register_buffer("freqs", freqs)  # (channels, 2)
        self.register_buffer("phases", phases)  # (channels,)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        n = w.shape[0]
        transforms = self.transform.unsqueeze(0)  # (1, 3, 3)
        freqs = self.freqs.unsqueeze(0)  # (1, C, 2)
        phases = self.phases.unsqueeze(0)  # (1, C)

        # Learned rotation + translation from w: t = (r_c, r_s, t_x, t_y), rotation part normalised.
        t = self.affine(w)  # (N, 4)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        m_r = torch.eye(3, device=w.device).unsqueeze(0).repeat([n, 1, 1])  # inverse rotation of the image
        m_r[:, 0, 0] = t[:, 0]
        m_r[:, 0, 1] = -t[:, 1]
        m_r[:, 1, 0] = t[:, 1]
        m_r[:, 1, 1] = t[:, 0]
        m_t = torch.eye(3, device=w.device).unsqueeze(0).repeat([n, 1, 1])  # inverse translation of the image
        m_t[:, 0, 2] = -t[:, 2]
        m_t[:, 1, 2] = -t[:, 3]
        transforms = m_r @ m_t @ transforms  # rotate, then translate, then the user transform; (N, 3, 3)

        phases = phases + (freqs @ transforms[:, :2, 2:]).squeeze(2)  # (N, C)
        freqs = freqs @ transforms[:, :2, :2]  # (N, C, 2)

        # Fade out frequencies the user transform pushed past the band limit (would alias otherwise).
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)

        # Sampling grid over the (margin-extended) canvas in units of the sampling rate.
        sx, sy = int(self.size[0]), int(self.size[1])
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = 0.5 * sx / self.sampling_rate
        theta[1, 1] = 0.5 * sy / self.sampling_rate
        grids = F.affine_grid(theta.unsqueeze(0), [1, 1, sy, sx], align_corners=False)  # (1, H, W, 2)

        x = (grids.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # (N, H, W, C)
        x = x + phases.unsqueeze(1).unsqueeze(2)
        x = torch.sin(x * (np.pi * 2))
        x = x * amplitudes.unsqueeze(1).unsqueeze(2)

        weight = self.weight / np.sqrt(self.channels)
        x = x @ weight.t()
        return x.permute(0, 3, 1, 2)  # (N, C, H, W)

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim:d}, channels={self.channels:d}, size={list(self.size)}, "
                f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}")


class SynthesisLayer(torch.nn.Module):
    """Modulated conv + filtered leaky ReLU (or the final ToRGB). (N, in_channels, in_size, in_size) ->
    (N, out_channels, out_size, out_size)."""

    def __init__(self, w_dim, is_torgb, is_critically_sampled, use_fp16,
                 in_channels, out_channels, in_size, out_size, in_sampling_rate, out_sampling_rate,
                 in_cutoff, out_cutoff, in_half_width, out_half_width,
                 conv_kernel=3, filter_size=6, lrelu_upsampling=2, use_radial_filters=False, conv_clamp=256,
                 magnitude_ema_beta=0.999):
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = np.broadcast_to(np.asarray(in_size), [2])
        self.out_size = np.broadcast_to(np.asarray(out_size), [2])
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        # The nonlinearity runs at a higher rate (lrelu_upsampling x) so its harmonics can be filtered out.
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.in_cutoff = in_cutoff
        self.out_cutoff = out_cutoff
        self.in_half_width = in_half_width
        self.out_half_width = out_half_width
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = int(np.rint(self.tmp_sampling_rate / in_sampling_rate))
        assert in_sampling_rate * self.up_factor == self.tmp_sampling_rate
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.register_buffer("up_filter", design_lowpass_filter(
            numtaps=self.up_taps, cutoff=in_cutoff, width=in_half_width * 2, fs=self.tmp_sampling_rate))

        self.down_factor = int(np.rint(self.tmp_sampling_rate / out_sampling_rate))
        assert out_sampling_rate * self.down_factor == self.tmp_sampling_rate
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = use_radial_filters and not is_critically_sampled
        self.register_buffer("down_filter", design_lowpass_filter(
            numtaps=self.down_taps, cutoff=out_cutoff, width=out_half_width * 2, fs=self.tmp_sampling_rate,
            radial=self.down_radial))

        # Padding so that out_size samples remain after conv, up, filters and down, with the sample grid shifted per
        # the symmetric interpretation (paper, appendix C.3).
        pad_total = (self.out_size - 1) * self.down_factor + 1
        pad_total -= (self.in_size + self.conv_kernel - 1) * self.up_factor
        pad_total += self.up_taps + self.down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = [int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1])]

    def forward(self, x, w, noise_mode="random", force_fp32=False, update_emas=False):
        # noise_mode is accepted for API parity with StyleGAN2; StyleGAN3 has no noise inputs.
        assert noise_mode in ("random", "const", "none")
        assert x.shape[1:] == (self.in_channels, int(self.in_size[1]), int(self.in_size[0])), (x.shape, self.in_size)
        if update_emas:
            magnitude_cur = x.detach().to(torch.float32).square().mean()
            self.magnitude_ema.copy_(magnitude_cur.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()

        styles = self.affine(w)  # (N, in_channels)
        if self.is_torgb:
            styles = styles * (1 / np.sqrt(self.in_channels * (self.conv_kernel ** 2)))

        dtype = torch.float16 if (self.use_fp16 and not force_fp32 and x.device.type == "cuda") else torch.float32
        x = modulated_conv2d(x=x.to(dtype), w=self.weight, s=styles, padding=self.conv_kernel - 1,
                             demodulate=not self.is_torgb, input_gain=input_gain)

        gain = 1 if self.is_torgb else np.sqrt(2)
        slope = 1 if self.is_torgb else 0.2
        x = filtered_lrelu(x, fu=self.up_filter, fd=self.down_filter, b=self.bias.to(x.dtype), up=self.up_factor,
                           down=self.down_factor, padding=self.padding, gain=gain, slope=slope, clamp=self.conv_clamp)
        assert x.shape[1:] == (self.out_channels, int(self.out_size[1]), int(self.out_size[0])), (x.shape, self.out_size)
        return x

    @staticmethod
    def design_lowpass_filter(numtaps, cutoff, width, fs, radial=False):
        return design_lowpass_filter(numtaps, cutoff, width, fs, radial)

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim:d}, is_torgb={self.is_torgb}, is_critically_sampled={self.is_critically_sampled}, "
                f"use_fp16={self.use_fp16}, in_sampling_rate={self.in_sampling_rate:g}, "
                f"out_sampling_rate={self.out_sampling_rate:g}, in_cutoff={self.in_cutoff:g}, "
                f"out_cutoff={self.out_cutoff:g}, in_half_width={self.in_half_width:g}, "
                f"out_half_width={self.out_half_width:g}, in_size={list(self.in_size)}, out_size={list(self.out_size)}, "
                f"in_channels={self.in_channels:d}, out_channels={self.out_channels:d}")


class SynthesisNetwork(torch.nn.Module):
    """ws (N, num_ws, w_dim) -> img (N, img_channels, img_resolution, img_resolution) float32.
    ws[:, 0] drives the Fourier input, ws[:, i + 1] layer L{i}."""

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_layers=14,
                 num_critical=2, first_cutoff=2, first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3,
                 margin_size=10, output_scale=0.25, num_fp16_res=4, **layer_kwargs):
        super().__init__()
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res

        # Cutoffs and minimum stopbands grow geometrically up to the last `num_critical` layers, which sit at the
        # output's Nyquist limit (critically sampled). Arrays have num_layers + 1 entries (index 0 = input).
        last_cutoff = img_resolution / 2
        last_stopband = last_cutoff * last_stopband_rel
        exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
        cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
        stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
        sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
        half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
        sizes = sampling_rates + margin_size * 2
        sizes[-2:] = img_resolution
        channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
        channels[-1] = img_channels

        self.input = SynthesisInput(w_dim=w_dim, channels=int(channels[0]), size=int(sizes[0]),
                                    sampling_rate=sampling_rates[0], bandwidth=cutoffs[0])
        self.layer_names = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            is_torgb = idx == num_layers
            is_critically_sampled = idx >= num_layers - num_critical
            use_fp16 = bool(sampling_rates[idx] * (2 ** num_fp16_res) > img_resolution)
            layer = SynthesisLayer(
                w_dim=w_dim, is_torgb=is_torgb, is_critically_sampled=is_critically_sampled, use_fp16=use_fp16,
                in_channels=int(channels[prev]), out_channels=int(channels[idx]),
                in_size=int(sizes[prev]), out_size=int(sizes[idx]),
                in_sampling_rate=int(sampling_rates[prev]), out_sampling_rate=int(sampling_rates[idx]),
                in_cutoff=cutoffs[prev], out_cutoff=cutoffs[idx],
                in_half_width=half_widths[prev], out_half_width=half_widths[idx],
                **layer_kwargs)
            name = f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def forward(self, ws, **layer_kwargs):
        assert ws.ndim == 3 and ws.shape[1:] == (self.num_ws, self.w_dim), (ws.shape, self.num_ws, self.w_dim)
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:]):
            x = getattr(self, name)(x, w, **layer_kwargs)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim:d}, num_ws={self.num_ws:d}, img_resolution={self.img_resolution:d}, "
                f"img_channels={self.img_channels:d}, num_layers={self.num_layers:d}, "
                f"num_critical={self.num_critical:d}, margin_size={self.margin_size:d}, "
                f"num_fp16_res={self.num_fp16_res:d}")


class Generator(_sg2.Generator):
    """z (N, z_dim), c (N, c_dim) -> img (N, img_channels, img_resolution, img_resolution), nominally [-1, 1].
    StyleGAN2's Generator with StyleGAN3's mapping and synthesis networks (same init kwargs as NVlabs)."""

    mapping_class = MappingNetwork
    synthesis_class = SynthesisNetwork

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Configs and the user transform.
# ----------------------------------------------------------------------------------------------------------------


def config_kwargs(cfg: str, img_resolution: int, *, z_dim: int = 512, w_dim: int = 512, c_dim: int = 0,
                  channel_base: int = 32768, channel_max: int = 512, **extra: Any) -> dict[str, Any]:
    """Init kwargs of a StyleGAN3 generator as NVlabs' train.py builds it: cfg 't' (translation equivariant) or 'r'
    (rotation too: 1x1 convs, radial filters, doubled channels). `extra` goes to SynthesisNetwork/SynthesisLayer."""
    cfg = cfg.lower().removeprefix("stylegan3-")
    if cfg not in ("t", "r"):
        raise ValueError(f"unknown StyleGAN3 config {cfg!r}; use 't' or 'r'")
    kwargs: dict[str, Any] = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=3,
                                  mapping_kwargs=dict(num_layers=2), channel_base=channel_base, channel_max=channel_max,
                                  magnitude_ema_beta=0.5 ** (32 / (20 * 1e3)))
    if cfg == "r":
        # train.py doubles both for config R.
        kwargs.update(conv_kernel=1, use_radial_filters=True, channel_base=channel_base * 2, channel_max=channel_max * 2)
    kwargs.update(extra)
    return kwargs


def make_transform(tx: float = 0.0, ty: float = 0.0, angle_deg: float = 0.0) -> np.ndarray:
    """The image transform NVlabs' gen_images/gen_video build: rotate by `angle_deg` degrees, translate by
    (tx, ty) in image widths (the Fourier input's coordinates: 1.0 = one full image; +tx moves content right).
    Returns (3, 3) float64; the network wants its inverse in synthesis.input.transform."""
    a = angle_deg / 360.0 * np.pi * 2
    s, c = np.sin(a), np.cos(a)
    return np.array([[c, s, tx], [-s, c, ty], [0, 0, 1]], dtype=np.float64)


def input_transform(tx: float | torch.Tensor = 0.0, ty: float | torch.Tensor = 0.0,
                    angle_deg: float | torch.Tensor = 0.0, device: torch.device | str | None = None) -> torch.Tensor:
    """inverse(make_transform(tx, ty, angle_deg)) in closed form with torch ops, so 0-d tensors already on the GPU
    (live parameters) give the matrix without a host round trip. Returns (3, 3) float32."""
    parts = [torch.as_tensor(v, dtype=torch.float32, device=device) for v in (tx, ty, angle_deg)]
    dev = device if device is not None else next((p.device for p in parts if p.device.type != "cpu"), parts[0].device)
    tx_t, ty_t, ang = (p.to(dev) for p in parts)
    a = ang * (math.pi / 180.0)
    c, s = torch.cos(a), torch.sin(a)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    # M = [[c, s, tx], [-s, c, ty], [0, 0, 1]] is a rotation R plus translation t; M^-1 = [[R^T, -R^T t], [0, 1]].
    return torch.stack([
        torch.stack([c, -s, -(c * tx_t) + s * ty_t]),
        torch.stack([s, c, -(s * tx_t) - c * ty_t]),
        torch.stack([zero, zero, one]),
    ])


def set_input_transform(net: torch.nn.Module, tx: float | torch.Tensor = 0.0, ty: float | torch.Tensor = 0.0,
                        angle_deg: float | torch.Tensor = 0.0) -> None:
    """Translate/rotate the output of a StyleGAN3 Generator or SynthesisNetwork, as NVlabs' tools do:
    synthesis.input.transform = inverse(make_transform(tx, ty, angle_deg)). In-place, no reallocation."""
    synthesis = getattr(net, "synthesis", net)
    inp = getattr(synthesis, "input", None)
    if not isinstance(inp, SynthesisInput):
        raise TypeError("set_input_transform needs a StyleGAN3 network (one with synthesis.input)")
    with torch.no_grad():
        inp.transform.copy_(input_transform(tx, ty, angle_deg, device=inp.transform.device))
