"""The one typed parameter object.

Every live parameter of the engine is a field of a group dataclass below; `Params` holds one instance of each
group. Instances are frozen: a write builds a new `Params` (copy-on-write), so the render loop's
`store.snapshot()` is one atomic reference read and the snapshot never changes under it (the NVlabs
AsyncRenderer pattern). Writers (OSC thread, temperature mappings, CLI, config file) go through
`ParamStore.set`, which validates type, range and choices and raises `ParamError` with a one-line message.

Addresses: every field is reachable by the path "<group>.<name>" (OSC: /engine/<group>/<name>).

Adding a parameter: add a field to a group with `param(...)`. Its annotation is its type; supported types are
int, float, bool, str (free text, or an enum when `choices` is given) and tuple[float, ...] (a vector).
"""

from __future__ import annotations

import dataclasses
import math
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, get_type_hints


class ParamError(ValueError):
    """A rejected value: the message names the parameter, the value and what is accepted."""


def param(
    default: Any,
    doc: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    length: int | None = None,
    max_length: int | None = None,
) -> Any:
    """Declare a parameter field. lo/hi bound numbers (None = unbounded); `choices` makes a str an enum;
    `length` fixes a vector's length (None = any length up to `max_length`)."""
    meta = dict(doc=doc, lo=lo, hi=hi, choices=choices, length=length, max_length=max_length)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------------------------------------
# Groups. Each group is a frozen dataclass; keep fields documented: `engine info --params`, /engine/list and the
# README's parameter table are generated from these declarations.
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latent:
    """Where a StyleGAN-like generator is in its latent space, and how it moves."""

    seed: int = param(0, "Seed of the base latent: z = np.random.RandomState(seed).randn(1, z_dim) (NVlabs).", lo=0, hi=2**32 - 1)
    psi: float = param(1.0, "Truncation psi: w = w_avg + psi * (w - w_avg). Any float (not clamped to 0..1; within \u00b11e6): 0 = the average image, >1 exaggerates, <0 inverts.")
    truncation_cutoff: int = param(0, "Apply truncation to the first N ws only; 0 = all ws.", lo=0, hi=64)
    noise_mode: str = param("const", "Per-layer noise inputs: const (stored noise, stable), random (new each frame), none.", choices=("const", "random", "none"))
    noise_strength: float = param(1.0, "Multiplier on every layer's learned noise strength.", lo=0.0, hi=100.0)
    motion: str = param("walk", "Latent motion: walk (smooth noise-driven walk around the seed), loop (through loop_seeds in loop_period seconds, back to the first), still.", choices=("walk", "still", "loop"))
    speed: float = param(0.15, "Speed of the latent walk: a walk component of angular frequency 1 turns speed cycles per second; changing it mid-show does not jump.", lo=0.0, hi=20.0)
    amplitude: float = param(0.6, "How far the walk strays from the seed's z: z = sqrt(1-a^2) z_seed + a n(t), keeping z ~ N(0, I).", lo=0.0, hi=1.0)
    z: tuple[float, ...] = param((), "A raw z (z_dim floats) that replaces the seed's; empty = use the seed.", max_length=4096)
    loop_seeds: tuple[float, ...] = param((), "motion=loop: the seeds visited in order, e.g. 1,7,42 (whole numbers); empty = seed, seed+1, seed+2, seed+3.", max_length=64)
    loop_interp: str = param("slerp", "motion=loop: how z moves between two seeds: slerp (along the great circle; keeps z's norm typical) or lerp (straight line).", choices=("slerp", "lerp"))
    loop_period: float = param(0.0, "Perfect loop, in seconds. motion=loop: one pass through all loop_seeds (0 = 4 s per seed). motion=walk: the walk repeats exactly with this period (0 = never repeats; speed sets how much happens within a period).", lo=0.0, hi=86400.0)


