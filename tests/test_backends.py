"""engine.backends: eager / compile / auto on a tiny conv generator (CPU here; the CUDA-graph tests need a GPU).

Compile tests run inductor's C++ backend on CPU: marked slow, kept to one tiny module and a few frames."""

from __future__ import annotations

import os

import pytest
import torch
import torch._dynamo  # noqa: F401  imports triton now, at collection: triton after Mesa's LLVM (GL tests) segfaults
import torch.nn.functional as F

from engine.backends import apply_backend, resolve_backend
from engine.backends.common import (
    MAX_GRAPHS,
    BackendRunner,
    call_key,
    install,
    render_frame,
    runner_of,
)
from engine.clock import FrameTime
from engine.errors import SetupError, UsageError
from engine.generators.base import Generator
from engine.params import Params

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class TinyNet(torch.nn.Module):
    """z (1, 8) -> image (1, 3, 16, 16) in [-1, 1]: a modulated const, two convs. `gain` scales an internal
    activation and undoes it, so the output is unchanged in fp32 but overflows float16 when gain is huge."""

    def __init__(self, gain: float = 1.0):
        super().__init__()
        self.const = torch.nn.Parameter(torch.randn(1, 4, 16, 16))
        self.affine = torch.nn.Linear(8, 4)
        self.conv1 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 3, 3, padding=1)
        self.gain = gain

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.const * self.affine(z)[:, :, None, None]  # (1, 4, 16, 16)
        x = F.leaky_relu(self.conv1(x), 0.2) * self.gain  # (1, 8, 16, 16)
        return torch.tanh(self.conv2(x / self.gain))  # (1, 3, 16, 16)


class Holder(torch.nn.Module):
    """Like NVlabs' Generator: the module a backend replaces is a child of a module the generator holds."""

    def __init__(self, gain: float):
        super().__init__()
        self.synthesis = TinyNet(gain)


class TinyGenerator(Generator):
    name = "tiny"

    def __init__(self, device="cpu", gain: float = 1.0, nested: bool = False):
        super().__init__(16, 16, device)
        torch.manual_seed(0)
        if nested:
            self.G = Holder(gain).to(device)
        else:
            self.net = TinyNet(gain).to(device)
        self.nested = nested

    def _module(self) -> torch.nn.Module:
        return self.G.synthesis if self.nested else self.net

    def __call__(self, snap: Params, when: FrameTime, source=None) -> torch.Tensor:
        z = torch.randn(1, 8, generator=torch.Generator().manual_seed(snap.latent.seed)).to(self.device)
        return self._module()(z)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"synthesis": self._module()}


def frame(gen, seed: int = 0) -> torch.Tensor:
    snap = Params()
    snap = type(snap)(latent=type(snap.latent)(seed=seed), fx=snap.fx)
    with torch.inference_mode():
        return gen(snap, FrameTime(0.0, 0), None).float().clone()


def test_resolve_backend_names():
    assert resolve_backend("auto", torch.device("cpu")) == "eager"
    assert resolve_backend("auto", torch.device("cuda")) == "compile"
    assert resolve_backend("compile", torch.device("cpu")) == "compile"
    assert resolve_backend("tensorrt", torch.device("cpu")) == "tensorrt"  # refused when applied, with the reason
    with pytest.raises(UsageError, match="spelled tensorrt"):
        resolve_backend("trt", torch.device("cpu"))
    with pytest.raises(UsageError, match="unknown backend 'fast'"):
        apply_backend(TinyGenerator(), "fast")


def test_eager_on_cpu_is_a_noop():
    gen = TinyGenerator()
    net = gen.net
    before = frame(gen, 3)
    out, desc = apply_backend(gen, "eager")
    assert out is gen and gen.net is net  # nothing installed
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert torch.equal(frame(gen, 3), before)
    assert "eager" in desc and "float32" in desc


def test_auto_on_cpu_is_eager():
    gen = TinyGenerator()
    _, desc = apply_backend(gen, "auto")
    assert desc.startswith("eager") and desc.endswith("(auto)")


