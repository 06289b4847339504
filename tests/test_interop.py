"""engine.interop parts that run without a GPU: the fallback decision and its reasons (with a real Mesa EGL
context), and the staged path it falls back to writing the same texture bytes the interop path must produce.
The interop copies themselves are tested in test_interop_gpu.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine.kernels.layout import from_rgba_torch, to_rgba_torch

from engine.errors import SetupError
from engine.interop import (
    CudaGLInterop,
    environment_reason,
    select_uploader,
    virtualgl_detected,
)
from engine.upload import StagedUpload


@pytest.fixture()
def ctx(gl):
    """The moderngl context of conftest's headless GL (Mesa's llvmpipe on CI)."""
    return gl.ctx


def test_cpu_device_falls_back_with_reason(ctx):
    up, reason = select_uploader(torch.device("cpu"), ctx)
    assert isinstance(up, StagedUpload) and up.name == "staged"
    assert reason.startswith("no CUDA device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without CUDA")
def test_cuda_requested_without_cuda_falls_back(ctx):
    up, reason = select_uploader("cuda", ctx)
    assert up.name == "staged" and "CUDA available: False" in reason


def test_non_nvidia_renderer_is_named(ctx):
    info = dict(ctx.info)
    if "nvidia" in (info["GL_RENDERER"] + info["GL_VENDOR"]).lower():
        pytest.skip("this GL is NVIDIA's")
    reason = environment_reason(info)
    assert reason.startswith(f"GL renderer is {info['GL_RENDERER']!r}") and "not NVIDIA" in reason


def test_virtualgl_detected_from_env_and_renderer(monkeypatch):
    for k in [k for k in __import__("os").environ if k.startswith("VGL_")]:
        monkeypatch.delenv(k)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert virtualgl_detected({"GL_RENDERER": "NVIDIA H100/PCIe/SSE2", "GL_VENDOR": "NVIDIA Corporation"}) is None
    assert virtualgl_detected({"GL_RENDERER": "VirtualGL", "GL_VENDOR": "x"}) == "GL renderer is 'VirtualGL'"
    monkeypatch.setenv("VGL_DISPLAY", ":0")
    assert virtualgl_detected({}) == "environment has VGL_DISPLAY"
    reason = environment_reason({"GL_RENDERER": "NVIDIA H100", "GL_VENDOR": "NVIDIA Corporation"})
    assert reason.startswith("VirtualGL detected (environment has VGL_DISPLAY)")


def test_interop_refuses_a_cpu_device():
    with pytest.raises(SetupError, match="needs a CUDA device"):
        CudaGLInterop(torch.device("cpu"))


@pytest.mark.parametrize("dtype", ["f1", "f2"])
def test_staged_round_trip_through_a_real_texture(ctx, dtype):
    """The texture bytes the staged path writes (row 0 = image top, RGBA) are the contract interop must match."""
    h, w = 5, 7
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, h, w, generator=g) * 2 - 1
    tex = ctx.texture((w, h), 4, dtype=dtype)
    up = StagedUpload(torch.device("cpu"))
    try:
        up.prepare(tex, "write")
        up.upload(image, tex)
        np_dtype = np.uint8 if dtype == "f1" else np.float16
        got = torch.from_numpy(np.frombuffer(tex.read(), dtype=np_dtype).reshape(h, w, 4).copy())
        want = to_rgba_torch(image, torch.empty(h, w, 4, dtype=torch.uint8 if dtype == "f1" else torch.float16))
        assert torch.equal(got, want)
        out = torch.empty(1, 3, h, w)
        assert up.download(tex, out) is out
        assert torch.equal(out, from_rgba_torch(want, torch.empty(1, 3, h, w)))
    finally:
        up.close()
        tex.release()