@dataclass(frozen=True)
class Stylegan:
    """StyleGAN tools: class label, layer view, layer edits, network blending, feature-map bending, saved latents.
    Text fields are parsed by the generator; a malformed entry is skipped with a warning, never stops the show."""

    class_index: int = param(-1, "Class label of a conditional network (c_dim > 0): one-hot index 0..c_dim-1; -1 = no label (all zeros). Ignored by unconditional networks.", lo=-1, hi=1_000_000)
    layer: str = param("", "Layer view: show this synthesis layer's feature maps instead of the image (a name listed by `engine info --generator`, e.g. b32.conv1, b64.torgb, L5_84_1024); empty = the image.")
    layer_channels: tuple[float, ...] = param((), "Layer view: feature-map indices shown as R,G,B (3 values) or grey (1 value), taken modulo the layer's channel count; empty = layer_mode.", max_length=3)
    layer_mode: str = param("pca", "Layer view when layer_channels is empty: pca (the layer's 3 principal components as RGB, fixed when the layer is chosen) or mean (mean of all maps, grey). Either is normalised per frame.", choices=("pca", "mean"))
    edits: str = param("", "Layer edits, ';'-separated: PARAM *= EXPR or PARAM += EXPR, e.g. 'b16.conv0.affine.weight *= 1 + 0.5*sin(t); b8.conv1.bias += 0.2' (a conv's own weight is demodulated: a uniform positive scale of it changes nothing). PARAM is a parameter name (synthesis. may be left out; * ? wildcards allowed); EXPR is a safe formula of t (see README). Originals are kept: clearing restores them exactly.")
    blend: float = param(0.0, "Network blending: weights = lerp(network, blend network, blend) on the parameters selected by blend_layers. Not clamped: <0 and >1 extrapolate. 0 = this network.")
    blend_layers: str = param("synthesis", "What blend applies to: space/comma-separated groups or patterns (mapping, synthesis, b4, b16.conv0, b64.*, L3_*), each optionally with its own amount as GROUP=AMOUNT (e.g. 'b4=0 b8=0.5 b16=1.5'); later entries win.")
    blend_file: str = param("", "Second network for blending (a .pkl/.pt/.safetensors of the same architecture); loaded once when the path changes (a hitch of a few hundred ms on the render thread); empty = the generator option blend=PATH or none.")
    bend: str = param("", "Feature-map bending, ';'-separated: LAYER OP(ARGS) [CHANNELS], e.g. 'b32.conv1 rotate(30*t) [0-63]; b16.conv0 translate(0.1, 0); b64.conv1 erode(1) [25%]'. OPs: translate(dx,dy) (fractions of the map), rotate(deg), scale(s), erode(r), dilate(r), invert(), threshold(v), multiply(k), ablate(). CHANNELS: all (default), indices/ranges '0 3 8-15', or 'P%' (a fixed random P% of maps). ARGS are formulas of t.")
    resolution_drop: int = param(0, "StyleGAN2 (skip architecture) render scale: stop before the last N synthesis blocks and upscale the coarse image they have reached (native/2^N) on the device; each step saves the costliest block. The governor's knob for StyleGAN2. 0 = full resolution.", lo=0, hi=4)
    translate_x: float = param(0.0, "StyleGAN3 only: horizontal translation of the input Fourier features, in image widths (NVlabs gen_video convention). Ignored by StyleGAN2.")
    translate_y: float = param(0.0, "StyleGAN3 only: vertical translation of the input, in image heights.")
    rotate: float = param(0.0, "StyleGAN3 only: rotation of the input, in degrees.")
    w_file: str = param("", "A saved latent (.npz with 'w' as written by `engine project` / NVlabs projector, or .pt) used instead of the mapping network's ws; psi still pulls it towards w_avg. Loaded once per path; empty = off.")
    network: str = param("", "Live network swap (seed 003's load button): a network file (.pkl/.pt/.safetensors) loaded on a background thread while the current network keeps rendering, then crossfaded in over swap_seconds. A file that cannot be loaded: one log line, the show goes on. Empty = no change (the show's network stays).")
    set_list: str = param("", "Set list: a folder of network files (.pkl/.pt/.safetensors, in name order) that network_index picks from; read again when network_index changes.")
    network_index: int = param(-1, "Set list: swap to entry N of set_list (counted from 0, modulo the number of networks), like sending its path to network; -1 = off.", lo=-1, hi=1_000_000)
    swap_seconds: float = param(2.0, "Crossfade from the old network's image to the new one's after a swap, in seconds of show time; 0 = cut.", lo=0.0, hi=600.0)


