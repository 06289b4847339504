"""StyleGAN tools (issue 4): class label, layer view, layer edits, network blending, feature-map bending,
projection and saved latents. Each test checks that a tool does what its parameter doc says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.clock import FrameTime
from engine.errors import UsageError
from engine.generators import stylegan2 as sg2
from engine.generators.layers import Bender, bend_maps, channel_index, check_edits
from engine.generators.project import load_w, multiscale_mse, project, save_w
from engine.generators.stylegan import StyleGANGenerator
from engine.params import Params, with_values

SMALL = dict(channel_base=512, channel_max=32)
T0 = FrameTime(0.0, 0)


def snap(**values) -> Params:
    v = {"latent.motion": "still"}
    for k, x in values.items():
        group = "latent" if k in ("seed", "psi", "noise_mode", "truncation_cutoff") else "stylegan"
        v[f"{group}.{k}"] = x
    return with_values(Params(), v)


@pytest.fixture()
def gen() -> StyleGANGenerator:
    return StyleGANGenerator.default(64, "cpu", calibrate=False, **SMALL)


def _state(g: StyleGANGenerator) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in g.net.state_dict().items()}


# -- layer view -----------------------------------------------------------------------------------------------


def test_layer_view_shows_the_named_layer_at_output_size(gen):
    captured = {}
    h = gen.net.synthesis.b16.conv1.register_forward_hook(lambda m, i, o: captured.setdefault("x", o.clone()))
    gen(snap(seed=2), T0)
    h.remove()
    maps = captured["x"]  # (1, C16, 16, 16)
    assert maps.shape[-2:] == (16, 16)

    out = gen(snap(seed=2, layer="b16.conv1", layer_channels=(0, 1, 2)), T0)
    assert out.shape == (1, 3, 64, 64)
    y = maps[:, :3]
    y = ((y - y.mean(dim=(2, 3), keepdim=True)) / (2.5 * (y.std(dim=(2, 3), keepdim=True) + 1e-6))).clamp(-1, 1)
    expected = F.interpolate(y, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(out, expected, atol=1e-5)
    # It is not the image.
    assert (out - gen(snap(seed=2), T0)).abs().mean() > 0.05


def test_layer_view_stops_synthesis_after_the_layer(gen):
    calls = []
    h = gen.net.synthesis.b64.conv1.register_forward_hook(lambda m, i, o: calls.append(1))
    gen(snap(seed=1, layer="b8.conv1"), T0)
    assert calls == []
    gen(snap(seed=1), T0)
    assert calls == [1]
    h.remove()


def test_layer_view_modes_and_names(gen):
    names = gen.info()["layers"]
    assert "b32.torgb" in names and "b8.conv0" in names
    pca = gen(snap(seed=1, layer="b32.conv0", layer_mode="pca"), T0)
    mean = gen(snap(seed=1, layer="synthesis.b32.conv0", layer_mode="mean"), T0)
    assert pca.shape == mean.shape == (1, 3, 64, 64)
    assert torch.isfinite(pca).all() and pca.std() > 0.1
    assert torch.equal(mean[:, 0], mean[:, 1])  # grey
    assert not torch.equal(pca[:, 0], pca[:, 1])  # colour
    # Channel indices wrap modulo the channel count; one index = grey.
    one = gen(snap(seed=1, layer="b32.conv0", layer_channels=(5,)), T0)
    assert torch.equal(one[:, 0], one[:, 2])
    # Unknown name: the image, plus a warning.
    img = gen(snap(seed=1, layer="b999.conv7"), T0)
    assert torch.equal(img, gen(snap(seed=1), T0))
    assert any("b999.conv7" in w for w in gen.info()["warnings"])


# -- layer edits ------------------------------------------------------------------------------------------------


def test_edit_scale_one_is_identity_and_clearing_restores(gen):
    base_state = _state(gen)
    base = gen(snap(seed=3), T0)
    assert torch.equal(gen(snap(seed=3, edits="b16.conv0.weight *= 1"), T0), base)
    edited = gen(snap(seed=3, edits="b16.conv0.weight *= -1.5; b8.conv1.bias += 0.3"), T0)
    assert (edited - base).abs().mean() > 0.01
    w = gen.net.synthesis.b16.conv0.weight
    assert torch.allclose(w, base_state["synthesis.b16.conv0.weight"] * -1.5)
    assert torch.allclose(gen.net.synthesis.b8.conv1.bias, base_state["synthesis.b8.conv1.bias"] + 0.3)
    # Clearing restores the original weights exactly, and the image with them.
    assert torch.equal(gen(snap(seed=3, edits=""), T0), base)
    for k, v in gen.net.state_dict().items():
        assert torch.equal(v, base_state[k]), k


def test_edit_time_expression_and_wildcards(gen):
    base_state = _state(gen)
    e = "b*.torgb.weight *= 1 + 0.5*sin(t)"
    at0 = gen(snap(seed=3, edits=e), FrameTime(0.0, 0))
    assert torch.equal(at0, gen(snap(seed=3), T0))  # sin(0) = 0: identity
    gen(snap(seed=3, edits=e), FrameTime(math.pi / 2, 1))
    for res in (4, 8, 16, 32, 64):
        key = f"synthesis.b{res}.torgb.weight"
        assert torch.allclose(gen.net.state_dict()[key], base_state[key] * 1.5)
    # Edits apply from the originals, never compounding frame over frame.
    gen(snap(seed=3, edits=e), FrameTime(math.pi / 2, 2))
    assert torch.allclose(gen.net.synthesis.b4.torgb.weight, base_state["synthesis.b4.torgb.weight"] * 1.5)


def test_bad_edits_are_warned_and_skipped(gen):
    base = gen(snap(seed=3), T0)
    out = gen(snap(seed=3, edits="nothing.here *= 2; b8.conv1.bias *= __import__('os'); b8.conv1.bias = 3"), T0)
    assert torch.equal(out, base)
    warnings = " ".join(gen.info()["warnings"])
    assert "matches no parameter" in warnings and "not allowed" in warnings and "is not PARAM" in warnings
    with pytest.raises(UsageError, match="matches no parameter"):
        check_edits("nothing.here *= 2", gen.net)


def test_save_writes_the_original_weights_under_edits(gen, tmp_path):
    base = gen(snap(seed=4), T0)
    gen(snap(seed=4, edits="b16.conv0.weight *= 0"), T0)
    loaded = StyleGANGenerator.from_file(gen.save(tmp_path / "n.safetensors"), size=None, device="cpu")
    assert torch.equal(loaded(snap(seed=4), T0), base)


# -- blending ---------------------------------------------------------------------------------------------------


@pytest.fixture()
def pair(tmp_path):
    a = StyleGANGenerator.default(64, "cpu", calibrate=False, **SMALL)
    b = StyleGANGenerator.default(64, "cpu", calibrate=False, init_seed=1, **SMALL)
    path = b.save(tmp_path / "b.safetensors")
    return a, b, path


def test_blend_zero_is_a_one_is_b_and_not_clamped(pair):
    a, b, path = pair
    img_a = a(snap(seed=5), T0)
    img_b = b(snap(seed=5), T0)
    sa, sb = _state(a), _state(b)
    assert torch.equal(a(snap(seed=5, blend_file=str(path), blend=0.0), T0), img_a)
    one = a(snap(seed=5, blend_file=str(path), blend=1.0, blend_layers="mapping synthesis"), T0)
    assert torch.allclose(one, img_b, atol=1e-5)
    a(snap(seed=5, blend_file=str(path), blend=-0.5, blend_layers="mapping synthesis"), T0)
    key = "synthesis.b16.conv0.weight"
    assert torch.allclose(a.net.state_dict()[key], sa[key] - 0.5 * (sb[key] - sa[key]), atol=1e-6)
    a(snap(seed=5, blend_file=str(path), blend=2.0, blend_layers="mapping synthesis"), T0)
    assert torch.allclose(a.net.state_dict()[key], sa[key] + 2.0 * (sb[key] - sa[key]), atol=1e-5)
    # Back to 0: A exactly.
    assert torch.equal(a(snap(seed=5, blend_file=str(path), blend=0.0), T0), img_a)


def test_blend_per_group(pair):
    a, b, path = pair
    sa, sb = _state(a), _state(b)
    a(snap(seed=5, blend_file=str(path), blend=1.0, blend_layers="synthesis b4=0 b8.conv0=0.5"), T0)
    live = a.net.state_dict()
    assert torch.equal(live["synthesis.b4.const"], sa["synthesis.b4.const"])  # b4=0: network A
    assert torch.equal(live["mapping.fc0.weight"], sa["mapping.fc0.weight"])  # mapping not selected
    assert torch.allclose(live["synthesis.b16.conv1.weight"], sb["synthesis.b16.conv1.weight"])
    k = "synthesis.b8.conv0.weight"
    assert torch.allclose(live[k], (sa[k] + sb[k]) / 2, atol=1e-6)


def test_blend_option_and_incompatible_network(pair, tmp_path):
    a, b, path = pair
    g = StyleGANGenerator.default(64, "cpu", calibrate=False, blend="stylegan2:1", **SMALL)
    img = g(snap(seed=5, blend=1.0, blend_layers="mapping synthesis"), T0)
    assert torch.allclose(img, b(snap(seed=5), T0), atol=1e-5)
    other = StyleGANGenerator.default(64, "cpu", calibrate=False, channel_base=512, channel_max=16)
    bad = other.save(tmp_path / "narrow.safetensors")
    with pytest.raises(UsageError, match="same architecture|config and resolution"):
        StyleGANGenerator.default(64, "cpu", calibrate=False, blend=str(bad), **SMALL)
    before = a(snap(seed=5), T0)
    assert torch.equal(a(snap(seed=5, blend_file=str(bad), blend=1.0), T0), before)
    assert any("blend_file" in w for w in a.info()["warnings"])


# -- bending ---------------------------------------------------------------------------------------------------


def _maps(c=4, h=8, w=8):
    return torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(0))


def test_bend_translate_rotate_scale():
    x = _maps()
    right = bend_maps(x, "translate", [1 / 8, 0.0])  # one pixel right, zeros come in
    assert torch.allclose(right[..., 1:], x[..., :-1], atol=1e-5) and right[..., 0].abs().max() < 1e-6
    down = bend_maps(x, "translate", [0.0, 2 / 8])
    assert torch.allclose(down[..., 2:, :], x[..., :-2, :], atol=1e-5)
    rot = bend_maps(x, "rotate", [90.0])  # clockwise on screen
    assert torch.allclose(rot, torch.rot90(x, k=-1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(bend_maps(x, "scale", [1.0]), x, atol=1e-6)
    zoom = bend_maps(x, "scale", [2.0])
    assert zoom.shape == x.shape and not torch.allclose(zoom, x)


def test_bend_morphology_and_pointwise():
    x = _maps()
    dil = bend_maps(x, "dilate", [1])
    ero = bend_maps(x, "erode", [1])
    i, j = 4, 4
    assert dil[0, 0, i, j] == x[0, 0, i - 1:i + 2, j - 1:j + 2].max()
    assert ero[0, 0, i, j] == x[0, 0, i - 1:i + 2, j - 1:j + 2].min()
    assert (dil >= x).all() and (ero <= x).all()
    inv = bend_maps(x, "invert", [])
    assert torch.allclose(inv.amax(dim=(2, 3)), x.amax(dim=(2, 3))) and torch.allclose(inv.amin(dim=(2, 3)), x.amin(dim=(2, 3)))
    flat_max = x.flatten(2).argmax(-1)
    assert torch.equal(inv.flatten(2).argmin(-1), flat_max)  # brightest became darkest
    assert torch.allclose(bend_maps(inv, "invert", []), x, atol=1e-6)
    thr = bend_maps(x, "threshold", [0.2])
    assert torch.equal(thr, (x >= 0.2).float())
    assert torch.equal(bend_maps(x, "multiply", [3.0]), x * 3)
    assert torch.equal(bend_maps(x, "ablate", []), torch.zeros_like(x))


def test_channel_selection():
    assert channel_index("all", 8, "l") is None
    assert channel_index("0 3 5-6 99", 8, "l").tolist() == [0, 3, 5, 6]
    half = channel_index("50%", 64, "b16.conv1")
    assert half.numel() == 32 and torch.equal(half, channel_index("50%", 64, "b16.conv1"))
    assert not torch.equal(half, channel_index("50%", 64, "b32.conv1"))


def test_bend_in_the_generator_touches_only_chosen_maps(gen):
    base = gen(snap(seed=6), T0)
    assert torch.equal(gen(snap(seed=6, bend="b16.conv1 multiply(1)"), T0), base)
    out = gen(snap(seed=6, bend="b16.conv1 ablate() [0-3]; b32.conv0 rotate(45*t)"), FrameTime(1.0, 1))
    assert (out - base).abs().mean() > 0.01
    seen = {}
    gen(snap(seed=6, bend="b16.conv1 ablate() [0-3]"), T0)  # arms the bend hook
    h = gen.net.synthesis.b16.conv1.register_forward_hook(lambda m, i, o: seen.setdefault("x", o.clone()))
    gen(snap(seed=6, bend="b16.conv1 ablate() [0-3]"), T0)  # same text: not re-armed
    h.remove()
    # A hook added after the bend hook sees the bent output: maps 0-3 zero, the rest intact.
    x = seen["x"]
    assert x[:, :4].abs().max() == 0 and x[:, 4:].abs().max() > 0
    assert torch.equal(gen(snap(seed=6, bend=""), T0), base)
    gen(snap(seed=6, bend="b16.conv1 twist(3); nolayer ablate()"), T0)
    ws = " ".join(gen.info()["warnings"])
    assert "unknown op 'twist'" in ws and "'nolayer' is not a synthesis layer" in ws


def test_bender_formula_arguments_follow_time(gen):
    b = Bender(gen.net.synthesis)
    b.set("b8.conv1 multiply(t)")
    x = torch.ones(1, 32, 8, 8)
    b.set_time(2.0)
    assert torch.equal(b.apply(x, "b8.conv1", b.clauses), x * 2)
    b.clear()


# -- class label ------------------------------------------------------------------------------------------------


def test_class_label_for_conditional_networks():
    kw = sg2.config_f_kwargs(64, c_dim=4, **SMALL)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = sg2.Generator(**kw)
    g = StyleGANGenerator(net, size=None, device="cpu", source="test")
    none = g(snap(seed=1), T0)
    c0 = g(snap(seed=1, class_index=0), T0)
    c1 = g(snap(seed=1, class_index=1), T0)
    assert not torch.equal(c0, c1) and not torch.equal(c0, none)
    assert torch.equal(g._c, torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    assert torch.equal(g(snap(seed=1, class_index=-1), T0), none)
    g(snap(seed=1, class_index=9), T0)
    assert any("out of range" in w for w in g.info()["warnings"])


# -- projection and saved latents --------------------------------------------------------------------------------


def test_projection_reduces_the_loss_and_the_latent_loads_live(tmp_path):
    gen = StyleGANGenerator.default(64, "cpu", calibrate=False, channel_base=256, channel_max=16)
    target = gen(snap(seed=8, psi=0.7), T0)
    start = gen(snap(seed=0, psi=0.0), T0)  # projection starts from w_avg
    ws, report = project(gen, target, steps=15, mode="w+", lr=0.05, w_samples=256)
    assert ws.shape == (1, gen.num_ws, 512)
    assert report["loss"] < 0.8 * float(multiscale_mse(start, target))
    assert report["losses"][-1] < report["losses"][0]
    path = save_w(tmp_path / "w.npz", ws)
    assert np.load(path)["w"].shape == (1, gen.num_ws, 512)
    live = gen(snap(w_file=str(path)), T0)
    with torch.no_grad():
        direct = gen.finish(gen.net.synthesis(ws, noise_mode="const"))
    assert torch.allclose(live, direct, atol=1e-6)
    assert float(multiscale_mse(live, target)) == pytest.approx(report["loss"], rel=1e-4)
    # psi applies to a loaded latent too: 0 gives the average image.
    assert torch.allclose(gen(snap(w_file=str(path), psi=0.0), T0), start, atol=1e-5)
    # Clearing the path goes back to the mapping network.
    assert torch.equal(gen(snap(seed=8, psi=0.7, w_file=""), T0), target)


def test_w_files_pt_broadcast_and_errors(tmp_path):
    w = torch.randn(1, 6, 8)
    save_w(tmp_path / "a.pt", w)
    assert torch.equal(load_w(tmp_path / "a.pt", 6, 8), w)
    np.save(tmp_path / "one.npy", np.ones(8, dtype=np.float32))
    assert load_w(tmp_path / "one.npy", 6, 8).shape == (1, 6, 8)
    with pytest.raises(UsageError, match="does not fit"):
        load_w(tmp_path / "a.pt", 6, 16)
    with pytest.raises(UsageError, match="not found"):
        load_w(tmp_path / "missing.npz", 6, 8)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="cannot read"):
        load_w(tmp_path / "bad.npz", 6, 8)


def test_bad_w_file_is_warned_live(gen, tmp_path):
    base = gen(snap(seed=2), T0)
    assert torch.equal(gen(snap(seed=2, w_file=str(tmp_path / "nope.npz")), T0), base)
    assert any("w_file" in w for w in gen.info()["warnings"])


def test_engine_project_cli(gen, tmp_path, capsys):
    from PIL import Image

    from engine.cli import main

    net = gen.save(tmp_path / "net.safetensors")
    rgb = (np.random.RandomState(0).rand(80, 100, 3) * 255).astype(np.uint8)  # not square: centre-cropped
    Image.fromarray(rgb).save(tmp_path / "target.png")
    out = tmp_path / "latent.npz"
    rc = main(["project", str(tmp_path / "target.png"), "--generator", str(net), "--device", "cpu", "--steps", "3",
               "--out", str(out), "--save-image", str(tmp_path / "proj.png")])
    assert rc == 0
    assert load_w(out, gen.num_ws, 512).shape == (1, gen.num_ws, 512)
    assert Image.open(tmp_path / "proj.png").size == (64, 64)
    assert "stylegan.w_file=" in capsys.readouterr().out
    assert main(["project", str(tmp_path / "missing.png"), "--generator", str(net), "--device", "cpu"]) == 2
    assert "image not found" in capsys.readouterr().err


def test_random_blend_twin_matches_a_non_default_architecture():
    """blend=stylegan2:SEED builds a random network of the loaded one's own architecture (here z/w 32, not 512)."""
    from engine.generators.stylegan import StyleGANGenerator
    from engine.params import ParamStore

    torch.manual_seed(0)
    net = sg2.Generator(**sg2.config_f_kwargs(64, z_dim=32, w_dim=32, channel_base=256, channel_max=16)).eval()
    g = StyleGANGenerator(net, size=None, device="cpu", source="test")
    g.set_blend_network("stylegan2:3")
    store = ParamStore()
    store.update({"latent.motion": "still"})
    a = g(store.snapshot(), FrameTime(0.0, 0)).clone()
    store.update({"stylegan.blend": 1.0})
    assert (g(store.snapshot(), FrameTime(0.0, 0)) - a).abs().mean() > 1e-3


