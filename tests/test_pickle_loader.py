"""Loading StyleGAN network files without running code from them.

Official-layout NVlabs pickles are written by tests/sg_fixtures.py (fake torch_utils/dnnlib modules exist only
while pickling), then loaded through engine.generators.pickle_loader in a process with no NVlabs modules, and the
loaded network must reproduce the original's output (< 1e-4, float32, CPU). Hostile pickles must be refused
before anything runs. rosinality checkpoints must convert to the same function."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import sys
from pathlib import Path

import numpy as np

import pytest
import torch

import sg_fixtures as fx
from engine.errors import UsageError
from engine.generators import pickle_loader as pl
from engine.generators import stylegan2 as s2
from engine.generators import stylegan3 as s3
from safetensors.torch import load_file, save_file
from safetensors import safe_open

TINY = dict(z_dim=32, w_dim=32, channel_base=512, channel_max=16)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "user-cache"))


def _sg3(cfg: str, seed: int) -> s3.Generator:
    torch.manual_seed(seed)
    with fx.recording_init_kwargs(s3):
        G = s3.Generator(**s3.config_kwargs(cfg, 64, **TINY)).eval()
    fx.randomize_(G, seed)
    with torch.no_grad():  # trained networks have non-trivial magnitude EMAs and users rotate/translate
        for i, name in enumerate(G.synthesis.layer_names):
            getattr(G.synthesis, name).magnitude_ema.fill_(0.3 + 0.1 * i)
    s3.set_input_transform(G, 0.1, -0.05, 20.0)
    return G


def _sg2(seed: int) -> s2.Generator:
    torch.manual_seed(seed)
    with fx.recording_init_kwargs(s2):
        G = s2.Generator(**s2.config_f_kwargs(64, **TINY)).eval()
    return fx.randomize_(G, seed)


def _perturbed_copy(G):
    """The non-EMA 'G' of a snapshot: same architecture, different weights (the loader must take G_ema)."""
    import copy

    H = copy.deepcopy(G)
    with torch.no_grad():
        for p in H.parameters():
            p.add_(0.5)
    return H


def _out(G, z, **kw):
    with torch.no_grad():
        return G(z, None, **kw)


@pytest.mark.parametrize("cfg", ["t", "r"])
def test_official_stylegan3_pickle_loads_and_matches(tmp_path, cfg):
    G = _sg3(cfg, seed=1)
    marker = tmp_path / "module_src_was_executed"
    # If the loader exec()d module_src (as NVlabs' does), this file would appear.
    src = fx.SG3_SRC_HEAD + f"open({str(marker)!r}, 'w').close()\n"
    pkl = fx.official_pickle(tmp_path / "network-snapshot.pkl", G, G=_perturbed_copy(G), module_src=src)
    assert not any(m in sys.modules for m in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"))

    net = pl.load_network(pkl)

    assert not marker.exists()
    assert not any(m in sys.modules for m in ("torch_utils", "dnnlib"))  # nothing NVlabs got imported
    assert isinstance(net, s3.Generator) and net.engine_family == "stylegan3"
    assert net.synthesis.layer_names == G.synthesis.layer_names
    assert torch.equal(net.synthesis.input.transform, G.synthesis.input.transform)
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(7))
    ref = _out(G, z)
    diff = (_out(net, z) - ref).abs().max().item()
    assert diff < 1e-4, diff
    assert ref.abs().max() > 0.05  # a real image, not a degenerate zero output


def test_official_stylegan2_pickle_loads_and_matches(tmp_path):
    G = _sg2(seed=2)
    pkl = fx.official_pickle(tmp_path / "sg2.pkl", G, G=_perturbed_copy(G), module_src=fx.SG2_SRC_HEAD)
    net = pl.load_network(pkl)
    assert isinstance(net, s2.Generator) and net.engine_family == "stylegan2"
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(8))
    ref = _out(G, z, noise_mode="const")
    diff = (_out(net, z, noise_mode="const") - ref).abs().max().item()
    assert diff < 1e-4, diff
    assert net.init_kwargs["channel_base"] == 512 and net.init_kwargs["mapping_kwargs"]["num_layers"] == 8


def test_stylegan2_ada_style_init_kwargs_are_flattened(tmp_path):
    """StyleGAN2-ADA's Generator took synthesis_kwargs={...} explicitly; its pickles record it that way."""
    G = _sg2(seed=3)
    kw = dict(G._init_kwargs)
    synth = {k: kw.pop(k) for k in ("channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture")}
    G._init_kwargs = {**kw, "synthesis_kwargs": synth}
    net = pl.load_network(fx.official_pickle(tmp_path / "ada.pkl", G))
    z = torch.randn(1, 32)
    assert (_out(net, z, noise_mode="const") - _out(G, z, noise_mode="const")).abs().max() < 1e-4