@dataclass(frozen=True)
class Fx:
    """The GLSL stage: perturbation of the new frame, then feedback blending with the previous output."""

    perturb: float = param(0.0, "Master amount of the perturb shader (animated displacement + brightness/hue jitter); 0 = exact identity.", lo=0.0, hi=1.0)
    perturb_scale: float = param(4.0, "Spatial frequency of the displacement noise (cells across the frame).", lo=0.1, hi=256.0)
    perturb_speed: float = param(1.0, "How fast the displacement noise evolves (per second).", lo=0.0, hi=50.0)
    displace: float = param(0.03, "Displacement at perturb=1, in fractions of the frame.", lo=0.0, hi=1.0)
    brightness_jitter: float = param(0.15, "Brightness jitter at perturb=1 (+-, linear).", lo=0.0, hi=1.0)
    hue_jitter: float = param(0.1, "Hue rotation jitter at perturb=1, in turns (+-).", lo=0.0, hi=1.0)
    feedback: float = param(0.1, "Feedback blend alpha: out = mix(new frame, previous output, feedback) (seed 001 uses 0.1).", lo=0.0, hi=1.0)


@dataclass(frozen=True)
class Diffusion:
    """Few-step diffusion (--generator diffusion:MODEL): prompt, denoising schedule, guidance, seed, stabilisers.
    Every field is live: changing one never reloads or rebuilds anything (buffers are sized for 4 steps)."""

    prompt: str = param("an abstract painting of flowing light, vivid colours", "Text prompt; its embedding is computed only when the text changes.")
    prompt_b: str = param("", "Second prompt, blended with `prompt` by prompt_mix (linear mix of the two embeddings); empty = unused.")
    prompt_mix: float = param(0.0, "Blend from prompt (0) to prompt_b (1).", lo=0.0, hi=1.0)
    prompt_list: str = param("", "Prompt list: a text file (one prompt per line; blank lines and # comments skipped; re-read when the file changes) or prompts separated by ' | '. When set, the list drives prompt, prompt_b and prompt_mix (values sent to those are overridden); empty = off.")
    prompt_index: int = param(0, "Prompt list: the entry shown, counted from 0 (modulo the list's length); a change fades to the new entry over prompt_fade.", lo=0, hi=1_000_000)
    prompt_cycle: float = param(0.0, "Prompt list: move on one entry every N seconds of show time (an unattended installation); 0 = only prompt_index moves it.", lo=0.0, hi=86400.0)
    prompt_fade: float = param(2.0, "Prompt list: seconds of crossfade (a blend of the two embeddings) from one entry to the next; 0 = cut.", lo=0.0, hi=600.0)
    negative_prompt: str = param("", "Negative prompt: the unconditional side of guidance with cfg=full or initialize (guidance > 1 only).")
    mode: str = param("img2img", "img2img: denoise the source image; txt2img: start from the seed's noise and ignore the source.", choices=("img2img", "txt2img"))
    strength: float = param(0.5, "img2img: how far the source is noised before denoising (first timestep = 1000*strength - 1); 1 = the source barely shows.", lo=0.01, hi=1.0)
    steps: int = param(1, "Denoising steps per image. With denoise_batch all steps share one UNet call and the output lags steps-1 frames.", lo=1, hi=4)
    t_index_list: tuple[float, ...] = param((), "Explicit StreamDiffusion t_index_list: indices 0..49 into its 50-step grid (timestep 999 - 20*i), e.g. 32 45; overrides strength and steps. Empty = use strength/steps.", max_length=4)
    denoise_batch: bool = param(True, "StreamDiffusion's denoising batch: the k steps of k consecutive frames run as one UNet batch (throughput; adds steps-1 frames of lag). 0 = run the steps one after the other on each frame (no lag).")
    guidance: float = param(1.0, "Guidance scale; <= 1 turns guidance off (right for sd-turbo/sdxl-turbo; LCM-LoRA likes 1-2).", lo=0.0, hi=20.0)
    cfg: str = param("self", "Where guidance gets its unconditional prediction: none; full (a second UNet batch with the negative prompt, 2x cost); self (StreamDiffusion's residual CFG: from the injected noise, no extra cost); initialize (RCFG with one real negative pass for the first step).", choices=("none", "full", "self", "initialize"))
    delta: float = param(1.0, "RCFG delta: scale of the virtual residual noise used as the unconditional prediction with cfg=self/initialize.", lo=0.0, hi=5.0)
    renoise: str = param("fixed", "How a latent is noised again between steps: fixed (the seed's fixed noise; StreamDiffusion, LCM) or predicted (the UNet's own noise estimate; Euler/DDIM, what diffusers does for sd-turbo).", choices=("fixed", "predicted"))
    seed: int = param(0, "Seed of the fixed noise (a torch generator on the generator's device).", lo=0, hi=2**32 - 1)
    seed_every: int = param(0, "Add 1 to the seed every N frames (seed 001 uses 20); 0 = off.", lo=0, hi=1_000_000)
    lora_scale: float = param(1.0, "Weight of the LoRA loaded with the generator option lora=...; ignored without one.", lo=0.0, hi=4.0)
    similarity_threshold: float = param(0.0, "Skip the UNet and repeat the last output when the source's cosine similarity to the last rendered source is above this; skips are probabilistic between the threshold and 1 (StreamDiffusion uses 0.98). 0 = off.", lo=0.0, hi=1.0)
    similarity_max_skip: int = param(10, "The similarity filter skips at most this many frames in a row.", lo=0, hi=10_000)
    latent_smoothing: float = param(0.0, "Anti-flicker: the output latent is mix(new, previous output latent, smoothing) before decoding; 0 = off.", lo=0.0, hi=0.99)
    model: str = param("", "Live model swap: a local diffusers folder (or a hub id in the local Hugging Face cache) loaded on a background thread with the show's generator options while the current model keeps rendering, then crossfaded in over swap_seconds. Empty = no change.")
    swap_seconds: float = param(2.0, "Crossfade from the old model's image to the new one's after a model swap, in seconds of show time; 0 = cut.", lo=0.0, hi=600.0)


