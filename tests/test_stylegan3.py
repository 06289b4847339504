"""StyleGAN3 (T/R) in plain PyTorch: filter design vs scipy, NVlabs layer schedule and names, forward behaviour,
the user input transform. Tiny 64 px networks; runs in a few seconds on a CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.generators import stylegan3 as s3

TINY = dict(z_dim=32, w_dim=32, channel_base=512, channel_max=16)


def tiny(cfg: str = "t", seed: int = 0) -> s3.Generator:
    torch.manual_seed(seed)
    return s3.Generator(**s3.config_kwargs(cfg, 64, **TINY)).eval()


def _scipy_filter(numtaps, cutoff, width, fs, radial):
    """NVlabs' design_lowpass_filter, with scipy as NVlabs calls it."""
    signal = pytest.importorskip("scipy.signal")
    special = pytest.importorskip("scipy.special")
    if numtaps == 1:
        return None
    if not radial:
        return torch.as_tensor(signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs), dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    f = special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = signal.kaiser_beta(signal.kaiser_atten(numtaps, width / (fs / 2)))
    w = np.kaiser(numtaps, beta)
    f *= np.outer(w, w)
    f /= np.sum(f)
    return torch.as_tensor(f, dtype=torch.float32)


@pytest.mark.parametrize("cfg", ["t", "r"])
def test_filters_match_scipy_design(cfg):
    G = tiny(cfg)
    checked = radial = 0
    for name in G.synthesis.layer_names:
        L = getattr(G.synthesis, name)
        up = _scipy_filter(L.up_taps, L.in_cutoff, L.in_half_width * 2, L.tmp_sampling_rate, False)
        down = _scipy_filter(L.down_taps, L.out_cutoff, L.out_half_width * 2, L.tmp_sampling_rate, L.down_radial)
        for ours, ref in ((L.up_filter, up), (L.down_filter, down)):
            assert (ours is None) == (ref is None), name
            if ref is not None:
                assert ours.shape == ref.shape, name
                assert torch.allclose(ours, ref, rtol=0, atol=1e-7), (name, (ours - ref).abs().max())
                checked += 1
                radial += ours.ndim == 2
    assert checked >= 20
    assert (radial > 0) == (cfg == "r")  # config R's non-critical layers use the radial (jinc) down filter


def test_bessel_j1_matches_scipy():
    special = pytest.importorskip("scipy.special")
    x = np.linspace(0.01, 60, 301)
    assert np.abs(s3.bessel_j1(x) - special.j1(x)).max() < 1e-12


# Layer names of official networks (from their checkpoints' parameter names).
OFFICIAL_SCHEDULES = [
    ("t", 1024, 32768, ["L0_36_512", "L1_36_512", "L2_52_512", "L3_52_512", "L4_84_512", "L5_148_512", "L6_148_512",
                        "L7_276_323", "L8_276_203", "L9_532_128", "L10_1044_81", "L11_1044_51", "L12_1044_32",
                        "L13_1024_32", "L14_1024_3"]),
    ("t", 256, 16384, ["L0_36_512", "L1_36_512", "L2_36_512", "L3_52_512", "L4_52_512", "L5_84_512", "L6_84_512",
                       "L7_148_362", "L8_148_256", "L9_148_181", "L10_276_128", "L11_276_91", "L12_276_64",
                       "L13_256_64", "L14_256_3"]),
    ("r", 256, 16384, ["L0_36_1024", "L1_36_1024", "L2_36_1024", "L3_52_1024", "L4_52_1024", "L5_84_1024",
                       "L6_84_1024", "L7_148_724", "L8_148_512", "L9_148_362", "L10_276_256", "L11_276_181",
                       "L12_276_128", "L13_256_128", "L14_256_3"]),
]


@pytest.mark.parametrize("cfg,res,cbase,names", OFFICIAL_SCHEDULES)
def test_layer_schedule_matches_official_networks(cfg, res, cbase, names):
    with torch.device("meta"):  # names and shapes only: no weights allocated
        G = s3.Generator(**s3.config_kwargs(cfg, res, channel_base=cbase))
    assert G.synthesis.layer_names == names
    assert G.num_ws == 16 and G.mapping.num_layers == 2
    L = getattr(G.synthesis, names[0])
    assert tuple(L.weight.shape) == (int(names[0].split("_")[2]),) * 2 + ((1, 1) if cfg == "r" else (3, 3))
    torgb = getattr(G.synthesis, names[-1])
    assert torgb.is_torgb and torgb.conv_kernel == 1 and torgb.up_filter is None and torgb.down_filter is None


def test_state_dict_uses_nvlabs_names():
    keys = set(tiny("t").state_dict())
    for k in ["mapping.fc0.weight", "mapping.fc1.bias", "mapping.w_avg", "synthesis.input.weight",
              "synthesis.input.affine.weight", "synthesis.input.affine.bias", "synthesis.input.transform",
              "synthesis.input.freqs", "synthesis.input.phases", "synthesis.L0_36_16.affine.weight",
              "synthesis.L0_36_16.weight", "synthesis.L0_36_16.bias", "synthesis.L0_36_16.magnitude_ema",
              "synthesis.L0_36_16.up_filter", "synthesis.L0_36_16.down_filter", "synthesis.L14_64_3.weight"]:
        assert k in keys, k
    # The ToRGB layer runs at one rate: identity filters are None buffers, absent from the state dict.
    assert "synthesis.L14_64_3.up_filter" not in keys and "synthesis.L14_64_3.down_filter" not in keys