def test_info_lists_the_parameter_names_edits_take(gen):
    lines = gen.info()["edit_parameters"]
    assert "b16.conv0: weight noise_strength bias affine.weight affine.bias noise_const" in lines
    for line in lines:  # every listed name is a valid edit target
        layer, names = line.split(": ")
        for name in names.split():
            assert check_edits(f"{layer}.{name} *= 1", gen.net), (layer, name)


def test_resolution_drop_renders_the_coarse_image_at_the_output_size(gen):
    from engine.params import Params, with_values

    base = with_values(Params(), {"latent.motion": "still"})
    full = gen(base, FrameTime(0.0, 0)).clone()
    half = gen(with_values(base, {"stylegan.resolution_drop": 1}), FrameTime(0.0, 0)).clone()
    assert half.shape == full.shape
    ws = gen.net.mapping(torch.as_tensor(np.random.RandomState(0).randn(1, gen.z_dim), dtype=torch.float32), gen._c)
    coarse = gen.net.synthesis(ws, noise_mode="const", drop_blocks=1)
    assert coarse.shape[-1] == gen.native_resolution // 2  # the skip image one block early
    assert not torch.equal(half, full)
    # the same picture, less detail: strongly correlated with the full image
    a, b = full.flatten() - full.mean(), half.flatten() - half.mean()
    assert float((a * b).sum() / (a.norm() * b.norm())) > 0.5
    assert [v.stylegan.resolution_drop for v in gen.shape_variants(base)] == [1, 2]