@dataclass(frozen=True)
class Source:
    """The image an img2img generator (diffusion) transforms each frame. Switchable live."""

    mode: str = param("feedback", "feedback: the previous output after the perturb shader (seed 001); camera; ndi; image; noise.", choices=("feedback", "camera", "ndi", "image", "noise"))
    camera: str = param("0", "mode=camera: a device index (0, 1, ...) or a video file or stream URL (a file plays looped at its own frame rate).")
    ndi: str = param("", "mode=ndi: NDI source name as NDI tools list it, e.g. 'HOST (OBS)'; empty = the first one found.")
    image: str = param("", "mode=image: an image file, loaded once per path.")
    noise_scale: float = param(8.0, "mode=noise: cells across the frame of the smooth noise image (higher = finer grain); it drifts to a new field every second.", lo=1.0, hi=4096.0)
    fit: str = param("cover", "How a source of another aspect ratio fills the generator's frame: cover (centre crop) or stretch.", choices=("cover", "stretch"))


@dataclass(frozen=True)
class Output:
    """The show output: how the generator's image is framed in the output size (--size WxH), the master fader,
    freeze and pacing. Applied on the GPU after the generator; none of it calls or rebuilds the generator."""

    fit: str = param("cover", "How the generator's image fills an output of another aspect: cover (fills it, cropping the long side), contain (all of it, letterboxed in background), stretch (fills it, aspect ignored). Diffusion renders at the output's aspect already.", choices=("cover", "contain", "stretch"))
    zoom: float = param(1.0, "Magnification of the framed image (2 = twice as large, centred on the pan point); below 1 it shrinks into background.", lo=0.1, hi=16.0)
    pan_x: float = param(0.0, "Horizontal position of the view over the part of the image not shown: -1 = left edge, 1 = right edge (needs cover cropping or zoom > 1).", lo=-1.0, hi=1.0)
    pan_y: float = param(0.0, "Vertical position of the view: -1 = top edge, 1 = bottom edge.", lo=-1.0, hi=1.0)
    background: tuple[float, ...] = param((0.0, 0.0, 0.0), "Colour around a contained or shrunk image: R,G,B in 0..1.", length=3)
    freeze: bool = param(False, "Hold the last frame: the generator and the effects are not run (costs nothing) while every sink keeps publishing that frame at the show rate, so receivers never time out. 0 = run; the generator resumes where it stopped (its time is paused too).")
    blackout: bool = param(False, "Fade to black over fade_seconds (1), and back (0). The show keeps rendering underneath.")
    fade_seconds: float = param(1.0, "Duration of a blackout fade, in seconds of show time; 0 = cut.", lo=0.0, hi=600.0)
    opacity: float = param(1.0, "Master level multiplied into the output (0 = black, 1 = full), on top of blackout.", lo=0.0, hi=1.0)
    fps: float = param(30.0, "Live frame rate the show is paced to (starts at --fps); 0 = as fast as it can. An offline render (only file/null sinks) keeps --fps: it is the recording's rate.", lo=0.0, hi=1000.0)