@pytest.mark.parametrize("cfg", ["t", "r"])
def test_forward_shape_and_batch_independence(cfg):
    G = tiny(cfg)
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        img = G(z, None)
        one = G(z[1:], None)
    assert img.shape == (2, 3, 64, 64) and img.dtype == torch.float32 and torch.isfinite(img).all()
    assert not torch.allclose(img[0], img[1])  # different z, different image
    assert torch.allclose(img[1:], one, atol=1e-5)  # the grouped conv keeps samples independent


def test_truncation_psi_zero_gives_w_avg_and_tensor_psi_matches_float():
    G = tiny("t")
    G.mapping.w_avg.normal_()
    z = torch.randn(2, 32)
    with torch.no_grad():
        ws0 = G.mapping(z, None, truncation_psi=0.0)
        ws_f = G.mapping(z, None, truncation_psi=0.7)
        ws_t = G.mapping(z, None, truncation_psi=torch.tensor(0.7))
    assert torch.allclose(ws0, G.mapping.w_avg.expand_as(ws0), atol=1e-6)
    assert torch.allclose(ws_f, ws_t, atol=1e-6)


def test_input_transform_is_inverse_of_nvlabs_make_transform():
    for tx, ty, ang in [(0.0, 0.0, 0.0), (0.25, -0.1, 30.0), (-1.5, 2.0, -135.0)]:
        ref = np.linalg.inv(s3.make_transform(tx, ty, ang))
        ours = s3.input_transform(tx, ty, ang).numpy()
        assert np.allclose(ours, ref, atol=1e-6), (tx, ty, ang)
    # 0-d tensors work too (live parameters stay on their device).
    t = s3.input_transform(torch.tensor(0.25), torch.tensor(-0.1), torch.tensor(30.0))
    assert np.allclose(t.numpy(), np.linalg.inv(s3.make_transform(0.25, -0.1, 30.0)), atol=1e-6)


def test_translation_moves_fourier_features_by_whole_samples():
    """User translate tx = k / sampling_rate shifts the input features k samples right (image axes)."""
    G = tiny("t")
    inp = G.synthesis.input
    w = torch.randn(1, 32)
    k = 3
    with torch.no_grad():
        base = inp(w)
        s3.set_input_transform(G, tx=k / float(inp.sampling_rate), ty=0.0, angle_deg=0.0)
        moved = inp(w)
        s3.set_input_transform(G)  # back to identity
        again = inp(w)
    assert torch.allclose(moved[..., k:], base[..., :-k], atol=1e-4)
    assert not torch.allclose(moved, base, atol=1e-2)
    assert torch.equal(again, base)
    assert torch.equal(G.synthesis.input.transform, torch.eye(3))


def test_set_input_transform_rejects_stylegan2_like_modules():
    with pytest.raises(TypeError, match="StyleGAN3"):
        s3.set_input_transform(torch.nn.Linear(2, 2), 0.1, 0.0, 0.0)


def test_translate_param_moves_a_stylegan3_stream_and_zero_restores_it():
    """stylegan.translate_x/rotate reach synthesis.input.transform through the live parameter object."""
    import torch

    from engine.clock import FrameTime
    from engine.generators.stylegan import StyleGANGenerator
    from engine.params import ParamStore

    net = tiny("t")
    gen = StyleGANGenerator(net, size=None, device="cpu", source="test")
    store = ParamStore()
    store.update({"latent.motion": "still"})
    when = FrameTime(0.0, 0)
    base = gen(store.snapshot(), when).clone()
    store.update({"stylegan.translate_x": 0.25, "stylegan.rotate": 10.0})
    moved = gen(store.snapshot(), when).clone()
    assert (moved - base).abs().mean() > 1e-3
    store.update({"stylegan.translate_x": 0.0, "stylegan.rotate": 0.0})
    assert torch.equal(gen(store.snapshot(), when), base)


def test_blending_keeps_the_live_translation():
    """Blending restores weights from kept originals every time its amount changes; the input transform is not a
    weight but the live translate/rotate, and must survive it."""
    from engine.clock import FrameTime
    from engine.generators.blend import Blend
    from engine.generators.stylegan import StyleGANGenerator
    from engine.params import ParamStore

    def make():
        g = StyleGANGenerator(tiny("t"), size=None, device="cpu", source="test")
        g.option_blend = Blend(g.net, tiny("t", seed=1), "test")
        return g

    when = FrameTime(0.0, 0)
    a, store = make(), ParamStore()
    store.update({"latent.motion": "still", "stylegan.blend": 0.5})
    a(store.snapshot(), when)
    store.update({"stylegan.translate_x": 0.25})
    a(store.snapshot(), when)
    store.update({"stylegan.blend": 0.6})  # only the amount changes
    got = a(store.snapshot(), when).clone()

    b, fresh = make(), ParamStore()
    fresh.update({"latent.motion": "still", "stylegan.blend": 0.6, "stylegan.translate_x": 0.25})
    torch.testing.assert_close(got, b(fresh.snapshot(), when), rtol=0, atol=1e-6)
