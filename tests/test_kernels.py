"""engine.kernels.layout: the torch reference (always), the fused Triton kernels through Triton's CPU interpreter
(TRITON_INTERPRET=1, in a subprocess so the setting cannot leak into other tests), and on a GPU the compiled
kernels against torch on CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine.kernels.layout import from_rgba, from_rgba_torch, to_rgba, to_rgba_torch

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ---------------------------------------------------------------------------------------------------------------
# Torch reference
# ---------------------------------------------------------------------------------------------------------------


def test_reference_uint8_known_values():
    # x -> trunc(clamp(x * 127.5 + 128, 0, 255)): -1 -> 0 (0.5 truncated), 0 -> 128, 1 -> 255 (clamped from 255.5).
    vals = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    image = vals.view(1, 1, 1, 7).expand(1, 3, 1, 7).contiguous()
    image[0, 1] *= -1  # green is the negation: channel order is visible
    out = torch.full((1, 7, 4), 7, dtype=torch.uint8)
    to_rgba_torch(image, out)
    assert out[0, :, 0].tolist() == [0, 0, 64, 128, 191, 255, 255]
    assert out[0, :, 1].tolist() == [255, 255, 191, 128, 64, 0, 0]
    assert out[0, :, 3].tolist() == [255] * 7


def test_reference_float16_known_values():
    image = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 6).repeat(1, 3, 1, 1)
    out = torch.zeros((1, 6, 4), dtype=torch.float16)
    to_rgba_torch(image, out)
    assert out[0, :, 2].tolist() == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]
    assert out[0, :, 3].tolist() == [1.0] * 6


def test_reference_round_trip_uint8_and_float16():
    g = torch.Generator().manual_seed(1)
    rgba = torch.randint(0, 256, (5, 9, 4), dtype=torch.uint8, generator=g)
    img = torch.empty(1, 3, 5, 9)
    from_rgba_torch(rgba, img)
    assert img.min() >= -1 and img.max() <= 1
    back = torch.empty_like(rgba)
    to_rgba_torch(img, back)
    # bytes survive the round trip: b/127.5 - 1 then *127.5 + 128 lands in [b + 0.5 +- eps): truncates to b
    assert torch.equal(back[..., :3], rgba[..., :3])
    h = torch.rand(5, 9, 4, generator=g).half()
    from_rgba_torch(h, img)
    back16 = torch.empty_like(h)
    to_rgba_torch(img, back16)
    assert torch.equal(back16[..., :3], h[..., :3])


def test_dispatcher_on_cpu_uses_the_reference():
    image = torch.randn(1, 3, 6, 10).to(memory_format=torch.channels_last)
    a, b = torch.empty(6, 10, 4, dtype=torch.uint8), torch.empty(6, 10, 4, dtype=torch.uint8)
    assert to_rgba(image, a) is a
    to_rgba_torch(image, b)
    assert torch.equal(a, b)
    o1, o2 = torch.empty(1, 3, 6, 10), torch.empty(1, 3, 6, 10)
    assert from_rgba(a, o1) is o1
    assert torch.equal(o1, from_rgba_torch(a, o2))


# ---------------------------------------------------------------------------------------------------------------
# Triton kernels through the interpreter
# ---------------------------------------------------------------------------------------------------------------

_INTERPRETER_SCRIPT = r"""
import json, os, torch
assert os.environ["TRITON_INTERPRET"] == "1"
from engine.kernels.layout import to_rgba_torch, from_rgba_torch
from engine.kernels.layout_triton import to_rgba_triton, from_rgba_triton

g = torch.Generator().manual_seed(0)
results = {}

def image(h, w, dtype, channels_last):
    x = torch.randn(1, 3, h, w, generator=g) * 0.9
    # every value whose x * 127.5 + 128 is an exact integer (the truncation boundaries), plus out-of-range ones
    edge = torch.cat([(torch.arange(256.0) - 128) / 127.5, torch.tensor([-5.0, 5.0, -1.0, 1.0])])
    x.view(-1)[: edge.numel()] = edge
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x

