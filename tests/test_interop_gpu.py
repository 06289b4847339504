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

    nv_ctx.__enter__()  # current on this thread (an Engine test may have made its own context current)
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
    from engine.kernels.layout import to_rgba_torch

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
    from engine.kernels.layout import from_rgba_torch

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


# ---- the whole render loop on the GPU ------------------------------------------------------------------------------
# The tests above check the uploader alone; these run the real Engine (generator -> interop -> shaders -> sink) and
# measure what the issue promises: CUPTI's record of every memcpy in a window of frames (torch.profiler with CUDA
# activity) holds no host <-> device copy on the interop path, and torch's sync debug mode finds no host sync in it.

from engine.control import Controller  # noqa: E402

SMALL_SG2 = {"channel_base": 4096, "channel_max": 128}
HOST_COPY = ("HtoD", "DtoH", "HtoA", "AtoH", "HtoH")


class ProfileFrames(Controller):
    """Profiles frames [first, last) of a real run: torch.profiler (CUPTI) records every memcpy and kernel; with
    sync_errors, torch.cuda.set_sync_debug_mode("error") makes any torch-level host sync in those frames raise."""

    def __init__(self, first: int, last: int, trace_path, *, sync_errors: bool = True):
        self.first, self.last, self.trace_path, self.sync_errors = first, last, trace_path, sync_errors
        self.prof = None

    def before_frame(self, store, when):
        if when.index == self.first:
            torch.cuda.synchronize()  # earlier frames' work stays out of the window
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
            self.prof.start()
            if self.sync_errors:
                torch.cuda.set_sync_debug_mode("error")

    def after_frame(self, when, frame_stats):
        if when.index == self.last - 1:
            torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
            self.prof.stop()
            self.prof.export_chrome_trace(str(self.trace_path))

    def stop(self):
        torch.cuda.set_sync_debug_mode("default")

    def memcpys(self) -> list[tuple[str, int | None]]:
        """(name, bytes) of every memcpy CUPTI saw in the window, e.g. ('Memcpy DtoA (Device -> Array)', 1048576)."""
        import json

        events = json.loads(self.trace_path.read_text())["traceEvents"]
        return [(e["name"], e.get("args", {}).get("bytes")) for e in events if e.get("cat") == "gpu_memcpy"]

    def host_copies(self) -> list[tuple[str, int | None]]:
        return [(n, b) for n, b in self.memcpys() if any(k in n for k in HOST_COPY)]


class GrabFrames(Controller):
    """The generator's texture after every frame (what the shaders were given), read through GL."""

    def __init__(self):
        self.engine, self.frames = None, []

    def after_frame(self, when, frame_stats):
        self.frames.append(np.frombuffer(self.engine.pipeline.frame.texture.read(), np.uint8).astype(np.int16))


def _run_engine(*, upload: str, frames: int, controllers=(), generator="stylegan2", size=256, backend="eager",
                options=None, sets=(), prebuilt=None):
    from engine.loop import Engine, RunOptions
    from engine.params import ParamStore

    opts = RunOptions(generator=generator, size=size, device="cuda", backend=backend, sinks=["null"], frames=frames,
                      fps=30.0, clock="frame", quiet=True, upload=upload,
                      generator_options=dict(SMALL_SG2 if options is None else options))
    store = ParamStore()
    for name, value in sets:
        store.set(name, value)
    eng = Engine(opts, store, list(controllers), generator=prebuilt)
    for c in controllers:
        if isinstance(c, GrabFrames):
            c.engine = eng
    try:
        eng.setup()
        summary = eng.run()
    finally:
        eng.close()
    return summary


@pytest.mark.parametrize("backend", ["eager", "compile"])
def test_engine_loop_on_interop_makes_no_host_copy_and_no_sync(tmp_path, backend):
    prof = ProfileFrames(5, 25, tmp_path / "trace.json")
    summary = _run_engine(upload="interop", frames=25, controllers=[prof], backend=backend)
    assert summary["upload"]["path"] == "interop" and summary["upload"]["host_copies_per_frame"] == 0
    assert summary["counters"].get("generator_errors", 0) == 0  # a sync raised inside the generator is counted here
    copies = prof.memcpys()
    assert any("DtoA" in n for n, _ in copies), f"the interop copy into the texture's array is missing: {copies[:10]}"
    assert prof.host_copies() == [], prof.host_copies()[:10]


def test_staged_loop_is_seen_copying_through_the_host(tmp_path):
    """The measurement above can fail: on the staged path CUPTI sees one frame-sized DtoH per frame. (The staged
    path waits for its DtoH before glTexSubImage by design, so sync errors stay off here.)"""
    frames = 12
    prof = ProfileFrames(2, 2 + frames, tmp_path / "trace.json", sync_errors=False)
    summary = _run_engine(upload="staged", frames=2 + frames, controllers=[prof])
    assert summary["upload"]["path"] == "staged"
    big = [(n, b) for n, b in prof.host_copies() if "DtoH" in n and (b or 0) >= 256 * 256 * 3]
    assert len(big) == frames, prof.host_copies()


def test_interop_and_staged_loops_put_the_same_frames_in_the_texture():
    """One generator (built and given its backend once, so both runs use the same kernels and memory formats)
    rendered through both upload paths: both run the same layout kernel on the same tensors, so the textures are
    identical, bit for bit. The walk restarts with show time, so both runs see the same frames."""
    from engine.backends import apply_backend
    from engine.generators import create_generator

    gen, _ = apply_backend(create_generator("stylegan2", size=256, device=torch.device("cuda", 0), options=SMALL_SG2), "eager")
    a, b = GrabFrames(), GrabFrames()
    sets = [("latent.speed", 3.0)]
    _run_engine(upload="interop", frames=6, controllers=[a], sets=sets, prebuilt=gen)
    _run_engine(upload="staged", frames=6, controllers=[b], sets=sets, prebuilt=gen)
    assert len(a.frames) == len(b.frames) == 6
    for i, (x, y) in enumerate(zip(a.frames, b.frames)):
        assert np.array_equal(x, y), f"frame {i}: max diff {np.abs(x - y).max()}"
    assert np.abs(a.frames[5] - a.frames[0]).mean() > 1  # and they move


def test_diffusion_feedback_loop_reads_back_through_interop(tmp_path):
    """img2img feedback: the previous output goes from the GL texture back into the generator's CUDA tensor through
    interop (AtoD), with no host copy, through the real render loop and a tiny random sd-turbo-shaped model."""
    pytest.importorskip("diffusers")
    from tiny_diffusion import SIZE, save_tiny_model

    model = save_tiny_model(tmp_path / "tiny-sd-turbo")
    prof = ProfileFrames(5, 20, tmp_path / "trace.json")
    summary = _run_engine(upload="interop", frames=20, controllers=[prof], generator=f"diffusion:{model}",
                          size=SIZE, options={}, sets=[("source.mode", "feedback"), ("fx.perturb", 0.3)])
    assert summary["upload"]["path"] == "interop" and summary["counters"].get("generator_errors", 0) == 0
    names = [n for n, _ in prof.memcpys()]
    assert any("AtoD" in n for n in names) and any("DtoA" in n for n in names), names[:10]
    assert prof.host_copies() == [], prof.host_copies()[:10]