def test_forced_bf16_is_checked_and_installed_in_place():
    gen = TinyGenerator(nested=True)
    ref = frame(gen, 5)
    module = gen.G.synthesis
    names = [n for n, _ in gen.G.named_parameters()]
    _, desc = apply_backend(gen, "eager", dtype="bf16")
    # The module object, its class and its parameter names are untouched: only its forward is taken over.
    assert gen.G.synthesis is module and type(module) is TinyNet
    assert [n for n, _ in gen.G.named_parameters()] == names
    assert runner_of(module) is not None and runner_of(module).dtype == torch.bfloat16
    assert module.conv1.weight.dtype == torch.bfloat16
    out = frame(gen, 5)
    assert out.dtype == torch.float32  # cast back at the module boundary
    assert 0 < (out - ref).abs().max() < 0.05  # bf16 really ran, and stayed close
    assert "bfloat16" in desc and "mean |diff|" in desc


def test_precision_that_overflows_is_rejected_and_params_restored_exactly():
    gen = TinyGenerator(gain=1e6)  # fp16 max is 65504: the scaled activation becomes inf
    params_before = {k: v.clone() for k, v in gen.net.state_dict().items()}
    ref = frame(gen, 1)
    _, desc = apply_backend(gen, "eager", dtype=["fp16", "fp32"])
    assert "float16 rejected (non-finite values)" in desc
    assert runner_of(gen.net) is None  # nothing left installed
    for k, v in gen.net.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, params_before[k]), k
    assert torch.equal(frame(gen, 1), ref)


def test_forced_precision_that_fails_raises_setup_error():
    gen = TinyGenerator(gain=1e6)
    with pytest.raises(SetupError, match="precision fp16 does not work"):
        apply_backend(gen, "eager", dtype="fp16")
    assert all(p.dtype == torch.float32 for p in gen.net.parameters())


def test_hooks_inside_the_module_run_eagerly():
    """A forward hook (layer view, bending) is honoured: the runner calls the original forward while one exists."""
    gen = TinyGenerator()
    ref = frame(gen, 2)
    runner = install({"synthesis": gen.net}, lambda role, m: BackendRunner(m, role))["synthesis"]
    assert torch.equal(frame(gen, 2), ref) and runner.eager_calls == 0
    seen = []
    handle = gen.net.conv1.register_forward_hook(lambda mod, inp, out: seen.append(tuple(out.shape)))
    try:
        assert torch.equal(frame(gen, 2), ref)
    finally:
        handle.remove()
    assert seen == [(1, 8, 16, 16)] and runner.eager_calls == 1
    frame(gen, 2)
    assert runner.eager_calls == 1  # hook gone: back to the backend's path


class ScaledNet(TinyNet):
    def forward(self, z: torch.Tensor, scale=1.0) -> torch.Tensor:
        return super().forward(z) * scale


@pytest.mark.slow
def test_a_changing_float_knob_never_recompiles_in_the_loop():
    """torch.compile(dynamic=False) specialises on Python floats: a psi fader would recompile per value (seconds
    each). Volatile calls run eager instead; a knob passed as a 0-d tensor stays compiled with one graph."""
    from torch._dynamo.utils import counters

    net = ScaledNet()
    z = torch.randn(1, 8)
    r = BackendRunner(net, "synthesis", compile_mode="default")
    counters.clear()
    with torch.no_grad():
        ref = net.__class__.forward(net, z, 0.5)
        r(z, scale=1.0)  # setup
        r.sealed = True
        compiled_frames = counters["stats"]["unique_graphs"]
        for v in (0.5, 0.51, 0.52, 0.53):
            out = r(z, scale=v)
        assert r.eager_calls == 4 and counters["stats"]["unique_graphs"] == compiled_frames
        assert len(r.notes) == 4  # each new value noted once
        torch.testing.assert_close(r(z, scale=0.5), ref)

        t = BackendRunner(ScaledNet(), "synthesis", compile_mode="default")
        scale = torch.ones(())
        t(z, scale=scale)  # setup
        t.sealed = True
        for v in (1.0, 0.5, 0.25):
            scale.fill_(v)
            out = t(z, scale=scale)
        assert t.eager_calls == 0 and not t.notes
        torch.testing.assert_close(out, t._eager(z, scale))


def test_call_key_separates_shapes_dtypes_and_values():
    a = torch.zeros(1, 8)
    k = call_key((a,), {"noise_mode": "const"})
    assert k == call_key((torch.ones(1, 8),), {"noise_mode": "const"})  # values of tensors do not matter
    assert k != call_key((torch.zeros(1, 9),), {"noise_mode": "const"})
    assert k != call_key((a.half(),), {"noise_mode": "const"})
    assert k != call_key((a,), {"noise_mode": "random"})
    assert call_key(([a, a],), {}) is not None  # nested: slow path, still a key
    assert call_key((object(),), {}) is None  # unhashable/unknown: never graphed
    assert MAX_GRAPHS >= 2