@dataclass(frozen=True)
class Map:
    """The temperature mapping's master switch (seed 000's temperature/camera mode switch: one address)."""

    enabled: bool = param(True, "1: the --map file drives its parameters (temperature maps and LFOs); 0: they hold where they are and are the performer's. Re-enabled, each glides from where it is to its mapped value over glide_seconds.")
    glide_seconds: float = param(2.0, "How long the glide back to the mapped values takes when map.enabled returns to 1 (a one-pole glide that is ~95% there after this long); 0 = jump.", lo=0.0, hi=600.0)


@dataclass(frozen=True)
class Overlay:
    """The temperature drawn into the picture (seed 000): the live value as a number and a rolling graph of the last
    `seconds`, colour-mapped from cool to hot, drawn over the output after the effects (shaders/overlay.frag)."""

    enabled: bool = param(False, "Draw the overlay. Off, the output is bit-identical to an engine without one.")
    x: float = param(0.03, "Left edge of the overlay panel, in output widths from the left.", lo=0.0, hi=1.0)
    y: float = param(0.03, "Top edge of the panel, in output heights from the top.", lo=0.0, hi=1.0)
    width: float = param(0.4, "Panel width, in output widths.", lo=0.02, hi=1.0)
    height: float = param(0.22, "Panel height, in output heights (the number takes the top 40%, the graph the rest).", lo=0.02, hi=1.0)
    opacity: float = param(0.85, "How strongly the panel covers the picture (0 = invisible, 1 = opaque).", lo=0.0, hi=1.0)
    seconds: float = param(60.0, "How many seconds of temperature history the graph shows.", lo=1.0, hi=3600.0)
    lo: float = param(30.0, "Temperature (degrees C) at the graph's bottom and the cool end of the colours.", lo=-50.0, hi=200.0)
    hi: float = param(90.0, "Temperature at the graph's top and the hot end of the colours.", lo=-50.0, hi=200.0)


@dataclass(frozen=True)
class Params:
    """All live parameters, grouped. Access: snap.latent.psi, snap.fx.feedback."""

    latent: Latent = field(default_factory=Latent)
    stylegan: Stylegan = field(default_factory=Stylegan)
    fx: Fx = field(default_factory=Fx)
    diffusion: Diffusion = field(default_factory=Diffusion)
    source: Source = field(default_factory=Source)
    output: Output = field(default_factory=Output)
    map: Map = field(default_factory=Map)
    overlay: Overlay = field(default_factory=Overlay)


# ----------------------------------------------------------------------------------------------------------------
# Specs: a flat, typed description of every parameter, derived from the dataclasses above.
# ----------------------------------------------------------------------------------------------------------------

_SCALARS = {int: "int", float: "float", bool: "bool", str: "str"}

# "Not clamped" floats (psi, blend, translate, rotate) and vector elements still have to fit a float32 network:
# psi = 1e39 overflows torch's float32 lerp and would stop the show. Beyond +-1e6 no image changes meaningfully.
UNCLAMPED_LIMIT = 1e6


def round_half_up(x: float) -> int:
    """The one float -> int rounding of the control layer (OSC, config, mappings): 2.5 -> 3, -2.5 -> -2."""
    return int(math.floor(x + 0.5))


