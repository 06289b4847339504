"""OpenGL stage: context, shader files (with #include, #line and hot reload), the effect pipeline and the async
readback for host sinks.

Conventions
  * Textures hold images TOP row first (generator row 0 -> texture row 0), so readbacks need no flip; only the
    window's default framebuffer (GL origin bottom-left) flips, in present.frag.
  * Allocate at setup: every texture, framebuffer, vertex array and pixel buffer is made once (per size); a frame
    only binds and draws. The feedback ping-pong swaps references, never copies.
  * A shader that fails to compile at setup raises SetupError with file:line; one that fails on hot reload keeps
    the last good program and reports the compiler log with file:line (errors are data during a show).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import moderngl
import numpy as np

from engine.errors import SetupError
from engine.output import fit_transform, is_identity
from engine.params import Output

log = logging.getLogger("engine.gl")

# ---------------------------------------------------------------------------------------------------------------
# Context
# ---------------------------------------------------------------------------------------------------------------


def shader_dir() -> Path:
    """The shaders/ folder: the repo's top-level one in a source checkout or editable install, else the copy
    the wheel carries inside the package. ENGINE_SHADER_DIR overrides (for a VJ's own shader folder)."""
    env = os.environ.get("ENGINE_SHADER_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "shaders", here / "_shaders"):
        if (candidate / "fullscreen.vert").is_file():
            return candidate
    raise SetupError(f"shader folder not found next to {here}; reinstall engine or set ENGINE_SHADER_DIR")


class GL:
    """The engine's one GL context. Either headless (EGL: Mesa here, NVIDIA on a GPU box) or attached to the
    GL context current on this thread (a GLFW window made by the window sink)."""

    def __init__(self, ctx: moderngl.Context, kind: str):
        self.ctx = ctx
        self.kind = kind  # "egl" | "window"
        if ctx.version_code < 330:
            raise SetupError(f"OpenGL {ctx.version_code / 100:.1f} found; engine needs 3.3 core or newer (update the GPU driver or Mesa)")
        self.vao_cache: dict[int, moderngl.VertexArray] = {}

    #: Whether a headless context is EGL here (Linux). Elsewhere it is WGL/CGL, which has no EGL devices to match.
    HEADLESS_IS_EGL = sys.platform.startswith("linux")

    @classmethod
    def headless(cls, device_index: int | None = None) -> "GL":
        """An offscreen context: EGL on Linux (Mesa, or the NVIDIA GPU `device_index`), the platform's own
        standalone context elsewhere (WGL on Windows, which Spout needs; CGL on macOS)."""
        kwargs: dict[str, Any] = {"standalone": True, "require": 330}
        if cls.HEADLESS_IS_EGL:
            kwargs["backend"] = "egl"
            if device_index is not None:
                kwargs["device_index"] = device_index
        try:
            ctx = moderngl.create_context(**kwargs)
        except Exception as e:
            raise SetupError(
                f"no headless OpenGL (EGL) context: {e}. On Debian/Ubuntu: apt-get install libegl1 libgl1-mesa-dri "
                "(Mesa) or install the NVIDIA driver's EGL libraries"
            ) from None
        return cls(ctx, "egl")

    @classmethod
    def from_current(cls) -> "GL":
        """Wrap the context current on this thread (made by a windowing library)."""
        try:
            ctx = moderngl.create_context(require=330)
        except Exception as e:
            raise SetupError(f"could not use the window's OpenGL context: {e}") from None
        return cls(ctx, "window")

    def info(self) -> dict[str, str]:
        i = self.ctx.info
        return {
            "renderer": i.get("GL_RENDERER", "?"),
            "vendor": i.get("GL_VENDOR", "?"),
            "version": i.get("GL_VERSION", "?"),
            "context": self.kind,
        }

    def fullscreen(self, program: moderngl.Program) -> moderngl.VertexArray:
        """A buffer-less vertex array drawing fullscreen.vert's single triangle with `program`."""
        vao = self.vao_cache.get(program.glo)
        if vao is None:
            vao = self.ctx.vertex_array(program, [])
            self.vao_cache[program.glo] = vao
        return vao

    def release(self) -> None:
        for vao in self.vao_cache.values():
            vao.release()
        self.vao_cache.clear()
        self.ctx.release()


# ---------------------------------------------------------------------------------------------------------------
# Shader files: #include, #line, error mapping, hot reload
# ---------------------------------------------------------------------------------------------------------------

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')
_VERSION = re.compile(r"^\s*#\s*version\b")
# Mesa: "0:12(5): error: ..."  NVIDIA: "0(12) : error C0000: ..."  AMD/Intel: "ERROR: 0:12: ..."
_LOG_LOCATIONS = [re.compile(r"\b(\d+):(\d+)\(\d+\)"), re.compile(r"\b(\d+)\((\d+)\)"), re.compile(r"\b(\d+):(\d+):")]


@dataclass
class ShaderSource:
    """A shader stage's preprocessed text plus which file each GLSL source-string number stands for."""

    text: str
    files: list[Path] = field(default_factory=list)

    def map_log(self, log_text: str) -> str:
        """Rewrite the compiler's `N:LINE` locations to `file.glsl:LINE`."""

        def fix_line(line: str) -> str:
            for pattern in _LOG_LOCATIONS:
                m = pattern.search(line)
                if m:
                    index, lineno = int(m.group(1)), int(m.group(2))
                    if 0 <= index < len(self.files):
                        return f"{self.files[index]}:{lineno}: " + line[m.end():].lstrip(" :")
            return line

        noise = ("GLSL Compiler failed", "vertex_shader", "fragment_shader", "geometry_shader")
        lines = [x for x in log_text.strip().splitlines() if x.strip() and not x.startswith(noise) and set(x.strip()) != {"="}]
        return "\n".join(fix_line(x) for x in lines)


def load_shader_source(path: Path) -> ShaderSource:
    """Read a shader file, expanding #include "x.glsl" (relative to the file) and emitting #line directives so
    compiler errors point at the right file and line. The #version line is hoisted first, as GLSL requires."""
    files: list[Path] = []
    version_line: list[str] = []

    def expand(p: Path, stack: tuple[Path, ...]) -> list[str]:
        if p in stack:
            raise SetupError(f"{p}: #include cycle through {' -> '.join(str(s.name) for s in stack)}")
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise SetupError(f"cannot read shader {p}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise SetupError(f"{p}: not a text file (byte {e.start} is not UTF-8); a shader is GLSL source") from None
        index = len(files)
        files.append(p)
        out = [f"#line 1 {index}"]
        for n, line in enumerate(lines, start=1):
            if _VERSION.match(line):
                if not version_line:
                    version_line.append(line.strip())
                out.append("")  # keep line numbering
                continue
            m = _INCLUDE.match(line)
            if m:
                out.extend(expand(p.parent / m.group(1), stack + (p,)))
                out.append(f"#line {n + 1} {index}")
                continue
            out.append(line)
        return out

    body = expand(path, ())
    if not version_line:
        raise SetupError(f"{path}:1: missing #version directive (add `#version 330 core` as the first line)")
    return ShaderSource("\n".join(version_line + body) + "\n", files)


class ShaderProgram:
    """A vertex + fragment program built from files, rebuilt when any file it reads changes.

    `maybe_reload()` is cheap (a stat per file, at most twice a second) and is called by the pipeline each frame.
    """

    CHECK_INTERVAL_S = 0.5

    def __init__(self, gl: GL, vertex: Path, fragment: Path, uniforms: dict[str, str] | None = None):
        self.gl = gl
        self.vertex_path = vertex
        self.fragment_path = fragment
        #: The uniforms the engine sets, name -> GLSL type ("float", "bool", "sampler2D"). A program that declares one
        #: with another type is refused like a compile error: setting it each frame would fail.
        self.uniforms = dict(uniforms or {})
        self.program: moderngl.Program | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self._mtimes: dict[Path, float] = {}
        self._next_check = 0.0
        error = self._build()
        if error:
            raise SetupError(f"shader {fragment.name} failed to compile: {error}")

    @property
    def name(self) -> str:
        return self.fragment_path.stem

    def _build(self) -> str | None:
        """Compile; on success swap the program in. Returns the mapped error text or None."""
        try:
            vs = load_shader_source(self.vertex_path)
            fs = load_shader_source(self.fragment_path)
        except SetupError as e:
            return str(e)
        self._mtimes = {p: _mtime(p) for p in vs.files + fs.files}
        try:
            program = self.gl.ctx.program(vertex_shader=vs.text, fragment_shader=fs.text)
        except moderngl.Error as e:
            text = str(e)
            # moderngl reports which stage failed; map that stage's source numbers to file names.
            source = vs if "vertex_shader" in text.split("\n", 1)[0] else fs
            return source.map_log(text)
        mismatch = self._uniform_mismatch(program, fs)
        if mismatch:
            program.release()
            return mismatch
        old = self.program
        self.program = program
        if old is not None:
            vao = self.gl.vao_cache.pop(old.glo, None)
            if vao is not None:
                vao.release()
            old.release()
        return None

    def _uniform_mismatch(self, program: moderngl.Program, source: ShaderSource) -> str | None:
        for name, want in self.uniforms.items():
            if name not in program:
                continue  # not declared, or optimised away: the engine skips it
            uniform = program[name]
            have = _GL_TYPE_NAMES.get(getattr(uniform, "gl_type", None), f"GL type {getattr(uniform, 'gl_type', '?')}")
            if isinstance(uniform, moderngl.Uniform) and have == want and uniform.array_length == 1:
                continue
            where = next((f"{p}:{n}" for p in source.files for n, line in enumerate(_read_lines(p), start=1)
                          if re.search(rf"\buniform\b[^;]*\b{re.escape(name)}\b", line)), str(self.fragment_path))
            return (f"{where}: uniform {name} is declared as {have}{'[]' if getattr(uniform, 'array_length', 1) > 1 else ''}; "
                    f"the engine sets it as a {want}")
        return None

    def maybe_reload(self) -> bool:
        """Recompile if a source file changed. Returns True when a new program was swapped in."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.CHECK_INTERVAL_S
        if all(_mtime(p) == m for p, m in self._mtimes.items()):
            return False
        error = self._build()
        if error:
            if error != self.last_error:
                log.error("shader %s failed to compile; keeping the last good program:\n%s", self.name, error)
            self.last_error = error
            return False
        self.last_error = None
        self.reloads += 1
        log.info("shader %s reloaded", self.name)
        return True

    def draw(self, target: moderngl.Framebuffer, textures: dict[str, moderngl.Texture], **uniforms: Any) -> None:
        """Bind `textures` to consecutive units under their sampler names, set uniforms, draw the fullscreen
        triangle into `target`. Uniforms the compiler optimised away are skipped."""
        program = self.program
        assert program is not None
        target.use()
        for unit, (name, tex) in enumerate(textures.items()):
            tex.use(location=unit)
            if name in program:
                program[name] = unit
        for name, value in uniforms.items():
            if name in program:
                program[name] = value
        self.gl.fullscreen(program).render(moderngl.TRIANGLES, vertices=3)

    def release(self) -> None:
        if self.program is not None:
            vao = self.gl.vao_cache.pop(self.program.glo, None)
            if vao is not None:
                vao.release()
            self.program.release()
            self.program = None


#: GL enums of the uniform types the engine sets (moderngl's Uniform.gl_type), for the uniform contract.
_GL_TYPE_NAMES = {0x1406: "float", 0x8B56: "bool", 0x8B5E: "sampler2D", 0x1404: "int", 0x8B50: "vec2", 0x8B51: "vec3",
                  0x8B52: "vec4", 0x8B53: "ivec2"}


def _read_lines(p: Path) -> list[str]:
    try:
        return p.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return -1.0


# ---------------------------------------------------------------------------------------------------------------
# The effect pipeline: frame -> perturb -> feedback blend (ping-pong) -> present (RGBA8 for sinks)
# ---------------------------------------------------------------------------------------------------------------


class Target:
    """A texture with its framebuffer."""

    def __init__(self, gl: GL, size: tuple[int, int], dtype: str, *, linear: bool = False):
        self.texture = gl.ctx.texture(size, 4, dtype=dtype)
        self.texture.repeat_x = self.texture.repeat_y = False  # clamp to edge: displaced lookups stay inside
        f = moderngl.LINEAR if linear else moderngl.NEAREST
        self.texture.filter = (f, f)
        self.fbo = gl.ctx.framebuffer(color_attachments=[self.texture])

    def clear(self) -> None:
        self.fbo.clear(0.0, 0.0, 0.0, 1.0)

    def release(self) -> None:
        self.fbo.release()
        self.texture.release()


#: What the pipeline sets in each program (name -> GLSL type): the contract an edited shader must keep.
PROGRAM_UNIFORMS: dict[str, dict[str, str]] = {
    "fit": {"src": "sampler2D", "scale": "vec2", "offset": "vec2", "background": "vec3"},
    "perturb": {"src": "sampler2D", "target_size": "ivec2",
                **{n: "float" for n in ("amount", "scale", "speed", "displace", "brightness_jitter", "hue_jitter", "time",
                                        "aspect")}},
    "blend": {"new_frame": "sampler2D", "previous": "sampler2D", "alpha": "float"},
    "present": {"src": "sampler2D", "flip_y": "bool", "gain": "float"},
}


class Pipeline:
    """All GL resources of the frame path, allocated once: the frame at the generator's size, the rest at the
    output size (--size WxH).

        frame   (RGBA8 or RGBA16F)  generator size; written by the uploader (generator output)
        fitted  (RGBA16F)           fit(frame): framed in the output (output.fit/zoom/pan); skipped when the frame
                                    already is the output (same size, no zoom or pan)
        perturbed (RGBA16F)         perturb(fitted)             skipped when fx.perturb == 0
        acc[2]  (RGBA16F)           blend(new, acc[prev])       ping-pong by swapping indices
        output  (RGBA8)             present(acc[cur]) x gain    what sinks get (gain: the master fader)
        source  (RGBA8)             generator size; perturb(acc[prev]): img2img feedback input (seed 001), on demand

    16-bit float accumulators keep a long feedback tail (alpha close to 1) from banding or sticking, which an
    8-bit loop does; sinks get 8 bits, which is what Spout/NDI/video carry.
    """

    def __init__(self, gl: GL, width: int, height: int, *, frame_dtype: str = "f1", shaders: Path | None = None,
                 frame_size: tuple[int, int] | None = None):
        self.gl = gl
        self.width, self.height = int(width), int(height)
        size = (self.width, self.height)
        self.frame_size = (int(frame_size[0]), int(frame_size[1])) if frame_size else size
        folder = shaders or shader_dir()
        vert = folder / "fullscreen.vert"
        self.programs = {
            name: ShaderProgram(gl, vert, folder / f"{name}.frag", uniforms) for name, uniforms in PROGRAM_UNIFORMS.items()
        }
        self.frame = Target(gl, self.frame_size, frame_dtype, linear=True)
        self.fitted = Target(gl, size, "f2")
        self.perturbed = Target(gl, size, "f2")
        self.acc = [Target(gl, size, "f2", linear=True), Target(gl, size, "f2", linear=True)]
        self.output = Target(gl, size, "f1", linear=True)  # linear: the window scales it
        self.source: Target | None = None  # made by enable_feedback_source() for img2img generators
        self.cur = 0  # index of the most recent accumulator
        self.frames = 0
        for t in (self.frame, self.fitted, self.perturbed, self.output, *self.acc):
            t.clear()

    @property
    def previous(self) -> moderngl.Texture:
        """The last blended output (RGBA16F), i.e. what the next blend mixes with."""
        return self.acc[self.cur].texture

    def reload_changed(self) -> None:
        for p in self.programs.values():
            p.maybe_reload()

    def _perturb_uniforms(self, fx, t: float, target: tuple[int, int]) -> dict[str, Any]:
        return dict(
            amount=fx.perturb, scale=fx.perturb_scale, speed=fx.perturb_speed, displace=fx.displace,
            brightness_jitter=fx.brightness_jitter, hue_jitter=fx.hue_jitter, time=t,
            aspect=target[0] / target[1], target_size=target,
        )

    def enable_feedback_source(self) -> moderngl.Texture:
        """Allocate the img2img feedback texture at the generator's size (at setup, so an interop uploader can
        register it then)."""
        if self.source is None:
            self.source = Target(self.gl, self.frame_size, "f1", linear=True)
        return self.source.texture

    def feedback_source(self, fx, t: float) -> moderngl.Texture:
        """Seed 001's img2img input: the previous output, perturbed, at the generator's size. Returns RGBA8."""
        self.enable_feedback_source()
        self.programs["perturb"].draw(self.source.fbo, {"src": self.previous}, **self._perturb_uniforms(fx, t, self.frame_size))
        return self.source.texture

    def fit_frame(self, out) -> moderngl.Texture:
        """The frame framed in the output by output.fit/zoom/pan (`out`: the snapshot's Output group). Returns the
        frame itself when nothing needs resampling."""
        size = (self.width, self.height)
        transform = fit_transform(self.frame_size, size, out.fit, out.zoom, out.pan_x, out.pan_y)
        if is_identity(self.frame_size, size, transform):
            return self.frame.texture
        bg = tuple(out.background) if len(out.background) == 3 else (0.0, 0.0, 0.0)
        self.programs["fit"].draw(self.fitted.fbo, {"src": self.frame.texture}, scale=transform[:2], offset=transform[2:],
                                  background=tuple(min(1.0, max(0.0, c)) for c in bg))
        return self.fitted.texture

    def render(self, fx, t: float, *, perturb_frame: bool = True, out=None, gain: float = 1.0) -> moderngl.Texture:
        """Run the passes on the freshly uploaded `frame`. Returns the RGBA8 output texture.

        perturb_frame: apply the perturb pass to the new frame (StyleGAN streams). Img2img feedback applies it
        to the generator's input instead (feedback_source), so it passes False.
        out: the snapshot's Output group (framing); None = the default framing (cover, no zoom or pan).
        gain: the master fader (output.opacity x blackout).
        """
        new = self.fit_frame(out if out is not None else _DEFAULT_OUTPUT)
        if perturb_frame and fx.perturb > 0.0:
            self.programs["perturb"].draw(self.perturbed.fbo, {"src": new}, **self._perturb_uniforms(fx, t, (self.width, self.height)))
            new = self.perturbed.texture
        nxt = 1 - self.cur
        # The first frame has no history: blending with the cleared buffer would fade in from black.
        alpha = fx.feedback if self.frames > 0 else 0.0
        self.programs["blend"].draw(self.acc[nxt].fbo, {"new_frame": new, "previous": self.acc[self.cur].texture}, alpha=alpha)
        self.cur = nxt
        self.frames += 1
        return self.present(gain)

    def present(self, gain: float = 1.0) -> moderngl.Texture:
        """The current accumulated frame into the RGBA8 output, times the master fader. Alone (no render), it is
        what a frozen show publishes: the held frame, still fading with blackout and opacity."""
        self.programs["present"].draw(self.output.fbo, {"src": self.acc[self.cur].texture}, flip_y=False, gain=float(gain))
        return self.output.texture

    def shader_errors(self) -> dict[str, str]:
        return {name: p.last_error for name, p in self.programs.items() if p.last_error}

    def release(self) -> None:
        for t in (self.frame, self.fitted, self.perturbed, self.output, *self.acc, self.source):
            if t is not None:
                t.release()
        for p in self.programs.values():
            p.release()


_DEFAULT_OUTPUT = Output()


# ---------------------------------------------------------------------------------------------------------------
# Async readback for host sinks: double-buffered pixel buffer objects
# ---------------------------------------------------------------------------------------------------------------


class Readback:
    """Reads the output framebuffer into host memory without waiting for the GPU in the same frame.

    Frame N: glReadPixels into PBO[N % 2] (returns at once on a real GPU: the copy is queued), then map
    PBO[(N - 1) % 2], filled during the previous frame, into a preallocated numpy array. Pixels therefore
    arrive one frame late; `flush()` drains the last one at exit.
    """

    def __init__(self, gl: GL, width: int, height: int):
        self.width, self.height = width, height
        nbytes = width * height * 4
        self.pbos = [gl.ctx.buffer(reserve=nbytes, dynamic=True) for _ in range(2)]
        self.host = [np.empty((height, width, 4), dtype=np.uint8) for _ in range(2)]
        self.pending: list[int | None] = [None, None]  # frame index held by each PBO
        self.slot = 0

    def submit(self, fbo: moderngl.Framebuffer, frame_index: int) -> tuple[int, np.ndarray] | None:
        """Queue this frame's readback; return the previous frame's pixels (frame index, (H, W, 4) uint8) if any."""
        fbo.read_into(self.pbos[self.slot], components=4, alignment=1)
        self.pending[self.slot] = frame_index
        self.slot ^= 1
        return self._collect(self.slot)

    def _collect(self, slot: int) -> tuple[int, np.ndarray] | None:
        index = self.pending[slot]
        if index is None:
            return None
        self.pbos[slot].read_into(self.host[slot])
        self.pending[slot] = None
        return index, self.host[slot]

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """Every frame still in flight, oldest first."""
        out = []
        for slot in (self.slot, self.slot ^ 1):
            got = self._collect(slot)
            if got is not None:
                out.append((got[0], got[1].copy()))
        return sorted(out, key=lambda x: x[0])

    def release(self) -> None:
        for b in self.pbos:
            b.release()