for h, w in [(7, 131), (3, 1030)]:  # odd sizes; 1030 > one 1024-pixel block per row
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        for cl in (False, True):
            img = image(h, w, dt, cl)
            for odt in (torch.uint8, torch.float16):
                a = torch.full((h, w, 4), 3, dtype=odt); b = torch.empty_like(a)
                to_rgba_triton(img, a); to_rgba_torch(img, b)
                key = f"to {h}x{w} {dt} cl={cl} -> {odt}"
                results[key] = {"equal": torch.equal(a, b), "maxdiff": (a.float() - b.float()).abs().max().item()}
    for idt in (torch.uint8, torch.float16):
        rgba = (torch.randint(0, 256, (h, w, 4), generator=g, dtype=torch.uint8) if idt == torch.uint8
                else torch.rand(h, w, 4, generator=g).half())
        for odt in (torch.float32, torch.float16):
            for cl in (False, True):
                o1 = torch.full((1, 3, h, w), 9.0, dtype=odt)
                if cl:
                    o1 = o1.contiguous(memory_format=torch.channels_last)
                o2 = torch.empty(1, 3, h, w, dtype=odt)
                from_rgba_triton(rgba, o1); from_rgba_torch(rgba, o2)
                key = f"from {h}x{w} {idt} -> {odt} cl={cl}"
                results[key] = {"equal": torch.equal(o1, o2), "maxdiff": (o1.float() - o2.float()).abs().max().item()}
print("RESULTS" + json.dumps(results))
"""


@pytest.fixture(scope="module")
def interpreter_results() -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _INTERPRETER_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS"))
    return json.loads(line[len("RESULTS"):])


def test_triton_interpreter_to_rgba_uint8_is_bit_exact(interpreter_results):
    cases = {k: v for k, v in interpreter_results.items() if k.startswith("to ") and k.endswith("uint8")}
    assert len(cases) == 12
    bad = {k: v for k, v in cases.items() if not v["equal"]}
    assert not bad


def test_triton_interpreter_to_rgba_float16_within_rounding(interpreter_results):
    cases = {k: v for k, v in interpreter_results.items() if k.startswith("to ") and k.endswith("float16")}
    assert len(cases) == 12
    # values in [0, 1]: half an fp16 ulp at 1.0 is 2**-11 (the kernels round identically, so 0 is expected)
    assert all(v["maxdiff"] <= 2 ** -11 for v in cases.values()), cases


def test_triton_interpreter_from_rgba(interpreter_results):
    cases = {k: v for k, v in interpreter_results.items() if k.startswith("from ")}
    assert len(cases) == 16
    assert all(v["equal"] for v in cases.values()), {k: v for k, v in cases.items() if not v["equal"]}


# ---------------------------------------------------------------------------------------------------------------
# On a GPU: the compiled kernels
# ---------------------------------------------------------------------------------------------------------------


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_on_cuda_matches_torch_on_cuda(dtype):
    from engine.kernels.layout import triton_unavailable_reason

    assert triton_unavailable_reason() is None
    g = torch.Generator(device="cuda").manual_seed(0)
    img = (torch.randn(1, 3, 512, 777, device="cuda", generator=g) * 0.9).to(dtype)
    img.view(-1)[:256] = ((torch.arange(256.0, device="cuda") - 128) / 127.5).to(dtype)
    for odt in (torch.uint8, torch.float16):
        a = torch.empty(512, 777, 4, dtype=odt, device="cuda")
        b = torch.empty_like(a)
        to_rgba(img, a)  # the dispatcher: Triton on CUDA
        to_rgba_torch(img, b)
        assert torch.equal(a, b), odt
    rgba = torch.randint(0, 256, (512, 777, 4), dtype=torch.uint8, device="cuda", generator=g)
    o1, o2 = torch.empty(1, 3, 512, 777, device="cuda"), torch.empty(1, 3, 512, 777, device="cuda")
    from_rgba(rgba, o1)
    from_rgba_torch(rgba, o2)
    # torch on CUDA divides by a scalar as a multiply by its reciprocal; Triton divides (IEEE): <= 1 ulp apart
    torch.testing.assert_close(o1, o2, rtol=0, atol=2.4e-7)


def test_triton_is_refused_after_mesa_llvm_instead_of_crashing():
    """In a fresh process: a Mesa GL context first, then the dispatcher's triton import must be refused with a
    reason (importing triton there segfaults), and the torch path still works."""
    script = r"""
import moderngl, torch
ctx = moderngl.create_context(standalone=True, backend="egl")
from engine.kernels import layout
if layout.foreign_llvm_loaded() is None:
    print("NO-SYSTEM-LLVM")  # e.g. NVIDIA GL: nothing to guard against
else:
    reason = layout.preload_triton()
    assert reason and "would crash" in reason, reason
    out = torch.empty(2, 3, 4, dtype=torch.uint8)
    layout.to_rgba(torch.zeros(1, 3, 2, 3), out)
    assert out[..., 0].eq(128).all()
    print("REFUSED")
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] in ("REFUSED", "NO-SYSTEM-LLVM")
