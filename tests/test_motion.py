"""Latent motion: the NVlabs seed draw, the Fourier-feature walk, the walk clock, and the walk in the generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.generators.base import FrameTime
from engine.generators.motion import LatentWalk, WalkClock, seed_to_z
from engine.params import Params, with_values

Z = 512


def test_seed_to_z_is_the_nvlabs_draw():
    for seed in (0, 1, 2**32 - 1):
        assert np.array_equal(seed_to_z(seed, Z), np.random.RandomState(seed).randn(1, Z))


def test_walk_is_deterministic_per_seed():
    a = LatentWalk(Z, 3).noise(1.25)
    b = LatentWalk(Z, 3).noise(1.25)
    c = LatentWalk(Z, 4).noise(1.25)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_noise_is_stationary_unit_variance():
    walk = LatentWalk(Z, 0)
    for tau in (0.0, 3.7, 1e4):
        n = walk.noise(tau)
        assert n.shape == (1, Z)
        assert abs(n.mean().item()) < 0.15
        assert 0.8 < n.std().item() < 1.2, (tau, n.std().item())


def test_consecutive_frames_are_closer_than_far_apart_frames():
    walk = LatentWalk(Z, 1)
    n0 = walk.noise(10.0)
    near = (walk.noise(10.0 + 1 / 60 * 0.15) - n0).norm().item()
    far = (walk.noise(10.0 + 20.0) - n0).norm().item()
    assert near < 0.05 * far
    # Continuity: the step shrinks with the time step.
    smaller = (walk.noise(10.0 + 1 / 600 * 0.15) - n0).norm().item()
    assert smaller < near


def test_z_stays_standard_normal_along_the_walk():
    walk = LatentWalk(Z, 2)
    z_seed = torch.as_tensor(seed_to_z(7, Z), dtype=torch.float32)
    out = torch.empty(1, Z)
    stds = []
    for tau in np.linspace(0, 50, 11):
        z = walk.z(z_seed, float(tau), 0.6, out=out)
        assert z is out
        stds.append(z.std().item())
    assert all(0.85 < s < 1.15 for s in stds), stds
    # amplitude 0 is the seed's z exactly; amplitude 1 is pure walk noise.
    assert torch.equal(walk.z(z_seed, 5.0, 0.0), z_seed)
    assert torch.allclose(walk.z(z_seed, 5.0, 1.0), walk.noise(5.0))


def test_walk_clock_integrates_speed_without_jumps():
    clock = WalkClock()
    assert clock.advance(100.0, 0.5) == pytest.approx(50.0)
    assert clock.advance(101.0, 0.5) == pytest.approx(50.5)
    # Doubling the speed at t=101 continues from 50.5 (speed * t would jump to 202).
    assert clock.advance(102.0, 2.0) == pytest.approx(52.5)
    # Speed 0 freezes.
    assert clock.advance(110.0, 0.0) == pytest.approx(52.5)
    # t going backwards (a seek) restarts from speed * t.
    assert clock.advance(4.0, 1.0) == pytest.approx(4.0)


def _snap(**latent) -> Params:
    return with_values(Params(), {f"latent.{k}": v for k, v in latent.items()})


@pytest.fixture(scope="module")
def gen():
    from engine.generators.stylegan import StyleGANGenerator

    return StyleGANGenerator.default(64, "cpu", channel_base=512, channel_max=32)


def test_generator_walk_moves_smoothly(gen):
    gen._clock.reset()
    s = _snap(seed=3, motion="walk", speed=0.5, amplitude=0.6)
    frames = [gen(s, FrameTime(t, i)).clone() for i, t in enumerate((10.0, 10.0 + 1 / 60, 30.0))]
    near = (frames[1] - frames[0]).abs().mean().item()
    far = (frames[2] - frames[0]).abs().mean().item()
    assert 0 < near < 0.25 * far


def test_generator_speed_zero_is_still(gen):
    gen._clock.reset()
    s = _snap(seed=3, motion="walk", speed=0.0, amplitude=0.6)
    a = gen(s, FrameTime(0.0, 0)).clone()
    b = gen(s, FrameTime(25.0, 1500))
    assert torch.equal(a, b)
    gen._clock.reset()
    still = _snap(seed=3, motion="still")
    c = gen(still, FrameTime(0.0, 0)).clone()
    d = gen(still, FrameTime(25.0, 1500))
    assert torch.equal(c, d)


def test_generator_walk_is_reproducible_from_t(gen):
    from engine.generators.stylegan import StyleGANGenerator

    other = StyleGANGenerator.default(64, "cpu", channel_base=512, channel_max=32)
    s = _snap(seed=11, motion="walk", speed=0.3, amplitude=0.6)
    gen._clock.reset()
    assert torch.equal(gen(s, FrameTime(7.5, 0)), other(s, FrameTime(7.5, 0)))
    assert math.isfinite(gen(s, FrameTime(8.0, 1)).sum().item())
