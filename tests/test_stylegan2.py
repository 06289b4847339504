"""StyleGAN2 network (NVlabs-compatible) and the StyleGANGenerator wrapper.

Small widths (channel_base=512, channel_max=32) keep every test fast on a 2-core CPU; architecture, names and
numerics are the same as at full width.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.clock import FrameTime
from engine.errors import UsageError
from engine.generators import create_generator
from engine.generators import stylegan2 as sg2
from engine.generators.stylegan import StyleGANGenerator
from engine.params import Params, with_values

SMALL = dict(channel_base=512, channel_max=32)
T0 = FrameTime(0.0, 0)


def snap(**latent) -> Params:
    values = {"latent.motion": "still"}
    values.update({f"latent.{k}": v for k, v in latent.items()})
    return with_values(Params(), values)


@pytest.fixture(scope="module")
def gen64() -> StyleGANGenerator:
    return StyleGANGenerator.default(64, "cpu", **SMALL)


# -- ops ------------------------------------------------------------------------------------------------------


def test_setup_filter_is_normalised_outer_product():
    f = sg2.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4)
    assert torch.allclose(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)


def test_upsample2d_keeps_constants_and_doubles_size():
    x = torch.full((1, 2, 8, 8), 0.7)
    y = sg2.upsample2d(x, sg2.setup_filter([1, 3, 3, 1]))
    assert y.shape == (1, 2, 16, 16)
    # Interior (away from the zero padding) reproduces the constant: gain up**2 compensates zero insertion.
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 0.7), atol=1e-6)


def test_conv2d_resample_transpose_path_matches_upsample_then_convolve():
    # The fast path (transposed conv + FIR) must equal the definition: zero-insert + FIR, then a true
    # convolution (flip_weight=False, as SynthesisLayer uses for up=2).
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 8, 8, generator=g)
    w = torch.randn(10, 6, 3, 3, generator=g)
    f = sg2.setup_filter([1, 3, 3, 1])
    fast = sg2.conv2d_resample(x, w, f=f, up=2, padding=1, flip_weight=False)
    p0, p1 = 1 + (4 + 1) // 2, 1 + (4 - 2) // 2
    ref = torch.nn.functional.conv2d(sg2.upfirdn2d(x, f, up=2, padding=[p0, p1, p0, p1], gain=4), w.flip([2, 3]))
    assert fast.shape == ref.shape == (2, 10, 16, 16)
    assert torch.allclose(fast, ref, atol=1e-4)


def test_modulated_conv2d_fused_equals_unfused():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 8, 8, generator=g)
    w = torch.randn(7, 5, 3, 3, generator=g)
    s = torch.randn(3, 5, generator=g)
    f = sg2.setup_filter([1, 3, 3, 1])
    for up in (1, 2):
        a = sg2.modulated_conv2d(x, w, s, up=up, padding=1, resample_filter=f, flip_weight=up == 1, fused_modconv=True)
        b = sg2.modulated_conv2d(x, w, s, up=up, padding=1, resample_filter=f, flip_weight=up == 1, fused_modconv=False)
        assert torch.allclose(a, b, atol=1e-4), up


# -- NVlabs compatibility ------------------------------------------------------------------------------------------


def test_state_dict_names_and_shapes_follow_nvlabs():
    G = sg2.Generator(**sg2.config_f_kwargs(64, **SMALL))
    sd = G.state_dict()
    ch = G.synthesis.channels_dict  # {4: 32, ..., 64: 8}
    expected = {
        "mapping.fc0.weight": (512, 512), "mapping.fc7.bias": (512,), "mapping.w_avg": (512,),
        "synthesis.b4.const": (ch[4], 4, 4), "synthesis.b4.resample_filter": (4, 4),
        "synthesis.b4.conv1.weight": (ch[4], ch[4], 3, 3), "synthesis.b4.conv1.noise_const": (4, 4),
        "synthesis.b4.conv1.noise_strength": (), "synthesis.b4.conv1.resample_filter": (4, 4),
        "synthesis.b8.conv0.affine.weight": (ch[4], 512), "synthesis.b8.conv0.affine.bias": (ch[4],),
        "synthesis.b8.conv0.weight": (ch[8], ch[4], 3, 3), "synthesis.b8.conv0.noise_const": (8, 8),
        "synthesis.b8.conv1.bias": (ch[8],), "synthesis.b8.torgb.weight": (3, ch[8], 1, 1),
        "synthesis.b8.torgb.affine.weight": (ch[8], 512), "synthesis.b64.torgb.bias": (3,),
    }
    for name, shape in expected.items():
        assert name in sd, name
        assert tuple(sd[name].shape) == shape, (name, sd[name].shape)
    assert {k.split(".")[0] for k in sd} == {"mapping", "synthesis"}
    assert "synthesis.b4.conv0.weight" not in sd  # the 4x4 block has no up-sampling conv
    assert G.num_ws == 2 * 6 - 2 == G.mapping.num_ws  # 10 ws at 64x64 (18 at 1024)
    # Equalized lr: stored mapping weights are randn / lr_multiplier, applied with lr_multiplier / sqrt(in).
    assert G.mapping.fc0.weight_gain == pytest.approx(0.01 / np.sqrt(512))
    assert abs(G.mapping.fc0.weight.std().item() - 100.0) < 2.0


def test_generator_builds_from_nvlabs_style_kwargs_and_forward_matches_parts():
    kwargs = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=64, img_channels=3,
                  mapping_kwargs={"num_layers": 2}, channel_base=512, channel_max=32, num_fp16_res=4,
                  conv_clamp=256, fused_modconv_default="inference_only")
    G = sg2.Generator(**kwargs).eval()
    assert G.init_kwargs["mapping_kwargs"] == {"num_layers": 2}
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(0))
    c = torch.zeros(2, 0)
    with torch.no_grad():
        img = G(z, c, truncation_psi=0.7, noise_mode="const")
        ws = G.mapping(z, c, truncation_psi=0.7)
        img2 = G.synthesis(ws, noise_mode="const")
    assert img.shape == (2, 3, 64, 64) and img.dtype == torch.float32
    assert torch.equal(img, img2)


def test_truncation_cutoff_only_touches_first_ws():
    G = sg2.Generator(**sg2.config_f_kwargs(64, **SMALL)).eval()
    G.mapping.w_avg.normal_()
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(3))
    c = torch.zeros(1, 0)
    with torch.no_grad():
        full = G.mapping(z, c)
        cut = G.mapping(z, c, truncation_psi=0.0, truncation_cutoff=3)
    assert torch.allclose(cut[:, :3], G.mapping.w_avg.expand(1, 3, -1))
    assert torch.equal(cut[:, 3:], full[:, 3:])


# -- the render-loop generator ---------------------------------------------------------------------------------


def test_same_seed_bit_identical_across_instances(gen64):
    other = StyleGANGenerator.default(64, "cpu", **SMALL)
    a = gen64(snap(seed=7), T0)
    b = other(snap(seed=7), T0)
    assert torch.equal(a, b)
    assert torch.equal(a, gen64(snap(seed=7), T0))


def test_different_seeds_differ(gen64):
    a = gen64(snap(seed=1), T0)
    b = gen64(snap(seed=2), T0)
    assert (a - b).abs().mean() > 0.02


def test_psi_zero_gives_the_average_image_for_every_seed(gen64):
    imgs = [gen64(snap(seed=s, psi=0.0), T0) for s in (0, 1, 12345)]
    assert torch.allclose(imgs[0], imgs[1], atol=1e-5) and torch.allclose(imgs[0], imgs[2], atol=1e-5)
    # ... and it is not just any image: psi=1 differs from it.
    assert (gen64(snap(seed=1, psi=1.0), T0) - imgs[0]).abs().mean() > 0.01


def test_w_avg_is_set_for_random_init(gen64):
    w_avg = gen64.net.mapping.w_avg
    assert w_avg.abs().sum() > 0  # not the NVlabs zeros of an untrained network


@pytest.mark.parametrize("size", [64, 128, 256])
def test_output_shape_and_range(size):
    g = StyleGANGenerator.default(size, "cpu", channel_base=256, channel_max=16)
    img = g(snap(seed=3), T0)
    assert img.shape == (1, 3, size, size) and img.dtype == torch.float32
    assert torch.isfinite(img).all()
    # The colour calibration makes the default use the range: std near 0.5, mostly inside [-1, 1].
    assert 0.2 < img.std().item() < 1.0
    assert (img.abs() <= 1.0).float().mean() > 0.9
    info = g.info()
    assert info["resolution"] == size and info["num_ws"] == 2 * int(np.log2(size)) - 2
    assert info["layers"][:3] == ["b4.conv1", "b4.torgb", "b8.conv0"]


def test_create_generator_default_spec_and_info():
    g = create_generator("stylegan2", size=64, device=torch.device("cpu"), options=dict(SMALL))
    info = g.info()
    for key in ("architecture", "resolution", "num_ws", "channels", "parameters", "layers"):
        assert key in info, key
    assert info["channels"]["4"] == 32 and info["parameters"] > 0
    assert set(g.modules()) == {"mapping", "synthesis"}


def test_bad_size_and_options_are_usage_errors():
    for bad in (48, 2048, 100, 32, "big"):
        with pytest.raises(UsageError, match="size"):
            StyleGANGenerator.default(bad, "cpu", **SMALL)
    with pytest.raises(UsageError, match="channel_bse"):
        StyleGANGenerator.default(64, "cpu", channel_bse=3)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_save_load_round_trip_is_identical(gen64, tmp_path, suffix):
    path = gen64.save(tmp_path / f"net{suffix}")
    loaded = create_generator(str(path), size=None, device=torch.device("cpu"))
    for s in (0, 9):
        assert torch.equal(gen64(snap(seed=s, psi=0.8), T0), loaded(snap(seed=s, psi=0.8), T0))
    assert loaded.info()["resolution"] == 64


def test_loaded_network_resizes_to_requested_size(gen64, tmp_path):
    path = gen64.save(tmp_path / "net.safetensors")
    big = StyleGANGenerator.from_file(path, size=128, device="cpu")
    img = big(snap(seed=1), T0)
    assert img.shape == (1, 3, 128, 128)
    assert any("resized" in n for n in big.info()["notes"])
    # Resizing is of the same picture: downsampling back gives the native frame (bilinear round trip, blurred).
    native = gen64(snap(seed=1), T0)
    back = torch.nn.functional.interpolate(img, size=(64, 64), mode="area")
    assert (back - native).abs().mean() < 0.1


def test_foreign_safetensors_is_a_usage_error(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(2)}, str(p))
    with pytest.raises(UsageError, match="metadata"):
        StyleGANGenerator.from_file(p, size=None, device="cpu")


def test_raw_z_overrides_seed_and_wrong_length_is_ignored(gen64):
    z5 = tuple(float(v) for v in np.random.RandomState(5).randn(512))
    via_seed = gen64(snap(seed=5), T0)
    via_raw = gen64(snap(seed=0, z=z5), T0)
    assert torch.allclose(via_seed, via_raw, atol=1e-6)
    ignored = gen64(snap(seed=0, z=(0.1, 0.2, 0.3)), T0)
    assert torch.equal(ignored, gen64(snap(seed=0), T0))
    assert any("latent.z has 3 values" in w for w in gen64.info()["warnings"])


def test_noise_modes(gen64):
    const_a = gen64(snap(seed=4, noise_mode="const"), T0)
    const_b = gen64(snap(seed=4, noise_mode="const"), T0)
    assert torch.equal(const_a, const_b)
    rand_a = gen64(snap(seed=4, noise_mode="random"), T0)
    rand_b = gen64(snap(seed=4, noise_mode="random"), T0)
    assert not torch.equal(rand_a, rand_b)
    none = gen64(snap(seed=4, noise_mode="none"), T0)
    assert not torch.equal(none, const_a)
    # noise_strength scales every layer's learned strength: 0 switches noise off exactly.
    zero = gen64(snap(seed=4, noise_mode="const", noise_strength=0.0), T0)
    assert torch.allclose(zero, none, atol=1e-6)
    strong = gen64(snap(seed=4, noise_mode="const", noise_strength=5.0), T0)
    assert (strong - none).abs().mean() > (const_a - none).abs().mean()


def test_random_init_is_deterministic_and_keeps_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = sg2.Generator(**sg2.config_f_kwargs(64, **SMALL))  # consumes the global RNG (as NVlabs)
    from engine.generators.stylegan import build_default_network

    torch.manual_seed(123)
    net1 = build_default_network(64, init_seed=3, **SMALL)
    after = torch.rand(1)
    assert torch.equal(before, after)  # build_default_network forks the RNG
    net2 = build_default_network(64, init_seed=3, **SMALL)
    net3 = build_default_network(64, init_seed=4, **SMALL)
    for k, v in net1.state_dict().items():
        assert torch.equal(v, net2.state_dict()[k]), k
    assert not torch.equal(net1.synthesis.b4.const, net3.synthesis.b4.const)
    assert a is not None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_blocks_match_cpu_fp32():
    g_cpu = StyleGANGenerator.default(128, "cpu", **SMALL)
    g_gpu = StyleGANGenerator.default(128, "cuda", **SMALL)
    a = g_cpu(snap(seed=2), T0)
    b = g_gpu(snap(seed=2), T0).cpu()
    assert g_gpu.info()["fp16_blocks"]  # the highest resolutions ran in fp16
    assert (a - b).abs().mean() < 0.02
