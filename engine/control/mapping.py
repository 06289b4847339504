"""Mappings: inputs (temperature, power, ...) and LFOs drive parameters. `--map FILE.toml`, hot-reloaded.

File format (every key but `source`/`param` has a default):

    [[map]]                        # one per driven parameter
    source = "temperature"         # temperature | power | sm_clock | utilization | throttle (see --thermal)
    param = "latent.psi"           # an int or float parameter
    in = [40.0, 85.0]              # input range (e.g. degrees C); may be descending to invert
    out = [0.4, 1.2]               # output range, inside the parameter's own range
    curve = "linear"               # linear | exponential | smoothstep | steps
    exponent = 3.0                 # exponential: f(u) = (e^(exponent u) - 1) / (e^exponent - 1); < 0 bends the other way
    steps = 4                      # steps: number of levels, f(u) = min(floor(u steps), steps - 1) / (steps - 1)
    smoothing = 2.0                # one-pole time constant in seconds (0 = none), frame-rate independent
    clamp = true                   # clamp the input to `in` (false: linear/exponential extrapolate; the
                                   # output is always clamped to the parameter's range)

    [[lfo]]                        # any number per parameter; they add to the parameter's base value
    param = "latent.speed"
    shape = "sine"                 # sine | triangle | noise (smooth value noise, `seed` picks the pattern)
    period = 8.0                   # seconds per cycle (noise: seconds between random knots)
    phase = 0.0                    # in cycles, 0..1
    depth = 0.05                   # amplitude in parameter units: adds depth * wave, wave in [-1, 1]
    seed = 0

Per frame, for a parameter p: u = (x - in0) / (in1 - in0) (clamped to 0..1 if clamp; always for smoothstep
and steps), y = out0 + f(u) (out1 - out0), smoothed y_n = y_{n-1} + (y - y_{n-1}) (1 - exp(-dt / smoothing)),
then value = y + sum of LFOs(t), clamped to p's range and rounded to the nearest integer for int parameters.
Integer parameters are smoothed before rounding, so a slow temperature drift still steps through every value.

OSC and mapped parameters: override until released. A value written to a mapped parameter by anything but
the mapping (OSC, a preset load) takes over from the mapping until /engine/release/<group>/<name> (or
/engine/release for all); on release the mapping glides back from that value with its smoothing. For an
LFO, a written value becomes the new base the LFO adds to. When there is no reading yet (or the field is
unsupported), a mapped parameter keeps its value.

Hot reload: the file is re-read when its bytes change (checked twice a second on a watcher thread). A bad
file is reported as file:line and the last good mapping stays in force.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.clock import FrameTime
from engine.control import Controller
from engine.control.thermal import FIELDS
from engine.errors import UsageError
from engine.params import ParamError, ParamSpec, ParamStore, get_value, round_half_up, spec_for
from engine.paths import user_path

log = logging.getLogger("engine.control.mapping")

CURVES = ("linear", "exponential", "smoothstep", "steps")
#: Bounds that keep every rule finite: e^(exponent u) overflows past exponent 709 (and an extrapolating input makes u
#: large), t / period overflows for denormal periods. Both checked when the file is read, so a hot reload that breaks
#: them keeps the last good mapping.
MAX_EXPONENT = 50.0
MIN_LFO_PERIOD = 1e-3
SHAPES = ("sine", "triangle", "noise")
MAP_KEYS = {"source", "param", "in", "out", "curve", "exponent", "steps", "smoothing", "clamp"}
LFO_KEYS = {"param", "shape", "period", "phase", "depth", "seed"}


# ----------------------------------------------------------------------------------------------------------------
# The math (pure functions: the tests check them against their formulas)
# ----------------------------------------------------------------------------------------------------------------


def curve_value(curve: str, u: float, *, exponent: float = 3.0, steps: int = 4) -> float:
    """f(u) for a normalised input u (0..1 maps to out0..out1)."""
    if curve == "linear":
        return u
    if curve == "exponential":
        if abs(exponent) < 1e-9:
            return u
        # Unclamped inputs extrapolate: cap the argument so a far input gives a huge value (clamped by the
        # parameter's own bounds), never an OverflowError.
        return math.expm1(max(-700.0, min(700.0, exponent * u))) / math.expm1(exponent)
    if curve == "smoothstep":
        u = min(1.0, max(0.0, u))
        return u * u * (3.0 - 2.0 * u)
    if curve == "steps":
        u = min(1.0, max(0.0, u))
        return min(math.floor(u * steps), steps - 1) / (steps - 1)
    raise ValueError(curve)


def one_pole(previous: float, target: float, dt: float, tau: float) -> float:
    """Exponential smoothing with time constant tau seconds. Frame-rate independent: two steps of dt give the
    same result as one step of 2 dt (for a constant target)."""
    if tau <= 0 or dt <= 0:
        return target if tau <= 0 else previous
    return previous + (target - previous) * (1.0 - math.exp(-dt / tau))


def _hash01(seed: int, i: int) -> float:
    """A deterministic pseudo-random value in [-1, 1] for knot i (splitmix64): same seed, same noise, any run."""
    z = (seed * 0x9E3779B97F4A7C15 + i * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    return (z >> 11) / float(1 << 52) - 1.0


def lfo_wave(shape: str, x: float, seed: int = 0) -> float:
    """The waveform at x cycles, in [-1, 1]. sine and triangle start at 0 rising; noise is smooth value noise."""
    if shape == "sine":
        return math.sin(2.0 * math.pi * x)
    if shape == "triangle":
        return 1.0 - 4.0 * abs(((x + 0.25) % 1.0) - 0.5)
    if shape == "noise":
        i = math.floor(x)
        f = x - i
        w = f * f * (3.0 - 2.0 * f)
        a, b = _hash01(seed, i), _hash01(seed, i + 1)
        return a + (b - a) * w
    raise ValueError(shape)


# ----------------------------------------------------------------------------------------------------------------
# Rules and the file parser
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapRule:
    source: str
    spec: ParamSpec
    in_lo: float
    in_hi: float
    out_lo: float
    out_hi: float
    curve: str = "linear"
    exponent: float = 3.0
    steps: int = 4
    smoothing: float = 0.0
    clamp: bool = True
    line: int = 0

    def shape(self, x: float) -> float:
        """Input -> output before smoothing."""
        u = (x - self.in_lo) / (self.in_hi - self.in_lo)
        if self.clamp:
            u = min(1.0, max(0.0, u))
        return self.out_lo + curve_value(self.curve, u, exponent=self.exponent, steps=self.steps) * (self.out_hi - self.out_lo)


@dataclass(frozen=True)
class LfoRule:
    spec: ParamSpec
    shape: str = "sine"
    period: float = 1.0
    phase: float = 0.0
    depth: float = 0.0
    seed: int = 0
    line: int = 0

    def value(self, t: float) -> float:
        return self.depth * lfo_wave(self.shape, t / self.period + self.phase, self.seed)


@dataclass(frozen=True)
class MappingSet:
    file: str
    maps: tuple[MapRule, ...] = ()
    lfos: tuple[LfoRule, ...] = ()
    # param path -> (its MapRule or None, its LFOs)
    targets: dict[str, tuple[MapRule | None, tuple[LfoRule, ...]]] = field(default_factory=dict)


class MappingError(ValueError):
    def __init__(self, file: str, line: int, message: str):
        super().__init__(f"{file}:{line}: {message}")
        self.file, self.line, self.message = file, line, message


def _key_lines(text: str) -> dict[tuple[str, int], tuple[int, dict[str, int]]]:
    """Where each [[map]]/[[lfo]] table and each of its keys is, by line (tomllib does not keep positions)."""
    tables: dict[tuple[str, int], tuple[int, dict[str, int]]] = {("", 0): (1, {})}
    counts: dict[str, int] = {}
    cur: tuple[str, int] | None = ("", 0)
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        m = re.match(r"^\[\[\s*([A-Za-z0-9_-]+)\s*\]\]", s)
        if m:
            kind = m.group(1)
            idx = counts.get(kind, 0)
            counts[kind] = idx + 1
            cur = (kind, idx)
            tables[cur] = (n, {})
            continue
        if s.startswith("["):
            cur = (s.strip("[] \t").split("]")[0], -1)
            tables.setdefault(cur, (n, {}))
            continue
        m = re.match(r'^("[^"]*"|[A-Za-z0-9_-]+)\s*=', s)
        if m and cur is not None:
            tables[cur][1].setdefault(m.group(1).strip('"'), n)
    return tables


def parse_mapping(text: str, file: str = "<mapping>") -> MappingSet:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"at line (\d+)", str(e))
        line = int(m.group(1)) if m else max(1, len(text.splitlines()))  # "(at end of document)": the last line
        raise MappingError(file, line, f"invalid TOML: {e}") from None
    lines = _key_lines(text)

    def where(kind: str, idx: int, key: str | None = None) -> int:
        header, keys = lines.get((kind, idx), (1, {}))
        return keys.get(key, header) if key else header

    for top in data:
        if top not in ("map", "lfo"):
            raise MappingError(file, where("", 0, top) if (("", 0) in lines and top in lines[("", 0)][1]) else where(top, -1),
                               f"unknown key {top!r}; a mapping file has [[map]] and [[lfo]] tables")
        if not isinstance(data[top], list):
            raise MappingError(file, where("", 0, top), f"{top!r} must be written as [[{top}]] tables")

    def num(kind: str, idx: int, body: dict, key: str, default: Any = None, *, integer: bool = False) -> Any:
        v = body.get(key, default)
        if v is None:
            raise MappingError(file, where(kind, idx), f"[[{kind}]] needs {key} = ...")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise MappingError(file, where(kind, idx, key), f"{key} must be {'a whole number' if integer else 'a number'}, got {v!r}")
        if not math.isfinite(v):
            raise MappingError(file, where(kind, idx, key), f"{key} must be finite")
        return v

    def pair(kind: str, idx: int, body: dict, key: str) -> tuple[float, float]:
        v = body.get(key)
        if v is None:
            raise MappingError(file, where(kind, idx), f"[[{kind}]] needs {key} = [low, high]")
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
            raise MappingError(file, where(kind, idx, key), f"{key} must be two finite numbers [low, high], got {v!r}")
        return float(v[0]), float(v[1])

    def target(kind: str, idx: int, body: dict) -> ParamSpec:
        name = body.get("param")
        if not isinstance(name, str):
            raise MappingError(file, where(kind, idx, "param" if "param" in body else None), "param must be a parameter name like \"latent.psi\"")
        try:
            spec = spec_for(name)
        except ParamError as e:
            raise MappingError(file, where(kind, idx, "param"), str(e)) from None
        if spec.kind not in ("int", "float"):
            raise MappingError(file, where(kind, idx, "param"), f"{spec.path} is a {spec.kind}; only int and float parameters can be mapped")
        return spec

    def choice(kind: str, idx: int, body: dict, key: str, options: tuple[str, ...], default: str) -> str:
        v = body.get(key, default)
        if v not in options:
            raise MappingError(file, where(kind, idx, key), f"{key} must be one of {', '.join(options)}, got {v!r}")
        return v

    maps: list[MapRule] = []
    seen: dict[str, int] = {}
    for i, body in enumerate(data.get("map", [])):
        if not isinstance(body, dict):
            raise MappingError(file, where("map", i), "[[map]] entries must be tables")
        unknown = sorted(set(body) - MAP_KEYS)
        if unknown:
            raise MappingError(file, where("map", i, unknown[0]), f"unknown key {unknown[0]!r} in [[map]]; keys: {', '.join(sorted(MAP_KEYS))}")
        source = choice("map", i, body, "source", FIELDS, "temperature")
        spec = target("map", i, body)
        if spec.path in seen:
            raise MappingError(file, where("map", i, "param"), f"{spec.path} is already mapped at line {seen[spec.path]}; one [[map]] per parameter")
        seen[spec.path] = where("map", i, "param")
        in_lo, in_hi = pair("map", i, body, "in")
        if in_lo == in_hi:
            raise MappingError(file, where("map", i, "in"), "in = [low, high] needs two different values")
        out_lo, out_hi = pair("map", i, body, "out")
        for v in (out_lo, out_hi):
            if (spec.lo is not None and v < spec.lo) or (spec.hi is not None and v > spec.hi):
                raise MappingError(file, where("map", i, "out"), f"out = [{out_lo:g}, {out_hi:g}] leaves {spec.path}'s range {spec.range_text()}")
        curve = choice("map", i, body, "curve", CURVES, "linear")
        exponent = float(num("map", i, body, "exponent", 3.0))
        if abs(exponent) > MAX_EXPONENT:
            raise MappingError(file, where("map", i, "exponent"), f"exponent must be within +-{MAX_EXPONENT:g} (steeper is a "
                               f"step: use curve = \"steps\"), got {exponent:g}")
        steps = int(num("map", i, body, "steps", 4, integer=True))
        if steps < 2:
            raise MappingError(file, where("map", i, "steps"), "steps must be at least 2")
        smoothing = float(num("map", i, body, "smoothing", 0.0))
        if smoothing < 0:
            raise MappingError(file, where("map", i, "smoothing"), "smoothing (seconds) must be >= 0")
        clamp = body.get("clamp", True)
        if not isinstance(clamp, bool):
            raise MappingError(file, where("map", i, "clamp"), f"clamp must be true or false, got {clamp!r}")
        maps.append(MapRule(source, spec, in_lo, in_hi, out_lo, out_hi, curve, exponent, steps, smoothing, clamp, where("map", i)))

    lfos: list[LfoRule] = []
    for i, body in enumerate(data.get("lfo", [])):
        if not isinstance(body, dict):
            raise MappingError(file, where("lfo", i), "[[lfo]] entries must be tables")
        unknown = sorted(set(body) - LFO_KEYS)
        if unknown:
            raise MappingError(file, where("lfo", i, unknown[0]), f"unknown key {unknown[0]!r} in [[lfo]]; keys: {', '.join(sorted(LFO_KEYS))}")
        spec = target("lfo", i, body)
        shape = choice("lfo", i, body, "shape", SHAPES, "sine")
        period = float(num("lfo", i, body, "period"))
        if period < MIN_LFO_PERIOD:
            raise MappingError(file, where("lfo", i, "period"), f"period (seconds) must be at least {MIN_LFO_PERIOD:g} "
                               f"(faster than the frame rate only aliases), got {period:g}")
        phase = float(num("lfo", i, body, "phase", 0.0))
        depth = float(num("lfo", i, body, "depth"))
        seed = int(num("lfo", i, body, "seed", 0, integer=True))
        lfos.append(LfoRule(spec, shape, period, phase, depth, seed, where("lfo", i)))

    targets: dict[str, tuple[MapRule | None, tuple[LfoRule, ...]]] = {}
    for r in maps:
        targets[r.spec.path] = (r, ())
    for l in lfos:
        rule, ls = targets.get(l.spec.path, (None, ()))
        targets[l.spec.path] = (rule, ls + (l,))
    return MappingSet(file=file, maps=tuple(maps), lfos=tuple(lfos), targets=targets)


def load_mapping(path: str | Path) -> MappingSet:
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise MappingError(str(p), 1, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MappingError(str(p), 1, f"cannot read: {e}") from None
    return parse_mapping(text, str(p))


# ----------------------------------------------------------------------------------------------------------------
# The controller
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _State:
    external: float  # the value last written by someone else (or found at start): the base when not mapped
    smooth: float | None = None  # the mapping's smoothed output
    base: float | None = None  # last frame's value before LFOs
    overridden: bool = False


class MappingEngine(Controller):
    """Writes mapped values into the store in before_frame (render thread; a few float ops per rule).
    `feed` is anything with a `current` Sample (the ThermalSampler, or the Replayer)."""

    def __init__(self, path: str | Path, feed: Any = None, *, poll: float = 0.5, watch: bool = True):
        self.path = user_path(path, "--map")
        try:
            self._active = load_mapping(self.path)
        except MappingError as e:
            raise UsageError(f"--map {e}") from None
        self._text = self._read_text()
        self.feed = feed
        self.poll = poll
        self.watch = watch
        self._applied: MappingSet | None = None
        self._state: dict[str, _State] = {}
        self._driven: frozenset[str] = frozenset()
        self._events: deque = deque()
        self._writing: int | None = None
        self._store: ParamStore | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reloads = 0
        self.reload_errors = 0
        self.last_error: str | None = None
        self.frames_written = 0
        # map.enabled (the master switch): off, nothing is written; back on, each value glides from where it was.
        self._enabled = True
        self._glide: dict[str, float] = {}  # path -> value when the mapping came back on
        self._glide_t0 = 0.0
        self.switches = 0

    @property
    def mapping(self) -> MappingSet:
        return self._active

    def mapped_paths(self) -> list[str]:
        return list(self._active.targets)

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self, store: ParamStore, info: dict[str, Any]) -> None:
        self._store = store
        store.add_listener(self._on_store_write)
        self._reconcile(self._active, store)
        m = self._active
        log.info("mapping: %s: %d map(s), %d lfo(s)", self.path, len(m.maps), len(m.lfos))
        if self.watch and self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="engine-mapping-reload", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._store is not None:
            self._store.remove_listener(self._on_store_write)

    # -- hot reload (watcher thread) --------------------------------------------------------------------------
    def _read_text(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def check_reload(self) -> bool:
        """Re-read the file if its bytes changed. True when a new mapping was installed."""
        text = self._read_text()
        if text == self._text:
            return False
        self._text = text
        if text is None:
            self.reload_errors += 1
            self.last_error = f"{self.path}: file is gone"
            log.error("mapping: %s is gone; keeping the last good mapping", self.path)
            return False
        try:
            new = parse_mapping(text.decode("utf-8"), str(self.path))
        except UnicodeDecodeError as e:
            new, err = None, f"{self.path}:1: not UTF-8 text ({e})"
        except MappingError as e:
            new, err = None, str(e)
        if new is None:
            self.reload_errors += 1
            self.last_error = err
            log.error("mapping: %s (keeping the last good mapping)", err)
            return False
        self._active = new  # one reference store; the render thread picks it up at its next frame
        self.reloads += 1
        self.last_error = None
        log.warning("mapping: reloaded %s: %d map(s), %d lfo(s)", self.path, len(new.maps), len(new.lfos))
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.check_reload()
            except Exception as e:  # never let the watcher die silently
                log.error("mapping: reload check failed: %s", e)

    # -- writes by others -------------------------------------------------------------------------------------
    def _on_store_write(self, stored: dict[str, Any]) -> None:
        if self._writing == threading.get_ident():
            return  # our own write
        driven = self._driven
        for path, value in stored.items():
            if path in driven:
                self._events.append(("write", path, value))

    def release(self, path: str | None) -> None:
        """Hand `path` (None: all) back to its mapping. Called on the render thread (OscServer.before_frame)."""
        self._events.append(("release", path, None))

    def preset_view(self, values: dict[str, Any]) -> dict[str, Any]:
        """What a preset should save: not the values a mapping drives (they follow the temperature), and LFO'd
        parameters at their base value (without the LFO's current offset)."""
        out = dict(values)
        for path, (rule, _) in list(self._active.targets.items()):
            st = self._state.get(path)
            if rule is not None and not (st is not None and st.overridden):
                out.pop(path, None)
            elif st is not None:
                spec = spec_for(path)
                out[path] = _fit(spec, st.external)
        return out

    # -- per frame --------------------------------------------------------------------------------------------
    def _reconcile(self, ms: MappingSet, store: ParamStore) -> dict[str, Any]:
        """Install a (re)loaded mapping: keep the state of parameters still driven, start new ones from their
        current value, and leave dropped ones at their base value (without LFO offsets)."""
        restore: dict[str, Any] = {}
        for path in list(self._state):
            if path not in ms.targets:
                st = self._state.pop(path)
                if st.base is not None:
                    restore[path] = _fit(spec_for(path), st.base)
        for path, (rule, _) in ms.targets.items():
            st = self._state.get(path)
            if st is None:
                self._state[path] = _State(external=float(store.get(path)))
            elif rule is None:
                st.overridden = False
                st.smooth = None
        self._driven = frozenset(ms.targets)
        self._applied = ms
        return restore

    def _drain(self) -> None:
        targets = self._active.targets
        while self._events:
            kind, path, value = self._events.popleft()
            if kind == "write":
                st = self._state.get(path)
                if st is not None:
                    st.external = float(value)
                    if targets.get(path, (None,))[0] is not None:
                        st.overridden = True
            else:
                for p, st in self._state.items():
                    if (path is None or p == path) and st.overridden:
                        st.overridden = False
                        st.smooth = st.external  # glide back from the value the performer left it at

    def _switch(self, snap, when: FrameTime) -> bool:
        """Follow map.enabled. Returns whether the mapping writes this frame."""
        enabled = snap.map.enabled
        if enabled == self._enabled:
            return enabled
        self._enabled = enabled
        self.switches += 1
        current = {path: float(get_value(snap, path)) for path in self._state}
        if not enabled:  # hold: each parameter stays where the mapping left it and is the performer's from here
            for path, st in self._state.items():
                st.external = current[path]
            self._glide.clear()
            log.info("mapping: off (map.enabled 0); mapped parameters hold their values")
        else:  # everything back to the mapping, performer overrides included, without a jump
            for st in self._state.values():
                st.overridden = False
            self._glide = current
            self._glide_t0 = when.t
            log.info("mapping: on again; gliding back over %.1f s", snap.map.glide_seconds)
        return enabled

    def before_frame(self, store: ParamStore, when: FrameTime) -> None:
        ms = self._active
        values: dict[str, Any] = {}
        if ms is not self._applied:
            values.update(self._reconcile(ms, store))
        self._drain()
        sample = getattr(self.feed, "current", None) if self.feed is not None else None
        snap = store.snapshot()
        if not self._switch(snap, when):
            if values:
                self._write(store, values)
            return
        glide = None
        if self._glide:
            span = snap.map.glide_seconds
            u = 1.0 if span <= 0 else min(1.0, max(0.0, (when.t - self._glide_t0) / span))
            glide = u * u * (3.0 - 2.0 * u)  # smoothstep: leaves and arrives without a jump in speed
            if u >= 1.0:
                self._glide.clear()
        for path, (rule, lfos) in ms.targets.items():
            st = self._state[path]
            base = None
            if rule is not None and not st.overridden:
                x = sample.get(rule.source) if sample is not None else None
                if x is not None:
                    y = rule.shape(x)
                    st.smooth = y if st.smooth is None else one_pole(st.smooth, y, when.dt, rule.smoothing)
                base = st.smooth
            if base is None:
                base = st.external
            st.base = base
            v = base
            for l in lfos:
                v += l.value(when.t)
            spec = rule.spec if rule is not None else lfos[0].spec
            if glide is not None and path in self._glide:
                start = self._glide[path]
                v = start + (v - start) * glide
            v = _fit(spec, v)
            if v != getattr(getattr(snap, spec.group), spec.name):
                values[path] = v
        if values:
            self._write(store, values)

    def _write(self, store: ParamStore, values: dict[str, Any]) -> None:
        self._writing = threading.get_ident()
        try:
            store.update(values)
            self.frames_written += 1
        finally:
            self._writing = None

    def stats(self) -> dict[str, Any]:
        m = self._active
        return {"file": str(self.path), "maps": len(m.maps), "lfos": len(m.lfos), "reloads": self.reloads,
                "reload_errors": self.reload_errors, "last_error": self.last_error,
                "overridden": sorted(p for p, s in self._state.items() if s.overridden), "frames_written": self.frames_written,
                "enabled": self._enabled, "switches": self.switches}


def _fit(spec: ParamSpec, v: float) -> float | int:
    """Clamp to the parameter's range; round integer parameters to the nearest integer (halves up)."""
    if spec.lo is not None and v < spec.lo:
        v = spec.lo
    if spec.hi is not None and v > spec.hi:
        v = spec.hi
    if spec.kind == "int":
        return round_half_up(v)
    return float(v)
