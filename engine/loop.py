"""The render loop: setup once, then per frame

    controllers.before_frame -> snapshot = store.snapshot()
    -> [source: feedback via GL, or engine.sources] -> generator(snapshot) (or the network swap's crossfade)
    -> uploader (interop or staged) -> GL pipeline (fit to the output size, perturb, feedback blend, present with
    the master fader) -> sinks (texture sinks direct; host sinks via async PBO readback, one frame late)
    -> controllers.after_frame -> stats

output.freeze skips the generator, the uploader and the effects: the held frame is presented again (with the master
fader) and published at the show rate. The generator's time pauses with it, so it resumes where it stopped.

Everything is allocated in `setup()`. A frame binds and launches; on CUDA it does not synchronise the device
(the staged fallback's device->host copy is the one exception, and it is counted as host copies in the stats).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine import threads as cpu_threads
from engine.clock import FrameTime
from engine.control import Controller
from engine.control.ratelimit import LogLimiter
from engine.devices import resolve_device
from engine.errors import SetupError, UsageError
from engine.generators import Generator, create_generator
from engine.gl import GL, Pipeline, Readback
from engine.output import MasterFader
from engine.params import Output, ParamError, ParamStore
from engine.sinks import parse_sink
from engine.sinks.base import Sink
from engine.stats import Stats

log = logging.getLogger("engine.loop")

# Sinks that only record: with nothing but these, the loop renders offline (frame clock, no pacing).
OFFLINE_SINKS = {"null", "file"}


@dataclass
class RunOptions:
    generator: str = "stylegan2"
    size: tuple[int, int] | None = None  # the output (width, height); None = the generator's own size
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    backend: str = "auto"
    sinks: list[str] = field(default_factory=list)
    frames: int | None = None
    seconds: float | None = None
    fps: float = 30.0
    clock: str = "auto"  # auto | wall | frame
    stats_json: Path | None = None
    quiet: bool = False
    upload: str = "auto"  # auto | staged | interop
    engines: Path | None = None  # a folder from `engine trt --out DIR` (the tensorrt backend)
    flavor: str = "auto"  # which TensorRT: auto | trt | rtx
    generator_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.size, int):  # N: the square N x N
            self.size = (self.size, self.size)


class Engine:
    def __init__(self, opts: RunOptions, store: ParamStore | None = None, controllers: list[Controller] | None = None,
                 generator: Generator | None = None):
        """generator: a generator built (and given its backend) by the caller, e.g. a benchmark's model with a
        real architecture and random weights; opts.generator and opts.backend are then not used."""
        self.opts = opts
        self._prebuilt = generator
        self.store = store or ParamStore()
        self.controllers = list(controllers or [])
        self.sinks: list[Sink] = [parse_sink(s) for s in (opts.sinks or ["null"])]
        self.stop_event = threading.Event()
        self.in_show = False  # set by run(): signals before it abort setup, after it end the show cleanly
        self.generator: Generator | None = None
        self.gl: GL | None = None
        self.pipeline: Pipeline | None = None
        self.readback: Readback | None = None
        self.uploader = None
        self.stats: Stats | None = None
        self.sources = None
        self.info: dict[str, Any] = {}
        self._closed = False
        self._started_controllers: list[Controller] = []
        self._opened_sinks: list[Sink] = []
        # The last parameter snapshot that rendered: named in the log when a later frame fails (what changed since).
        self._last_good_snap = None
        self._log_limited = LogLimiter(log, interval=2.0)
        self.fader = MasterFader()
        self.swap = None  # engine.swap.NetworkSwap, made at setup
        self.overlay = None  # engine.overlay.Overlay, made at setup
        self._paused = 0.0  # show seconds spent frozen: the generator's clock is show time minus this
        self._gen_last_t = 0.0
        self._show_times: dict[int, float] = {}  # frame index -> show time, for host sinks (read back a frame late)

    # -- setup --------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        o = self.opts
        windows = [s for s in self.sinks if s.kind == "window"]
        if len(windows) > 1:
            raise UsageError("only one --sink window per run")
        # A sink this machine cannot serve fails now, before minutes of model loading or compiling.
        for sink in self.sinks:
            ok, reason = sink.availability()
            if not ok:
                raise SetupError(reason if reason.startswith(f"{sink.kind}:") else f"{sink.kind}: {reason}")
        self.device = resolve_device(o.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

        start = self.store.snapshot()  # the show's starting parameters
        if self._prebuilt is not None:
            self.generator, backend_desc = self._prebuilt, "applied by the caller"
            self.generator.validate(start)
        else:
            self.generator = create_generator(o.generator, output=o.size, device=self.device, options=o.generator_options)
            self.generator.validate(start)
            from engine.backends import apply_backend

            # The governor moves diffusion steps live: a compiled backend prepares every step count's shapes now.
            from engine.control.governor import Governor

            governed = any(isinstance(c, Governor) for c in self.controllers)
            variants = self.generator.shape_variants(start) if governed else []
            backend = o.backend
            if o.engines is not None:
                if backend not in ("auto", "tensorrt"):
                    raise UsageError(f"--engines is for --backend tensorrt, not {backend}")
                backend = "tensorrt"
            self.generator, backend_desc = apply_backend(self.generator, backend, variants=variants, engines=o.engines,
                                                         flavor=o.flavor)
        g = self.generator
        # The output size: --size WxH, else the generator's own. The generator renders its native size (StyleGAN a
        # square, diffusion the output's aspect); the pipeline's fit pass frames it in the output.
        w, h = o.size or (g.width, g.height)
        self.output_size = (w, h)
        if self.store.get("output.fps") == Output.fps and o.fps != Output.fps:
            try:
                self.store.set("output.fps", o.fps)  # the live pacing starts at --fps
            except ParamError as e:
                raise UsageError(f"--fps {o.fps:g}: {e}") from None

        # GL: a window's context when previewing (rendering happens in it), else headless EGL on the CUDA GPU.
        if windows:
            windows[0].create_window(w, h)
            self.gl = GL.from_current()
        elif any(s.kind == "syphon" for s in self.sinks):
            # Syphon publishes from an NSOpenGLContext; headless, we make one and render in it.
            from engine.sinks.syphon import create_headless_context

            self._ns_context = create_headless_context()
            self.gl = GL.from_current()
        else:
            self.gl = GL.headless(self._egl_device_index())
        self.pipeline = Pipeline(self.gl, w, h, frame_size=(g.width, g.height))
        from engine.overlay import Overlay

        self.overlay = Overlay(self.gl, w, h)  # the temperature panel (overlay.enabled), allocated whether on or not

        self.uploader, upload_reason = self._select_uploader()
        if upload_reason:
            log.warning("%s", upload_reason)
        if g.output_dtype != torch.float32:  # the uploader prepared float32 frames; compile for this dtype now too
            self.uploader.prepare(self.pipeline.frame.texture, "write", g.output_dtype)

        if g.wants_source:
            # Register the feedback texture with the uploader now, not on the first feedback frame.
            self.uploader.prepare(self.pipeline.enable_feedback_source(), "read")

        if any(s.needs_host for s in self.sinks):
            self.readback = Readback(self.gl, w, h)
        self.offline = all(s.kind in OFFLINE_SINKS for s in self.sinks)
        clock = o.clock if o.clock != "auto" else ("frame" if self.offline and o.fps > 0 else "wall")
        if clock not in ("wall", "frame"):
            raise UsageError(f"unknown clock {o.clock!r}; use auto, wall or frame")
        if clock == "frame" and o.fps <= 0:
            raise UsageError("--clock frame needs --fps > 0 (it is the time step)")
        self.clock = clock

        for sink in self.sinks:
            # A live show drops frames in a slow host sink rather than stall; an offline render waits for it.
            sink.realtime = not self.offline
            sink.open(self.gl, w, h, o.fps if o.fps > 0 else 30.0)
            self._opened_sinks.append(sink)

        self.source_tensor = torch.empty((1, 3, g.height, g.width), device=self.device) if g.wants_source else None
        self.sources = None
        if g.wants_source:
            from engine.sources import SourceManager

            self.sources = SourceManager(g.width, g.height, self.device)  # sources feed the generator: its size
            self.sources.open_at_setup(start)
        elif start.source.mode != "feedback":
            log.warning("source.mode %s is ignored: %s renders from its latent, only img2img generators "
                        "(diffusion) take a source", start.source.mode, g.name)

        from engine.swap import NetworkSwap

        self.swap = NetworkSwap(g, self._build_swapped, start)
        self.stats = Stats(device_type=self.device.type)
        self.info = {
            "generator": g.info(),
            "backend": backend_desc,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "gl": self.gl.info(),
            "upload": {"path": self.uploader.name, "host_copies_per_frame": self.uploader.host_copies_per_frame,
                       "fallback_reason": upload_reason or None},
            "sinks": [s.label for s in self.sinks],
            "size": [w, h],
            "render_size": [g.width, g.height],
            "clock": self.clock,
            "fps_target": o.fps,
            "cpu_threads": cpu_threads.current(),
        }
        self.stats.info.update(self.info)
        for c in self.controllers:
            c.start(self.store, self.info)
            self._started_controllers.append(c)

    def _build_swapped(self, spec: str) -> Generator:
        """On the swap's loader thread: the new generator at the running one's frame size, with the show's backend,
        one warm-up frame rendered."""
        from engine.backends import apply_backend

        g = self.generator
        if spec.startswith("diffusion:"):  # the show's diffusion options (vae, dtype, LoRA); the same output size
            new = create_generator(spec, output=self.output_size, device=self.device, options=self.opts.generator_options)
        else:  # a StyleGAN file, rendered (resized on the device) at the frame's square
            new = create_generator(spec, size=g.width, device=self.device)
        if (new.width, new.height) != (g.width, g.height):
            new.close()
            raise SetupError(f"{spec} renders {new.width}x{new.height}, the show's frame is {g.width}x{g.height}")
        snap = self.store.snapshot()
        new.validate(snap)
        new, _ = apply_backend(new, self.opts.backend)
        with torch.inference_mode():
            new(snap, FrameTime(t=self._gen_last_t, index=0, dt=0.0), None)
        return new

    def _egl_device_index(self) -> int | None:
        # Only an EGL context has EGL devices to match (Windows with CUDA used to warn "libEGL not found").
        if self.device.type != "cuda" or not GL.HEADLESS_IS_EGL:
            return None
        try:
            from engine.egl_device import egl_device_for_cuda
        except ImportError:
            return None
        index, reason = egl_device_for_cuda(self.device.index)  # resolve_device gives CUDA devices their index
        if index is None and reason:
            log.warning("EGL/CUDA device matching: %s", reason)
        return index

    def _select_uploader(self):
        from engine.upload import StagedUpload

        mode = self.opts.upload
        if mode not in ("auto", "staged", "interop"):
            raise UsageError(f"unknown upload path {mode!r}; use auto, staged or interop")
        if mode == "staged" or self.device.type != "cuda":
            reason = None
            if mode == "interop":
                raise SetupError("--upload interop needs a CUDA device")
            if self.device.type == "cuda":
                reason = "upload: staged copy requested with --upload staged (frames cross host memory)"
            else:
                reason = (f"upload: staged copy, frames cross host memory: CUDA-GL interop needs a CUDA device and this "
                          f"run is on {self.device}" + ("" if torch.cuda.is_available() else " (no CUDA device here)"))
            return StagedUpload(self.device), reason
        from engine.interop import select_uploader

        uploader, reason = select_uploader(self.device, self.gl, self.pipeline)
        if mode == "interop" and uploader.name != "interop":
            raise SetupError(f"--upload interop is not possible here: {reason}")
        return uploader, (f"CUDA-GL interop unavailable, using the staged copy (frames cross host memory): {reason}" if reason else None)

    # -- per frame ----------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.in_show = True
        o = self.opts
        assert self.generator is not None and self.pipeline is not None and self.stats is not None
        max_frames = o.frames
        deadline = None
        if o.seconds is not None:
            if self.clock == "frame":
                n = int(math.ceil(o.seconds * o.fps))
                max_frames = n if max_frames is None else min(max_frames, n)
            else:
                deadline = time.monotonic() + o.seconds
        # Live shows pace to output.fps (changed live), and so does an explicit --clock wall (a live recording with only
        # a file sink); an offline render is unpaced, its clock steps 1/--fps.
        live = not self.offline or o.clock == "wall"
        t0 = time.monotonic()
        next_due = t0
        index = 0
        last_t = 0.0
        while not self.stop_event.is_set():
            if max_frames is not None and index >= max_frames:
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            t = index / o.fps if self.clock == "frame" else now - t0
            for c in self.controllers:
                forced = c.frame_time(index)
                if forced is not None:
                    t = forced
            when = FrameTime(t=t, index=index, dt=t - last_t)
            last_t = t
            self.step(when)
            index += 1
            if any(s.should_close() for s in self.sinks):
                break
            fps = self.store.snapshot().output.fps if live else 0.0
            if fps > 0:
                next_due += 1.0 / fps
                delay = next_due - time.monotonic()
                if delay > 0:
                    self.stop_event.wait(delay)  # a stop (Ctrl-C) does not wait out a slow output.fps
                else:
                    next_due = time.monotonic()  # fell behind: don't try to catch up with a burst
            else:
                next_due = time.monotonic()
        self._flush_host_sinks()
        return self.stats.summary()

    def step(self, when: FrameTime) -> None:
        pipe, stats = self.pipeline, self.stats
        assert self.generator is not None and pipe is not None and stats is not None
        stats.begin_frame()
        for c in self.controllers:
            c.before_frame(self.store, when)
        snap = self.store.snapshot()
        pipe.reload_changed()
        self.overlay.reload_changed()
        out_params = snap.output
        gain = self.fader.update(when.t, out_params.blackout, out_params.fade_seconds, out_params.opacity)
        self.swap.poll(snap)

        if out_params.freeze and self._last_good_snap is not None:
            # Hold: nothing is generated or uploaded; the held frame is presented (the fader still moves) and sent.
            self._paused += max(0.0, when.dt)
            stats.counters["frozen_frames"] += 1
            with stats.stage("shaders"):
                out = pipe.present(gain)
        else:
            gen_t = when.t - self._paused
            gen_when = FrameTime(t=gen_t, index=when.index, dt=gen_t - self._gen_last_t)
            self._gen_last_t = gen_t
            self.swap.ready(gen_t)
            out = self._render(snap, gen_when, gain)
        self.overlay.update(self._temperature(), when.t, snap.overlay.seconds)
        if snap.overlay.enabled:
            with stats.stage("shaders"):
                self.overlay.draw(pipe.output.fbo, snap.overlay, gain)
        with stats.stage("sinks"):
            for sink in self.sinks:
                if not sink.needs_host:
                    sink.send_texture(out, when.index, t=when.t)
            if self.readback is not None:
                self._show_times[when.index] = when.t
                got = self.readback.submit(pipe.output.fbo, when.index)
                if got is not None:
                    self._send_pixels(*got)
        frame_stats = stats.end_frame()
        for c in self.controllers:
            c.after_frame(when, frame_stats)
        if not self.opts.quiet:
            stats.maybe_print_status()

    def _render(self, snap, when: FrameTime, gain: float):
        """Generate (or crossfade a swap), upload and run the effect passes. Returns the output texture."""
        g, pipe, stats = self.generator, self.pipeline, self.stats
        source = None
        try:
            with stats.stage("generate", device=True):
                if g.wants_source and g.needs_source(snap):
                    source = self._read_source(snap, when)
                with torch.inference_mode():
                    if self.swap.incoming is not None:
                        seconds = snap.diffusion.swap_seconds if g.name == "diffusion" else snap.stylegan.swap_seconds
                        image, takeover = self.swap.render(g, snap, when, source, seconds)
                        if takeover is not None:
                            self._adopt(takeover)
                    else:
                        image = g(snap, when, source)  # (1, 3, H, W) in [-1, 1] on g.device
        except Exception as e:
            # The first frame fails loudly (a setup problem); in a running show a failing frame is data: the texture
            # keeps the last good frame, the shaders and sinks go on, and the log says which parameters changed.
            if self._last_good_snap is None:
                raise
            self._frame_failed(e, snap, when)
            image = None
        else:
            self._last_good_snap = snap
        if image is not None:
            with stats.stage("upload", device=True):
                self.uploader.upload(image, pipe.frame.texture)
        with stats.stage("shaders"):
            feedback_input = g.wants_source and source is not None and self._source_mode(snap) == "feedback"
            return pipe.render(snap.fx, when.t, perturb_frame=not feedback_input, out=snap.output, gain=gain)

    def _temperature(self) -> float | None:
        """This frame's temperature: the sample a controller latched for it (the thermal sampler, or a replay)."""
        for c in self.controllers:
            value = getattr(getattr(c, "current", None), "temperature", None)
            if value is not None:
                return float(value)
        return None

    def _adopt(self, new: Generator) -> None:
        """The swap's new generator takes over (render thread, between frames of the crossfade)."""
        old, self.generator = self.generator, new
        if new.output_dtype != old.output_dtype:  # the uploader's layout kernel is per dtype
            self.uploader.prepare(self.pipeline.frame.texture, "write", new.output_dtype)
        self.info["generator"] = new.info()
        self.stats.info["generator"] = self.info["generator"]
        old.close()

    def _frame_failed(self, error: Exception, snap, when: FrameTime) -> None:
        self.stats.counters["generator_errors"] += 1
        changed = _changed_params(self._last_good_snap, snap)
        hint = f"; changed since the last good frame: {', '.join(changed)}" if changed else ""
        self._log_limited("generate", "frame %d: the generator failed (%s: %s); showing the last good frame%s",
                     when.index, type(error).__name__, error, hint, level=logging.ERROR)

    def _source_mode(self, snap) -> str:
        src = getattr(snap, "source", None)
        return getattr(src, "mode", "feedback") if src is not None else "feedback"

    def _read_source(self, snap, when: FrameTime):
        """The img2img input for this frame: (1, 3, H, W) in [-1, 1] on the generator's device, or None for the
        very first feedback frame (the generator then starts from its own init image)."""
        mode = self._source_mode(snap)
        if mode == "feedback":
            if self.pipeline.frames == 0:
                return None
            tex = self.pipeline.feedback_source(snap.fx, when.t)
            return self.uploader.download(tex, self.source_tensor)
        return self.sources.read(mode, snap, when)

    def _send_pixels(self, index: int, pixels) -> None:
        t = self._show_times.pop(index, None)
        for sink in self.sinks:
            if sink.needs_host:
                sink.send_pixels(pixels, index, t=t)

    def _flush_host_sinks(self) -> None:
        if self.readback is not None:
            for index, pixels in self.readback.flush():
                self._send_pixels(index, pixels)

    # -- teardown -----------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release everything, in an order that keeps the GL context alive while it is needed: controllers, then
        every sink except the window (Spout's release and the readback still need the context), the frame path's
        GL resources, the generators, and the window last (glfw.terminate destroys the context it owns)."""
        if self._closed:
            return
        self._closed = True
        errors = []

        def attempt(what: str, fn) -> None:
            try:
                fn()
            except Exception as e:  # closing must reach every resource
                errors.append(f"{what}: {e}")

        for c in reversed(self._started_controllers):
            attempt(f"controller {type(c).__name__}", c.stop)
        windows = [s for s in self._opened_sinks if s.kind == "window"]
        for s in self._opened_sinks:
            if s.kind != "window":
                attempt(f"sink {s.label}", s.close)
        if self.stats is not None:
            self.stats.info["sink_stats"] = {s.label: s.stats() for s in self._opened_sinks}
            self.stats.info["controllers"] = {type(c).__name__: c.stats() for c in self._started_controllers}
            if self.generator is not None:
                self.stats.info["generator_stats"] = self.generator.stats()
            if self.pipeline is not None:
                self.stats.info["shader_reloads"] = {n: p.reloads for n, p in self.pipeline.programs.items()}
            if self.swap is not None:
                self.stats.info["network_swap"] = self.swap.stats()
        if self.sources is not None:
            attempt("sources", self.sources.close)
        if self.uploader is not None:
            attempt("uploader", self.uploader.close)
        if self.readback is not None:
            attempt("readback", self.readback.release)
        if self.overlay is not None:
            attempt("overlay", self.overlay.release)
        if self.pipeline is not None:
            attempt("pipeline", self.pipeline.release)
        if self.swap is not None:
            attempt("network swap", self.swap.close)
        if self.generator is not None:
            attempt("generator", self.generator.close)
        for s in windows:
            attempt(f"sink {s.label}", s.close)
        for e in errors:
            log.error("while closing: %s", e)

    def install_signal_handlers(self) -> None:
        """Ctrl-C, SIGTERM and SIGHUP (a closed terminal or ssh session) end the show cleanly: the video file is
        finalised, stats are written. During setup (a model still loading) they stop at once: nothing is recorded
        yet, and a hostile or huge file must not keep the process busy after it was asked to go."""

        def handler(signum, frame):
            if self.stop_event.is_set() or not self.in_show:
                raise KeyboardInterrupt  # a second signal, or still in setup: stop now
            self.stop_event.set()

        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            if hasattr(signal, name):  # no SIGHUP on Windows
                signal.signal(getattr(signal, name), handler)


def run_engine(opts: RunOptions, store: ParamStore, controllers: list[Controller]) -> dict[str, Any]:
    engine = Engine(opts, store, controllers)
    engine.install_signal_handlers()
    try:
        engine.setup()
        engine.run()
    finally:
        engine.close()
        # Written even when the run ends with an error: the frames so far are what a post-mortem needs.
        if opts.stats_json and engine.stats is not None:
            engine.stats.write_json(opts.stats_json)
    return engine.stats.summary() if engine.stats else {}


def _changed_params(before, after) -> list[str]:
    """'group.name' of every parameter that differs between two snapshots (only on the error path)."""
    import dataclasses

    out = []
    for g in dataclasses.fields(after):
        a, b = getattr(before, g.name), getattr(after, g.name)
        if a != b:
            out += [f"{g.name}.{f.name}" for f in dataclasses.fields(b) if getattr(a, f.name) != getattr(b, f.name)]
    return out