@dataclass(frozen=True)
class ParamSpec:
    group: str
    name: str
    kind: str  # "int" | "float" | "bool" | "str" | "enum" | "vector"
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    length: int | None = None
    max_length: int | None = None

    @property
    def path(self) -> str:
        return f"{self.group}.{self.name}"

    @property
    def address(self) -> str:
        return f"/engine/{self.group}/{self.name}"

    def range_text(self) -> str:
        if self.kind == "enum":
            return "|".join(self.choices or ())
        if self.kind == "vector":
            return f"{self.length} floats" if self.length else f"up to {self.max_length} floats"
        if self.kind == "bool":
            return "0|1"
        if self.kind == "float" and self.lo == -UNCLAMPED_LIMIT and self.hi == UNCLAMPED_LIMIT:
            return "-1e6..1e6"
        if self.lo is None and self.hi is None:
            return "any" if self.kind != "str" else "text"
        lo = "-inf" if self.lo is None else _fmt(self.lo)
        hi = "inf" if self.hi is None else _fmt(self.hi)
        return f"{lo}..{hi}"

    # -- validation ------------------------------------------------------------------------------------------
    def coerce(self, value: Any) -> Any:
        """Validate and convert `value` (from OSC, TOML, the CLI or a mapping) to this parameter's type."""
        kind = self.kind
        if kind == "float":
            x = self._snap_to_limit(_number(self, value))
            return float(self._check_range(x))
        if kind == "int":
            x = self._snap_to_limit(_number(self, value))
            # Control surfaces (TouchDesigner, TouchOSC) send floats only: round them to the nearest int.
            return int(self._check_range(round_half_up(x)))
        if kind == "bool":
            if isinstance(value, str):
                v = value.strip().lower()
                if v in ("1", "true", "on", "yes"):
                    return True
                if v in ("0", "false", "off", "no"):
                    return False
                raise ParamError(f"{self.path}: {value!r} is not a boolean; send 0/1, true/false or on/off")
            x = _number(self, value)
            if x not in (0.0, 1.0):
                raise ParamError(f"{self.path}: {value!r} is not a boolean; send 0 or 1")
            return bool(x)
        if kind == "enum":
            choices = self.choices or ()
            if isinstance(value, str):
                if value in choices:
                    return value
                raise ParamError(f"{self.path}: {value!r} is not one of {'|'.join(choices)}")
            # Numeric index, for control surfaces that can only send numbers.
            x = _number(self, value)
            i = int(round(x))
            if 0 <= i < len(choices) and abs(x - i) < 1e-6:
                return choices[i]
            raise ParamError(f"{self.path}: index {value!r} is out of range; send one of {'|'.join(choices)} or 0..{len(choices) - 1}")
        if kind == "str":
            if not isinstance(value, str):
                raise ParamError(f"{self.path}: expected text, got {type(value).__name__} {value!r}")
            if len(value) > 4096:
                raise ParamError(f"{self.path}: text of {len(value)} characters is too long (max 4096)")
            return value
        if kind == "vector":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = (value,)
            if not isinstance(value, (list, tuple)):
                raise ParamError(f"{self.path}: expected a list of floats, got {type(value).__name__}")
            n = len(value)
            if self.length is not None and n not in (0, self.length):
                raise ParamError(f"{self.path}: expected {self.length} floats, got {n}")
            if self.max_length is not None and n > self.max_length:
                raise ParamError(f"{self.path}: {n} floats is too many (max {self.max_length})")
            out = tuple(_number(self, v) for v in value)
            if any(abs(v) > UNCLAMPED_LIMIT for v in out):
                raise ParamError(f"{self.path}: every value must lie within \u00b11e6 (got {_fmt(max(out, key=abs))})")
            return out
        raise AssertionError(kind)

    def _snap_to_limit(self, x: float) -> float:
        """TouchDesigner and Max send float32: a limit arrives one float32 step off (0.01 as 0.0099999998, the seed
        maximum 4294967295 as 4294967296). Within one float32 step of a limit is that limit."""
        for limit in (self.lo, self.hi):
            if limit is not None and x != limit and abs(x - limit) <= _float32_step(limit):
                return float(limit)
        return x

    def _check_range(self, x: float) -> float:
        # The received value with all its digits: `_fmt` would print 0.0099999998 as 0.01, "below the minimum 0.01".
        if self.lo is not None and x < self.lo:
            raise ParamError(f"{self.path}: {x:.10g} is below the minimum {_fmt(self.lo)} (range {self.range_text()})")
        if self.hi is not None and x > self.hi:
            raise ParamError(f"{self.path}: {x:.10g} is above the maximum {_fmt(self.hi)} (range {self.range_text()})")
        return x


