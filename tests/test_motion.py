"""Latent motion: the NVlabs seed draw, the Fourier-feature walk, the walk clock, and the walk in the generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.clock import FrameTime
from engine.generators.motion import (
    LatentWalk,
    WalkClock,
    interpolate,
    loop_position,
    seed_to_z,
)
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


# ---- seed loops and the perfect-loop walk ------------------------------------------------------------------------


def test_loop_position_visits_every_keyframe_and_wraps():
    assert loop_position(0.0, 3, 6.0) == (0, 1, 0.0)
    assert loop_position(3.0, 3, 6.0) == (1, 2, 0.5)
    i, j, f = loop_position(5.999, 3, 6.0)
    assert (i, j) == (2, 0) and f > 0.99  # the last segment leads back to the first keyframe
    assert loop_position(6.0, 3, 6.0) == (0, 1, 0.0)


def test_slerp_and_lerp_against_their_formulas():
    a = torch.as_tensor(seed_to_z(1, 16), dtype=torch.float32)
    b = torch.as_tensor(seed_to_z(2, 16), dtype=torch.float32)
    out = torch.empty_like(a)
    torch.testing.assert_close(interpolate(a, b, 0.3, "lerp", out), a + 0.3 * (b - a))
    na, nb = a / a.norm(), b / b.norm()
    omega = math.acos(float((na * nb).sum()))
    want = (math.sin(0.7 * omega) * a + math.sin(0.3 * omega) * b) / math.sin(omega)
    torch.testing.assert_close(interpolate(a, b, 0.3, "slerp", out), want)
    torch.testing.assert_close(interpolate(a, b, 0.0, "slerp", out), a)
    torch.testing.assert_close(interpolate(a, a, 0.5, "slerp", out), a)  # parallel: no division by sin(0)


def test_generator_seed_loop_hits_each_seed_and_closes(gen):
    loop = _snap(motion="loop", loop_seeds=(5.0, 9.0, 13.0), loop_period=6.0)
    still = {s: gen(_snap(seed=s, motion="still"), FrameTime(0.0, 0)).clone() for s in (5, 9, 13)}
    # keyframes at t = 0, 2, 4 s are exactly the seeds' still images
    for t, s in ((0.0, 5), (2.0, 9), (4.0, 13)):
        torch.testing.assert_close(gen(loop, FrameTime(t, 0)), still[s], rtol=0, atol=1e-5)
    # a perfect loop: t and t + period are the same frame; in between it moves
    torch.testing.assert_close(gen(loop, FrameTime(7.3, 0)), gen(loop, FrameTime(1.3, 0)).clone(), rtol=0, atol=1e-6)
    mid = gen(loop, FrameTime(1.0, 0))
    assert (mid - still[5]).abs().mean() > 1e-3 and (mid - still[9]).abs().mean() > 1e-3


def test_walk_with_a_loop_period_repeats_exactly(gen):
    walk = LatentWalk(32, seed=4)
    a = walk.periodic_noise(1.25, period=5.0, speed=0.8)
    b = walk.periodic_noise(6.25, period=5.0, speed=0.8)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    assert not torch.allclose(a, walk.periodic_noise(2.5, period=5.0, speed=0.8))
    gen._clock.reset()
    s = _snap(seed=3, motion="walk", speed=0.5, amplitude=0.6, loop_period=4.0)
    first = gen(s, FrameTime(0.5, 0)).clone()
    later = gen(s, FrameTime(8.5, 1)).clone()
    moved = gen(s, FrameTime(1.5, 2)).clone()
    torch.testing.assert_close(first, later, rtol=0, atol=1e-5)
    assert (moved - first).abs().mean() > 1e-3
