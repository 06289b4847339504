"""Latent motion: where z is at time t.

seed -> z is the NVlabs draw, `np.random.RandomState(seed).randn(1, z_dim)`, so "seed 42" here is seed 42 in
gen_images.py, the StyleGAN3 visualizer and every notebook built on them.

The walk is a smooth, stationary noise field built from random Fourier features:

    n_d(tau) = sqrt(2/K) * sum_k cos(2*pi * f_dk * tau + phi_dk),   f ~ N(0, 1), phi ~ U(0, 2*pi), K = 8

Each n_d has mean 0 and variance 1 at every tau (over the phases), and the features are independent across
dimensions, so with z_seed ~ N(0, I):

    z(tau) = sqrt(1 - a^2) * z_seed + a * n(tau)

stays ~N(0, I)-like for any amplitude a in [0, 1] -- the mapping network sees inputs from the distribution it
was trained on, whatever the walk does. tau = speed * t: a component with |f| = 1 completes `speed` cycles per
second.

Everything per frame is device arithmetic on tensors allocated at setup; tau enters as a python float
(a kernel argument), so evaluating the walk never syncs with the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: Fourier features per dimension: enough for a non-periodic-looking path, cheap (z_dim x K elements).
DEFAULT_FEATURES = 8


def seed_to_z(seed: int, z_dim: int) -> np.ndarray:
    """The NVlabs seed convention: (1, z_dim) float64 from MT19937 seeded with `seed`."""
    return np.random.RandomState(int(seed)).randn(1, z_dim)


class LatentWalk:
    """A deterministic noise field n(tau) in R^z_dim (see module doc). Tensors live on `device`.

    Per frame: `noise(tau, out)` / `z(z_seed, tau, amplitude, out)` write into caller-owned (1, z_dim) buffers
    with in-place device ops: no allocation beyond setup, no host sync.
    """

    def __init__(self, z_dim: int, seed: int, device: torch.device | str = "cpu", num_features: int = DEFAULT_FEATURES):
        if num_features < 1:
            raise ValueError("num_features must be >= 1")
        self.z_dim = int(z_dim)
        self.seed = int(seed)
        self.num_features = int(num_features)
        # MPS has no float64: there the walk's few thousand elements are computed on the CPU and copied into the
        # caller's device buffer (a (1, z_dim) copy per frame).
        self.device = torch.device(device) if torch.device(device).type != "mps" else torch.device("cpu")
        rng = np.random.RandomState(self.seed)
        freq = rng.randn(self.z_dim, self.num_features) * (2 * math.pi)  # radians per unit tau
        phase = rng.uniform(0.0, 2 * math.pi, size=(self.z_dim, self.num_features))
        # float64 for the phase arithmetic: at tau ~ 1e4 (hours of show at speed 1) float32 would jitter by
        # ~1e-2 rad; the array is z_dim x K = a few thousand elements, so the cost is nil even on GPUs with slow fp64.
        self.freq = torch.as_tensor(freq, dtype=torch.float64, device=self.device)  # (z_dim, K)
        self.phase = torch.as_tensor(phase, dtype=torch.float64, device=self.device)  # (z_dim, K)
        self.scale = math.sqrt(2.0 / self.num_features)
        self._arg = torch.empty_like(self.freq)  # (z_dim, K) scratch
        self._sum = torch.empty((1, self.z_dim), dtype=torch.float64, device=self.device)

    def noise(self, tau: float, out: torch.Tensor | None = None) -> torch.Tensor:
        """n(tau): (1, z_dim), unit variance per dimension. Writes into `out` when given (any float dtype)."""
        torch.mul(self.freq, float(tau), out=self._arg)
        return self._finish(out)

    def periodic_noise(self, t: float, period: float, speed: float, out: torch.Tensor | None = None) -> torch.Tensor:
        """n(t) repeating exactly every `period` seconds: each feature's frequency (speed * f, cycles per second)
        rounded to a whole number of cycles per period. Same statistics as noise(); a perfect loop for a render."""
        cycles = float(speed) * float(period) / (2 * math.pi)  # f * cycles = whole cycles per period, after rounding
        torch.mul(self.freq, cycles, out=self._arg)
        self._arg.round_().mul_(2 * math.pi * (float(t) % float(period)) / float(period))
        return self._finish(out)

    def _finish(self, out: torch.Tensor | None) -> torch.Tensor:
        self._arg.add_(self.phase).cos_()
        torch.sum(self._arg, dim=1, out=self._sum[0])
        self._sum.mul_(self.scale)
        if out is None:
            return self._sum.to(torch.float32, copy=True)
        return out.copy_(self._sum)

    def z(self, z_seed: torch.Tensor, tau: float, amplitude: float, out: torch.Tensor | None = None,
          period: tuple[float, float, float] | None = None) -> torch.Tensor:
        """z = sqrt(1 - a^2) * z_seed + a * n(tau): (1, z_dim). `z_seed` (1, z_dim) on this device.
        period: (t, period_s, speed) for the perfect-loop walk (periodic_noise) instead of n(tau)."""
        a = min(max(float(amplitude), 0.0), 1.0)
        if out is None:
            out = torch.empty_like(z_seed)
        if period is None:
            self.noise(tau, out=out)
        else:
            self.periodic_noise(*period, out=out)
        # out = a * n + sqrt(1 - a^2) * z_seed, in place.
        return out.mul_(a).add_(z_seed, alpha=math.sqrt(1.0 - a * a))


class WalkClock:
    """Turns (t, speed) per frame into the walk position tau.

    tau integrates speed over time (tau += speed * (t - t_prev)) rather than being speed * t, so turning the
    speed knob mid-show changes how fast the walk goes from where it is instead of jumping to a far-away point.
    With a constant speed tau == speed * t (up to float rounding), so a render is reproducible from t alone.
    If t goes backwards (a replay, a seek), tau restarts from speed * t.
    """

    def __init__(self) -> None:
        self.tau = 0.0
        self._t: float | None = None

    def advance(self, t: float, speed: float) -> float:
        t = float(t)
        if self._t is None or t < self._t:
            self.tau = speed * t
        else:
            self.tau += speed * (t - self._t)
        self._t = t
        return self.tau

    def reset(self) -> None:
        self._t = None
        self.tau = 0.0


# ----------------------------------------------------------------------------------------------------------------
# Seed loops: keyframes z_0 .. z_{n-1} visited in order, back to z_0, in a fixed period (a perfect loop).
# ----------------------------------------------------------------------------------------------------------------


def loop_position(t: float, count: int, period: float) -> tuple[int, int, float]:
    """(i, j, frac) at time t: between keyframe i and j = i + 1 (mod count), frac in [0, 1). Host arithmetic."""
    u = (float(t) % float(period)) / float(period) * count
    i = min(int(math.floor(u)), count - 1)
    return i, (i + 1) % count, u - i


def interpolate(a: torch.Tensor, b: torch.Tensor, frac: float, mode: str, out: torch.Tensor) -> torch.Tensor:
    """lerp or slerp from a to b (1, z_dim) into `out`, with device arithmetic only (no host sync). slerp follows the
    great circle between the two directions (the usual choice for Gaussian z: norms stay typical), falling back to
    lerp for (anti)parallel vectors where the circle is undefined."""
    f = float(frac)
    if mode == "lerp":
        return out.copy_(a).lerp_(b, f)  # `out` is the caller's buffer, never a or b
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1).clamp_(-1.0, 1.0)  # (1,)
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    ok = sin > 1e-6
    safe = torch.where(ok, sin, torch.ones_like(sin))
    wa = torch.where(ok, torch.sin((1.0 - f) * omega) / safe, torch.full_like(sin, 1.0 - f))
    wb = torch.where(ok, torch.sin(f * omega) / safe, torch.full_like(sin, f))
    return out.copy_(a * wa[:, None] + b * wb[:, None])