def _float32_step(v: float) -> float:
    """The spacing of float32 numbers around `v` (one unit in the last place)."""
    f = struct.unpack("<f", struct.pack("<f", v))[0]
    return math.ldexp(1.0, math.frexp(abs(f) or 1e-38)[1] - 24)


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _number(spec: ParamSpec, value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        x = float(value)
    elif isinstance(value, str):
        try:
            x = float(value)
        except ValueError:
            raise ParamError(f"{spec.path}: {value!r} is not a number") from None
    else:
        raise ParamError(f"{spec.path}: expected a number, got {type(value).__name__}")
    if not math.isfinite(x):
        raise ParamError(f"{spec.path}: {value!r} is not a finite number")
    return x


def _build_specs() -> tuple[ParamSpec, ...]:
    specs = []
    for gfield in dataclasses.fields(Params):
        group_cls = gfield.default_factory  # type: ignore[misc]
        hints = get_type_hints(group_cls)
        for f in dataclasses.fields(group_cls):
            meta = f.metadata
            t = hints[f.name]
            if meta.get("choices"):
                kind = "enum"
            elif t in _SCALARS:
                kind = _SCALARS[t]
            elif getattr(t, "__origin__", None) is tuple:
                kind = "vector"
            else:
                raise TypeError(f"parameter {gfield.name}.{f.name}: unsupported type {t}")
            lo, hi = meta.get("lo"), meta.get("hi")
            if kind == "float":
                lo = -UNCLAMPED_LIMIT if lo is None else lo
                hi = UNCLAMPED_LIMIT if hi is None else hi
            specs.append(
                ParamSpec(
                    group=gfield.name, name=f.name, kind=kind, default=f.default, doc=meta.get("doc", ""),
                    lo=lo, hi=hi, choices=meta.get("choices"),
                    length=meta.get("length"), max_length=meta.get("max_length"),
                )
            )
    return tuple(specs)


SPECS: tuple[ParamSpec, ...] = _build_specs()
SPEC_BY_PATH: dict[str, ParamSpec] = {s.path: s for s in SPECS}


def spec_for(path: str) -> ParamSpec:
    """Look a parameter up by "group.name" (or "/engine/group/name")."""
    key = path
    if key.startswith("/engine/"):
        key = key[len("/engine/"):].replace("/", ".")
    spec = SPEC_BY_PATH.get(key)
    if spec is None:
        raise ParamError(f"unknown parameter {path!r}; `engine info --params` lists them all")
    return spec


def get_value(params: Params, path: str) -> Any:
    spec = spec_for(path)
    return getattr(getattr(params, spec.group), spec.name)


def with_values(params: Params, values: dict[str, Any]) -> Params:
    """A new Params with validated `values` ({"group.name": value}) applied. Raises ParamError on the first bad one."""
    by_group: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        spec = spec_for(path)
        by_group.setdefault(spec.group, {})[spec.name] = spec.coerce(value)
    changes = {g: dataclasses.replace(getattr(params, g), **kv) for g, kv in by_group.items()}
    return dataclasses.replace(params, **changes)


def iter_values(params: Params) -> Iterator[tuple[ParamSpec, Any]]:
    for spec in SPECS:
        yield spec, getattr(getattr(params, spec.group), spec.name)


class ParamStore:
    """Thread-safe holder of the current Params. Writers: any thread. Reader: the render loop, once a frame.

    Latest value wins; a write is validated before it is visible, so a snapshot is always a valid Params.
    Listeners (e.g. the control recorder) are called after each accepted write, outside the lock.
    """

    def __init__(self, params: Params | None = None):
        self._params = params or Params()
        self._lock = threading.Lock()
        self._version = 0
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def snapshot(self) -> Params:
        # A single reference read: atomic in CPython, and Params is immutable.
        return self._params

    @property
    def version(self) -> int:
        """Increments on every accepted write (cheap change detection for consumers)."""
        return self._version

    def get(self, path: str) -> Any:
        return get_value(self._params, path)

    def set(self, path: str, value: Any) -> Any:
        """Validate and apply one value; returns the value as stored. Raises ParamError."""
        return self.update({path: value})[spec_for(path).path]

    def update(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate and apply several values atomically (all or none). Returns {path: stored value}."""
        with self._lock:
            new = with_values(self._params, values)
            self._params = new
            self._version += 1
        stored = {spec_for(p).path: get_value(new, p) for p in values}
        for listener in list(self._listeners):
            listener(stored)
        return stored

    def replace(self, params: Params) -> None:
        """Swap in a whole Params (preset load, replay)."""
        with self._lock:
            self._params = params
            self._version += 1

    def add_listener(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[dict[str, Any]], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)