def test_second_load_uses_the_sha_keyed_cache(tmp_path):
    G = _sg3("t", seed=4)
    pkl = fx.official_pickle(tmp_path / "net.pkl", G)
    first = pl.load_network(pkl)
    sha = pl.file_sha256(pkl)
    cache = tmp_path / f"net.{sha[:12]}.safetensors"
    assert first.engine_source.startswith("nvlabs-pkl:") and cache.is_file()
    with safe_open(str(cache), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "engine.stylegan3" and meta["source_sha256"] == sha

    # Prove the cache is what gets read: change a tensor in it and see the change in the next load.
    tensors = load_file(str(cache))
    tensors["mapping.w_avg"] = torch.full_like(tensors["mapping.w_avg"], 0.125)
    save_file(tensors, str(cache), metadata=meta)
    second = pl.load_network(pkl)
    assert second.engine_source == f"cache:{cache}"
    assert torch.all(second.mapping.w_avg == 0.125)
    z = torch.randn(1, 32)
    assert (_out(second, z) - _out(G, z)).abs().max() < 1e-4  # w_avg only matters under truncation


def test_cache_falls_back_to_user_cache_when_beside_is_unwritable(tmp_path):
    G = _sg3("t", seed=5)
    pkl = fx.official_pickle(tmp_path / "net.pkl", G)
    sha = pl.file_sha256(pkl)
    (tmp_path / f"net.{sha[:12]}.safetensors").mkdir()  # squat the name: writing there fails (root ignores chmod)
    pl.load_network(pkl)
    user_cache = tmp_path / "user-cache" / f"net.{sha[:12]}.safetensors"
    assert user_cache.is_file()
    assert pl.load_network(pkl).engine_source == f"cache:{user_cache}"


class _Reduce:
    """Pickles as a call of `fn(*args)`; used to write hostile pickles."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def test_pickle_calling_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"G_ema": _Reduce(os.system, f"touch {marker}")}))
    with pytest.raises(UsageError, match=r"`posix\.system`") as e:
        pl.load_network(bad)
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_hostile_global_inside_a_network_state_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    G = _sg3("t", seed=6)
    payload = _Reduce(eval, f"open({str(marker)!r}, 'w')")
    pkl = fx.official_pickle(tmp_path / "net.pkl", G, extra_state={"sneaky": payload})
    with pytest.raises(UsageError, match=r"`builtins\.eval`"):
        pl.load_network(pkl)
    assert not marker.exists()
    assert not list(tmp_path.glob("net.*.safetensors"))  # nothing cached from a refused file


def test_hostile_tensor_storage_blob_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Reduce(os.system, f"touch {marker}"))  # what torch.load would unpickle
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"G_ema": _Reduce(torch.storage._load_from_bytes, blob)}))
    with pytest.raises(UsageError, match="weights_only"):
        pl.load_network(bad)
    assert not marker.exists()


def test_tensorflow_pickle_gets_a_conversion_hint(tmp_path):
    bad = tmp_path / "tf.pkl"
    bad.write_bytes(b"cdnnlib.tflib.network\nNetwork\n.")  # GLOBAL opcode naming the TF network class
    with pytest.raises(UsageError, match="legacy.py"):
        pl.load_network(bad)


@pytest.mark.parametrize("change,message", [
    ({"channel_max": 8}, r"do not match .* missing synthesis\.L0_36_8\.weight"),  # names carry the widths
    ({"z_dim": 16}, r"mapping\.fc0\.weight has shape \(32, 32\), .* expects \(32, 16\)"),
    # checked before anything is allocated: this one would ask for terabytes
    ({"channel_max": 2**20}, r"asks for channel_max=1048576, beyond any StyleGAN network"),
])
def test_settings_that_do_not_fit_the_tensors_give_a_clear_error(tmp_path, change, message):
    G = _sg3("t", seed=7)
    G._init_kwargs = {**G._init_kwargs, **change}  # recorded settings disagree with the weights
    with pytest.raises(UsageError, match=message) as e:
        pl.load_network(fx.official_pickle(tmp_path / "net.pkl", G))
    assert "\n" not in str(e.value)


# -- issue 17: hostile files that hung, ate memory or built billions of parameters ------------------------------------


def test_shared_settings_are_walked_once_and_cycles_refused():
    import time

    dag: list = [0]
    for _ in range(14):  # 10^14 paths through 14 shared lists: each converted once
        dag = [dag] * 10
    t0 = time.perf_counter()
    out = pl.plain({"x": dag})
    assert time.perf_counter() - t0 < 1.0 and len(out["x"]) == 10
    looped: list = [1]
    looped.append(looped)
    with pytest.raises(UsageError, match="contain themselves"):
        pl.plain({"mapping_kwargs": looped})
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(UsageError, match="nest deeper"):
        pl.plain(deep)


def test_a_pickle_whose_settings_are_a_dag_or_a_cycle_is_one_error_fast(tmp_path):
    import time

    G = _sg3("t", seed=7)
    dag: list = [1]
    for _ in range(60):
        dag = [dag, dag]
    for bad, message in ((dag, "nest deeper"), ("self", "contain themselves")):
        kwargs = dict(G._init_kwargs)
        if bad == "self":
            loop: dict = {}
            loop["again"] = loop
            kwargs["mapping_kwargs"] = loop
        else:
            kwargs["mapping_kwargs"] = {"extra": bad}
        G._init_kwargs = kwargs
        t0 = time.perf_counter()
        with pytest.raises(UsageError, match=message) as e:
            pl.load_network(fx.official_pickle(tmp_path / "net.pkl", G))
        assert time.perf_counter() - t0 < 10 and "\n" not in str(e.value)


def test_shared_or_circular_modules_are_refused():
    rec = pl.Record()
    rec.__setstate__({"_parameters": {}, "_buffers": {}, "_modules": {}})
    child = pl.Record()
    child.__setstate__({"_parameters": {}, "_buffers": {}, "_modules": {}})
    rec.submodules["a"] = child
    rec.submodules["b"] = child  # the same module twice: a DAG of these is exponential
    with pytest.raises(UsageError, match="appears twice"):
        pl.record_tensors(rec)
    loop = pl.Record()
    loop.__setstate__({"_parameters": {}, "_buffers": {}, "_modules": {}})
    loop.submodules["me"] = loop
    with pytest.raises(UsageError, match="appears twice"):
        pl.record_tensors(loop)


@pytest.mark.parametrize("family,kwargs", [
    ("stylegan2", dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=64, img_channels=3, channel_base=1024, channel_max=32, mapping_kwargs={"num_layers": 2})),
    ("stylegan2", dict(z_dim=16, c_dim=4, w_dim=32, img_resolution=32, img_channels=3, channel_base=512, channel_max=64, mapping_kwargs={})),
    ("stylegan3", dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=64, img_channels=3, channel_base=2048, channel_max=64, mapping_kwargs={})),
    ("stylegan3", dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=64, img_channels=3, channel_base=2048, channel_max=64, conv_kernel=1, mapping_kwargs={})),
])
def test_the_parameter_estimate_matches_what_gets_built(family, kwargs):
    mod = s2 if family == "stylegan2" else s3
    actual = sum(p.numel() for p in mod.Generator(**kwargs).parameters())
    assert pl.estimate_parameters(family, kwargs) == pytest.approx(actual, rel=0.01)


def test_settings_inside_the_size_limits_that_ask_for_billions_are_refused_before_allocating(tmp_path):
    """A ~200-byte .safetensors of ours (no size limits before) and the same settings in any format: 4096 px,
    channel_max 4096, z/w 8192 is about 3.4 billion parameters."""
    import json
    import subprocess
    import time

    huge = dict(z_dim=8192, c_dim=0, w_dim=8192, img_resolution=4096, img_channels=3, channel_base=2**20,
                channel_max=4096, mapping_kwargs={})
    path = tmp_path / "huge.safetensors"
    save_file({"engine.x": torch.zeros(1)}, str(path), metadata={"format": pl.FORMAT_SG2, "config": json.dumps(huge)})
    assert path.stat().st_size < 1000
    t0 = time.perf_counter()
    with pytest.raises(UsageError, match=r"about 3,4\d\d million parameters, over the limit of 200 million"):
        pl.load_safetensors(path)
    assert time.perf_counter() - t0 < 1.0
    p = subprocess.run([sys.executable, "-m", "engine", "run", "--generator", str(path), "--frames", "1", "--sink", "null",
                        "--osc-port", "0", "--quiet", "--max-params", "1000"], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert p.returncode == 2 and "over the limit of 1,000 (" in p.stderr, p.stderr
    errors = [x for x in p.stderr.splitlines() if x.startswith("engine: error:")]
    assert len(errors) == 1 and "over the limit" in errors[0], p.stderr
    pl.set_max_params(None)


def test_max_params_lowered_refuses_an_ordinary_network(tmp_path):
    G = _sg3("t", seed=7)
    path = fx.official_pickle(tmp_path / "net.pkl", G)
    try:
        pl.set_max_params(1000)
        with pytest.raises(UsageError, match="over the limit"):
            pl.load_network(path, use_cache=False)
    finally:
        pl.set_max_params(None)
    assert pl.load_network(path, use_cache=False) is not None


def test_a_failed_build_names_the_reason_even_for_a_bare_assertion():
    from engine.generators import stylegan2 as s2

    kwargs = s2.config_f_kwargs(48, channel_base=256, channel_max=16)  # not a power of two: NVlabs asserts, no text
    with pytest.raises(UsageError, match=r"cannot build a stylegan2 Generator from the file's settings \(AssertionError\)"):
        pl.build_network("stylegan2", kwargs, {}, "net.pkl")


def test_unrelated_pickle_is_rejected(tmp_path):
    p = tmp_path / "other.pkl"
    p.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(UsageError, match="no generator"):
        pl.load_network(p)


# ---------------------------------------------------------------------------------------------------------------
# rosinality .pt
# ---------------------------------------------------------------------------------------------------------------

ROS_CHANNELS = {4: 16, 8: 16, 16: 16, 32: 16, 64: 8}


def _rosinality(seed: int) -> fx.RosinalityGenerator:
    torch.manual_seed(seed)
    return fx.randomize_(fx.RosinalityGenerator(64, 32, 2, ROS_CHANNELS), seed).eval()


def test_rosinality_checkpoint_converts_to_the_same_function(tmp_path):
    R = _rosinality(9)
    latent_avg = torch.randn(32)
    ckpt = tmp_path / "ros.pt"
    torch.save({"g_ema": R.state_dict(), "g": {}, "latent_avg": latent_avg, "args": argparse.Namespace(size=64)}, ckpt)
    net = pl.load_network(ckpt)
    assert isinstance(net, s2.Generator)
    assert net.init_kwargs["channel_base"] == 512 and net.init_kwargs["channel_max"] == 16
    assert torch.equal(net.mapping.w_avg, latent_avg)
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        ref = R(z)  # rosinality with randomize_noise=False == NVlabs noise_mode='const'
    diff = (_out(net, z, noise_mode="const") - ref).abs().max().item()
    assert diff < 1e-4 * max(1.0, ref.abs().max().item()), diff
    assert pl.load_network(ckpt).engine_source.startswith("cache:")


def test_rosinality_bare_state_dict_estimates_w_avg(tmp_path):
    R = _rosinality(11)
    ckpt = tmp_path / "bare.pt"
    torch.save(R.state_dict(), ckpt)
    net = pl.load_network(ckpt, use_cache=False)
    z = torch.from_numpy(__import__("numpy").random.RandomState(0).randn(4096, 32).astype("float32"))
    with torch.no_grad():
        expected = R.style(z).mean(0)
    assert torch.allclose(net.mapping.w_avg, expected, atol=1e-4)


def test_rosinality_nonstandard_blur_kernel_is_refused(tmp_path):
    sd = _rosinality(12).state_dict()
    sd["convs.0.conv.blur.kernel"] = torch.ones(4, 4)
    ckpt = tmp_path / "odd.pt"
    torch.save({"g_ema": sd}, ckpt)
    with pytest.raises(UsageError, match=r"\[1,3,3,1\]"):
        pl.load_network(ckpt)


def test_pt_with_code_is_refused_by_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"g_ema": _Reduce(os.system, f"touch {marker}")}, buf)
    bad.write_bytes(buf.getvalue())
    with pytest.raises(UsageError, match="weights_only"):
        pl.load_network(bad)
    assert not marker.exists()


def test_engine_safetensors_round_trip(tmp_path):
    G = _sg3("r", seed=13)
    path = pl.save_safetensors(G, tmp_path / "mine.safetensors", "stylegan3", G.init_kwargs)
    net = pl.load_network(path)
    z = torch.randn(1, 32)
    assert (_out(net, z) - _out(G, z)).abs().max() < 1e-6


@pytest.mark.parametrize("family", ["stylegan2", "stylegan3"])
def test_engine_run_streams_an_official_layout_pickle_to_video(tmp_path, family):
    """Issue acceptance: `engine run --generator tiny.pkl --frames 30 --sink file:out.mp4` works end to end."""
    import os
    import subprocess
    import sys

    av = pytest.importorskip("av")
    G = _sg2(seed=5) if family == "stylegan2" else _sg3("t", seed=5)
    pkl = fx.official_pickle(tmp_path / "tiny.pkl", G)
    out = tmp_path / "out.mp4"
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, ENGINE_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-m", "engine", "run", "--generator", str(pkl), "--frames", "30",
                        "--sink", f"file:{out}", "--osc-port", "0", "--quiet"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    res = G.img_resolution
    assert len(frames) == 30 and frames[0].shape == (res, res, 3)
    assert np.abs(frames[29].astype(int) - frames[0]).mean() > 0.5  # the latent walk moves the stream
