"""CUDA-GL interop on a real NVIDIA GPU (skipped without CUDA): bytes written through CUDA into a GL texture are
what GL reads back, the reverse likewise, no memory growth and no torch-level host sync over 1000 frames.

Needs: a CUDA torch, cuda-bindings (not 12.9.3 / 13.0.2), NVIDIA's EGL (headless) on the same GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

H, W = 333, 517  # odd sizes: rows are not a multiple of any alignment, the pitch must be exact


@pytest.fixture(scope="module")
def nv_ctx(gl):
    """A GL context on the EGL device that is CUDA device 0: conftest's session context when that is the one
    (EGL device 0), else a second context, after which the session context is made current again."""
    import moderngl

    from engine.egl_device import egl_device_for_cuda

    torch.cuda.set_device(0)
    index, reason = egl_device_for_cuda(0)
    assert index is not None, f"no NVIDIA EGL device for CUDA 0: {reason}"
    if index == 0:  # GL.headless() without device_index is glcontext's EGL device 0
        yield gl.ctx
        return
    ctx = moderngl.create_context(standalone=True, backend="egl", device_index=index, require=330)
    yield ctx
    ctx.release()
    gl.ctx.__enter__()


@pytest.fixture()
def interop(nv_ctx):
    from engine.interop import select_uploader

    up, reason = select_uploader(torch.device("cuda", 0), nv_ctx)
    assert reason is None and up.name == "interop", reason
    assert up.host_copies_per_frame == 0
    yield up
    up.close()


def read_texture(tex) -> torch.Tensor:
    """GL's view of the texture, (H, W, 4), through glGetTexImage (independent of CUDA)."""
    np_dtype = {"f1": np.uint8, "f2": np.float16}[tex.dtype]
    w, h = tex.size
    return torch.from_numpy(np.frombuffer(tex.read(), dtype=np_dtype).reshape(h, w, 4).copy())


def test_upload_rgba8_is_bit_exact(nv_ctx, interop):
    from kernels.layout import to_rgba_torch

    tex = nv_ctx.texture((W, H), 4, dtype="f1")
    try:
        image = torch.rand(1, 3, H, W, device="cuda") * 2.2 - 1.1  # includes out-of-range values (clamped)
        interop.prepare(tex, "write")
        interop.upload(image, tex)
        torch.cuda.synchronize()
        want = to_rgba_torch(image.cpu(), torch.empty(H, W, 4, dtype=torch.uint8))
        assert torch.equal(read_texture(tex), want)
        interop.release(tex)
    finally:
        tex.release()


def test_upload_rgba16f_within_fp16_rounding(nv_ctx, interop):
    tex = nv_ctx.texture((W, H), 4, dtype="f2")
    try:
        image = torch.rand(1, 3, H, W, device="cuda") * 2 - 1
        interop.upload(image, tex)
        torch.cuda.synchronize()
        got = read_texture(tex).float()
        want = torch.cat([(image[0].permute(1, 2, 0).cpu() * 0.5 + 0.5), torch.ones(H, W, 1)], dim=-1)
        assert (got - want).abs().max() <= 2 ** -11  # half an fp16 ulp at 1.0
        interop.release(tex)
    finally:
        tex.release()


@pytest.mark.parametrize("dtype", ["f1", "f2"])
def test_download_matches_the_texture(nv_ctx, interop, dtype):
    from kernels.layout import from_rgba_torch

    tex = nv_ctx.texture((W, H), 4, dtype=dtype)
    try:
        g = torch.Generator().manual_seed(3)
        if dtype == "f1":
            rgba = torch.randint(0, 256, (H, W, 4), dtype=torch.uint8, generator=g)
        else:
            rgba = torch.rand(H, W, 4, generator=g).half()
        tex.write(rgba.numpy().tobytes())  # through GL, not CUDA
        out = torch.empty(1, 3, H, W, device="cuda")
        assert interop.download(tex, out) is out
        want = from_rgba_torch(rgba, torch.empty(1, 3, H, W))
        assert torch.equal(out.cpu(), want)  # Triton's IEEE division matches torch on CPU exactly
        interop.release(tex)
    finally:
        tex.release()


def test_interop_and_staged_write_identical_textures(nv_ctx, interop):
    from engine.upload import StagedUpload

    a, b = nv_ctx.texture((W, H), 4, dtype="f1"), nv_ctx.texture((W, H), 4, dtype="f1")
    staged = StagedUpload(torch.device("cuda"))
    try:
        image = torch.randn(1, 3, H, W, device="cuda").half()
        interop.upload(image, a)
        staged.upload(image, b)
        torch.cuda.synchronize()
        assert torch.equal(read_texture(a), read_texture(b))
        interop.release(a)
    finally:
        staged.close()
        a.release()
        b.release()


def test_thousand_frames_no_growth_no_sync(nv_ctx, interop):
    frame, feedback = nv_ctx.texture((W, H), 4, dtype="f1"), nv_ctx.texture((W, H), 4, dtype="f1")
    try:
        image = torch.rand(1, 3, H, W, device="cuda") * 2 - 1
        source = torch.empty(1, 3, H, W, device="cuda")
        interop.prepare(frame, "write")
        interop.prepare(feedback, "read")
        for _ in range(3):  # warm: Triton compile, first maps
            interop.upload(image, frame)
            interop.download(feedback, source)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.set_sync_debug_mode("error")  # any torch op that syncs the host raises
        try:
            for i in range(1000):
                interop.upload(image, frame)
                interop.download(feedback, source)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() == before
        assert len(interop._regs) == 2  # registered once each, never again
        interop.release(frame)
        interop.release(feedback)
        assert not interop._regs
    finally:
        frame.release()
        feedback.release()


def test_resize_reregisters(nv_ctx, interop):
    t1 = nv_ctx.texture((64, 32), 4, dtype="f1")
    interop.upload(torch.zeros(1, 3, 32, 64, device="cuda"), t1)
    interop.release(t1)  # unregister before the texture goes
    t1.release()
    t2 = nv_ctx.texture((128, 48), 4, dtype="f1")  # may recycle t1's GL name
    try:
        interop.upload(torch.ones(1, 3, 48, 128, device="cuda"), t2)
        torch.cuda.synchronize()
        assert read_texture(t2)[..., :3].eq(255).all()
    finally:
        interop.release(t2)
        t2.release()
