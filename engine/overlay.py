"""The temperature drawn into the picture (seed 000: the machine shows its own heat): the live value as a number and
a rolling graph of the last `overlay.seconds`, colour-mapped from cool to hot, drawn over the output after the
effects (shaders/overlay.frag). A GL-stage module: the loop hands it the frame's temperature sample (read by the
telemetry thread; no device query here) and the overlay parameters.

Allocated at setup, whatever overlay.enabled says (turning it on mid-show allocates nothing):
    font     R8 atlas, one cell per glyph of GLYPHS, rendered once with PIL from a font found on the system
             (DejaVu Sans Mono / Bold, Liberation Mono) or, failing that, the font Pillow ships
    history  R32F ring of HISTORY samples; one texel is written when the graph moves on one slot
             (every seconds / HISTORY s): 4 bytes host -> GL, no read back, no sync
    text     R8 row of glyph indices, rewritten only when the number shown changes
Off, nothing is drawn: the output is bit-identical to an engine without an overlay.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import moderngl
import numpy as np

from engine.gl import GL, ShaderProgram, shader_dir

log = logging.getLogger("engine.overlay")

GLYPHS = "0123456789.-\u00b0C "
HISTORY = 256  # graph slots across the panel
MAX_TEXT = 8
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationMono-Bold.ttf",
    "/Library/Fonts/Menlo.ttc",
    "/System/Library/Fonts/Menlo.ttc",
    "C:/Windows/Fonts/consolab.ttf",
    "C:/Windows/Fonts/consola.ttf",
)

#: The uniforms the overlay sets (the same contract as engine.gl.PROGRAM_UNIFORMS).
OVERLAY_UNIFORMS = {"font": "sampler2D", "text": "sampler2D", "history": "sampler2D", "head": "int", "text_len": "int",
                    **{n: "float" for n in ("lo", "hi", "opacity", "gain", "current", "glyph_count", "cell_aspect")},
                    "panel_px": "vec2"}


def font_atlas(cell_height: int = 64) -> tuple[np.ndarray, str]:
    """(cell_height, len(GLYPHS) * cell_width) uint8 coverage, one monospaced cell per glyph; and the font used."""
    from PIL import Image, ImageDraw, ImageFont

    font, name = None, ""
    size = int(cell_height * 0.8)
    for path in FONT_CANDIDATES:
        if Path(path).is_file():
            try:
                font, name = ImageFont.truetype(path, size), path
                break
            except OSError:
                continue
    if font is None:
        try:
            font, name = ImageFont.load_default(size=size), "Pillow's bundled font"
        except TypeError:  # Pillow < 10.1 or without FreeType: its small bitmap font, scaled up by the GPU
            font, name = ImageFont.load_default(), "Pillow's bitmap font"
    width = max(int(math.ceil(font.getlength(g))) for g in GLYPHS) + 2
    img = Image.new("L", (width * len(GLYPHS), cell_height), 0)
    draw = ImageDraw.Draw(img)
    for i, g in enumerate(GLYPHS):
        w = font.getlength(g)
        draw.text((i * width + (width - w) / 2, cell_height * 0.5), g, fill=255, font=font, anchor="lm")
    return np.asarray(img, dtype=np.uint8), name


def temperature_text(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "--.-\u00b0C"
    return f"{max(-99.9, min(999.9, value)):.1f}\u00b0C"


class Overlay:
    def __init__(self, gl: GL, width: int, height: int, *, shaders: Path | None = None):
        self.gl = gl
        self.width, self.height = int(width), int(height)
        folder = shaders or shader_dir()
        self.program = ShaderProgram(gl, folder / "fullscreen.vert", folder / "overlay.frag", OVERLAY_UNIFORMS)
        atlas, self.font_name = font_atlas()
        ctx = gl.ctx
        self.font = ctx.texture((atlas.shape[1], atlas.shape[0]), 1, atlas.tobytes(), alignment=1)
        self.font.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self.font.repeat_x = self.font.repeat_y = False
        self.cell_aspect = (atlas.shape[1] / len(GLYPHS)) / atlas.shape[0]
        self.history = ctx.texture((HISTORY, 1), 1, np.full(HISTORY, np.nan, np.float32).tobytes(), dtype="f4")
        self.history.filter = (moderngl.NEAREST, moderngl.NEAREST)
        self.text = ctx.texture((MAX_TEXT, 1), 1, bytes(MAX_TEXT), alignment=1)
        self.text.filter = (moderngl.NEAREST, moderngl.NEAREST)
        self.head = HISTORY - 1  # the newest slot; the first push goes to 0
        self.samples = 0
        self._next_slot_t: float | None = None
        self._shown = ""
        self._text_len = 0
        self.current: float | None = None
        log.info("overlay: font %s", self.font_name)

    # -- per frame ------------------------------------------------------------------------------------------------
    def update(self, temperature: float | None, t: float, seconds: float) -> None:
        """Record the frame's temperature: the graph moves on one slot every seconds / HISTORY of show time (a
        slot that passes without a frame takes the newest value). Cheap: at most a few 4-byte texel writes."""
        self.current = temperature
        step = max(seconds, 1e-3) / HISTORY
        if self._next_slot_t is None or t < self._next_slot_t - HISTORY * step:  # the first frame, or time went back
            self._next_slot_t = t
        pushes = 0
        while t >= self._next_slot_t and pushes < HISTORY:
            self._push(temperature)
            self._next_slot_t += step
            pushes += 1
        if pushes == HISTORY:  # a long gap: the whole graph is this value; start the slots from now
            self._next_slot_t = t + step

    def _push(self, value: float | None) -> None:
        self.head = (self.head + 1) % HISTORY
        v = np.float32(value if value is not None and math.isfinite(value) else np.nan)
        self.history.write(v.tobytes(), viewport=(self.head, 0, 1, 1))
        self.samples += 1

    def _set_text(self, text: str) -> None:
        if text == self._shown:
            return
        self._shown = text
        idx = [GLYPHS.index(c) if c in GLYPHS else GLYPHS.index(" ") for c in text[:MAX_TEXT]]
        self._text_len = len(idx)
        self.text.write(bytes(idx + [0] * (MAX_TEXT - len(idx))), alignment=1)

    def draw(self, target: moderngl.Framebuffer, params, gain: float = 1.0) -> None:
        """Blend the panel over `target` (the output, RGBA8, row 0 = top) where overlay.x/y/width/height put it."""
        self._set_text(temperature_text(self.current))
        x0 = int(round(params.x * self.width))
        y0 = int(round(params.y * self.height))
        w = max(1, min(self.width - x0, int(round(params.width * self.width))))
        h = max(1, min(self.height - y0, int(round(params.height * self.height))))
        if x0 >= self.width or y0 >= self.height:
            return
        ctx = self.gl.ctx
        target.viewport = (x0, y0, w, h)  # texture rows are top-first: y0 rows from the top
        ctx.enable(moderngl.BLEND)
        # Colour: over; alpha: the output stays opaque.
        ctx.blend_func = (moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA, moderngl.ZERO, moderngl.ONE)
        try:
            self.program.draw(target, {"font": self.font, "text": self.text, "history": self.history},
                              head=self.head, text_len=self._text_len, lo=float(params.lo), hi=float(params.hi),
                              opacity=float(params.opacity), gain=float(gain),
                              current=float(self.current) if self.current is not None else float("nan"),
                              glyph_count=float(len(GLYPHS)), cell_aspect=float(self.cell_aspect), panel_px=(float(w), float(h)))
        finally:
            ctx.disable(moderngl.BLEND)
            target.viewport = (0, 0, self.width, self.height)

    def reload_changed(self) -> None:
        self.program.maybe_reload()

    def release(self) -> None:
        for tex in (self.font, self.history, self.text):
            tex.release()
        self.program.release()
