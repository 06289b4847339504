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
        self.device = torch.device(device)
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
        self._arg.add_(self.phase).cos_()
        torch.sum(self._arg, dim=1, out=self._sum[0])
        self._sum.mul_(self.scale)
        if out is None:
            return self._sum.to(torch.float32, copy=True)
        return out.copy_(self._sum)

    def z(self, z_seed: torch.Tensor, tau: float, amplitude: float, out: torch.Tensor | None = None) -> torch.Tensor:
        """z = sqrt(1 - a^2) * z_seed + a * n(tau): (1, z_dim). `z_seed` (1, z_dim) on this device."""
        a = min(max(float(amplitude), 0.0), 1.0)
        if out is None:
            out = torch.empty_like(z_seed)
        self.noise(tau, out=out)
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