@pytest.mark.slow
def test_compile_on_cpu_matches_eager():
    gen = TinyGenerator()
    refs = {seed: frame(gen, seed) for seed in (0, 7)}
    _, desc = apply_backend(gen, "compile")
    r = runner_of(gen.net)
    assert r is not None and r.compile_mode == "default" and not r.cuda_graphs
    assert desc.startswith("compile on cpu") and "float32" in desc
    for seed, ref in refs.items():  # a new input is really computed, not a stale output
        torch.testing.assert_close(frame(gen, seed), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compile_tiny_stylegan_matches_eager_on_cpu():
    from engine.generators.stylegan2 import Generator as G2
    from engine.generators.stylegan2 import config_f_kwargs

    class TinyStyleGAN(Generator):
        name = "tiny-stylegan2"

        def __init__(self):
            super().__init__(16, 16, "cpu")
            torch.manual_seed(0)
            kw = config_f_kwargs(16, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2)
            self.G = G2(**kw).eval()
            self.z = torch.randn(1, 32)

        def __call__(self, snap, when, source=None):
            ws = self.G.mapping(self.z, None)
            return self.G.synthesis(ws, noise_mode="const")

        def modules(self):
            return {"mapping": self.G.mapping, "synthesis": self.G.synthesis}

    gen = TinyStyleGAN()
    ref = render_frame(gen)
    _, desc = apply_backend(gen, "compile")
    assert runner_of(gen.G.synthesis) is not None and runner_of(gen.G.mapping) is not None, desc
    torch.testing.assert_close(render_frame(gen), ref, rtol=1e-3, atol=1e-4)


@cuda
@pytest.mark.gpu
def test_compile_with_cuda_graphs_replays_and_tracks_inputs():
    gen = TinyGenerator(device="cuda")
    refs = {seed: frame(gen, seed) for seed in (0, 1, 2)}
    _, desc = apply_backend(gen, "compile", compile_mode=os.environ.get("ENGINE_TEST_COMPILE_MODE", "default"))
    w = runner_of(gen.net)
    assert w is not None and w.graph_count == 1, desc
    replays = w.replays
    for seed, ref in refs.items():
        torch.testing.assert_close(frame(gen, seed), ref, rtol=2e-2, atol=2e-2)  # fp16 chosen on CUDA
    assert w.replays == replays + 3 and w.ungraphed_calls == 0
    torch.cuda.synchronize()
    mem = torch.cuda.memory_allocated()
    for i in range(200):
        frame(gen, i)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == mem


@cuda
@pytest.mark.gpu
def test_capture_failure_falls_back_to_ungraphed():
    class Syncs(torch.nn.Module):
        def forward(self, x):
            return x * float(x.sum())  # .item()-style host sync: illegal during capture

    w = BackendRunner(Syncs().cuda(), "syncs", cuda_graphs=True)
    x = torch.ones(4, device="cuda")
    before = torch.cuda.current_stream()
    torch.testing.assert_close(w(x), x * 4)
    assert w.graph_count == 0 and "capture failed" in w.notes[0] and w.ungraphed_calls == 1
    assert torch.cuda.current_stream() == before  # the failed capture's stream does not stay current


@pytest.mark.slow
def test_a_sealed_runner_runs_new_shapes_eager_instead_of_compiling_in_the_loop():
    """After setup, a batch size never seen (diffusion steps moved live) must not compile or capture in the loop."""
    from torch._dynamo.utils import counters

    net = ScaledNet()
    r = BackendRunner(net, "unet", compile_mode="default")
    one, two = torch.randn(1, 8), torch.randn(2, 8)
    with torch.no_grad():
        r(one)  # setup: compiled for batch 1
        r.sealed = True
        counters.clear()
        out = r(two)
        r(two)
        assert counters["stats"]["unique_graphs"] == 0, "nothing may compile after setup"
        assert r.eager_calls == 2 and sum("not prepared at setup" in n for n in r.notes) == 1
        torch.testing.assert_close(out, net.__class__.forward(net, two))
        r(one)
        assert r.eager_calls == 2  # the prepared shape still runs compiled
