"""Mappings: curves, smoothing and LFOs against their formulas, integer rounding and clamping, OSC override
until release (real UDP), hot reload (a bad file keeps the last good mapping and names file:line), and the
shipped example files."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from pythonosc.udp_client import SimpleUDPClient

from engine.clock import FrameTime
from engine.control.mapping import (
    MappingEngine,
    MappingError,
    curve_value,
    lfo_wave,
    load_mapping,
    one_pole,
    parse_mapping,
)
from engine.control.osc import OscServer
from engine.control.thermal import OscTemperatureSource, ThermalSampler
from engine.errors import UsageError
from engine.params import ParamStore

REPO = Path(__file__).resolve().parents[1]


class Loop:
    """A minimal render loop: the controller hooks in the order engine.loop calls them, on a frame clock."""

    def __init__(self, controllers, store=None, fps=30.0):
        self.controllers = list(controllers)
        self.store = store or ParamStore()
        self.fps = fps
        self.index = 0
        for c in self.controllers:
            c.start(self.store, {})

    def frame(self):
        when = FrameTime(t=self.index / self.fps, index=self.index, dt=(1.0 / self.fps) if self.index else 0.0)
        for c in self.controllers:
            c.before_frame(self.store, when)
        self.index += 1
        return self.store.snapshot()

    def until(self, cond, timeout=3.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.frame()
            if cond():
                return True
            time.sleep(0.003)
        return False

    def close(self):
        for c in reversed(self.controllers):
            c.stop()


class Heat:
    """A temperature feed driven by the test: the real OSC-fed source behind the real sampler (no thread;
    each set() is one sample)."""

    def __init__(self, value=None):
        self.source = OscTemperatureSource()
        self.sampler = ThermalSampler(self.source)
        if value is not None:
            self.set(value)

    def set(self, value):
        self.source.push(value)
        self.sampler.sample_once()


def engine_for(tmp_path, text, heat=None, name="map.toml", **kw):
    p = tmp_path / name
    p.write_text(text)
    heat = heat or Heat()
    m = MappingEngine(p, feed=heat.sampler, **kw)
    return m, heat, p


# ----------------------------------------------------------------------------------------------------------------
# The math
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("u", [0.0, 0.1, 0.25, 0.5, 0.7, 0.999, 1.0])
def test_curves_match_their_formulas(u):
    assert curve_value("linear", u) == u
    k = 3.0
    assert curve_value("exponential", u, exponent=k) == pytest.approx((math.exp(k * u) - 1) / (math.exp(k) - 1))
    assert curve_value("exponential", u, exponent=-2.0) == pytest.approx((math.exp(-2 * u) - 1) / (math.exp(-2) - 1))
    assert curve_value("exponential", u, exponent=0.0) == u
    assert curve_value("smoothstep", u) == pytest.approx(3 * u * u - 2 * u ** 3)
    assert curve_value("steps", u, steps=4) == min(math.floor(u * 4), 3) / 3


def test_curves_at_the_edges():
    assert [curve_value("steps", u, steps=4) for u in (0, 0.24, 0.25, 0.5, 0.75, 1.0)] == [0, 0, 1 / 3, 2 / 3, 1, 1]
    assert curve_value("smoothstep", -0.5) == 0.0 and curve_value("smoothstep", 1.5) == 1.0
    assert curve_value("linear", 1.5) == 1.5  # extrapolates when not clamped


def test_one_pole_is_frame_rate_independent_and_exponential():
    y0, target, tau = 0.5, 1.5, 0.8
    for fps in (24, 30, 60, 144):
        y = y0
        for _ in range(fps * 2):  # two seconds
            y = one_pole(y, target, 1.0 / fps, tau)
        assert y == pytest.approx(target + (y0 - target) * math.exp(-2.0 / tau), rel=1e-12)
    assert one_pole(y0, target, 0.1, 0.0) == target  # no smoothing
    assert one_pole(y0, target, 0.0, 1.0) == y0  # no time passed


def test_lfo_waveforms():
    for x in (0.0, 0.1, 0.25, 0.4, 0.5, 0.75, 0.9, 1.3):
        assert lfo_wave("sine", x) == pytest.approx(math.sin(2 * math.pi * x))
    assert [lfo_wave("triangle", x) for x in (0, 0.125, 0.25, 0.5, 0.75, 1.0)] == pytest.approx([0, 0.5, 1, 0, -1, 0])
    n = [lfo_wave("noise", i / 50, seed=3) for i in range(500)]
    assert all(-1 <= v <= 1 for v in n) and max(n) - min(n) > 0.5
    assert max(abs(a - b) for a, b in zip(n, n[1:])) < 0.2  # smooth
    assert n == [lfo_wave("noise", i / 50, seed=3) for i in range(500)]  # deterministic
    assert n != [lfo_wave("noise", i / 50, seed=4) for i in range(500)]
    assert lfo_wave("noise", 7.0, seed=3) == pytest.approx(lfo_wave("noise", 6.9999999, seed=3), abs=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# The engine in a loop
# ----------------------------------------------------------------------------------------------------------------

PSI = """
[[map]]
source = "temperature"
param = "latent.psi"
in = [40, 85]
out = [0.5, 1.5]
smoothing = 1.0
"""


def test_smoothing_follows_the_one_pole_formula_per_frame(tmp_path):
    m, heat, _ = engine_for(tmp_path, PSI, Heat(40.0), watch=False)
    loop = Loop([heat.sampler, m], fps=30.0)
    try:
        assert loop.frame().latent.psi == 0.5  # the first reading is taken as is
        heat.set(85.0)
        for n in range(1, 61):
            psi = loop.frame().latent.psi
            assert psi == pytest.approx(1.5 - 1.0 * math.exp(-(n / 30.0) / 1.0), rel=1e-9), n
    finally:
        loop.close()


def test_integer_parameter_is_rounded_after_mapping_and_clamped(tmp_path):
    text = """
[[map]]
param = "diffusion.steps"
in = [40, 85]
out = [1, 4]
clamp = false
"""
    m, heat, _ = engine_for(tmp_path, text, watch=False)
    loop = Loop([heat.sampler, m])
    try:
        loop.frame()
        assert loop.store.get("diffusion.steps") == 1  # no reading yet: the parameter keeps its value
        got = []
        for t in (40, 55, 62.5, 70, 85, 120, 10):
            heat.set(t)
            got.append(loop.frame().diffusion.steps)
        # 62.5 C -> 2.5 -> 3 (halves up); 120 C extrapolates to 6.3, clamped to the range 1..4; 10 C -> -1 -> 1
        assert got == [1, 2, 3, 3, 4, 4, 1]
    finally:
        loop.close()


def test_lfos_add_to_the_base_and_are_clamped(tmp_path):
    text = """
[[lfo]]
param = "fx.feedback"
shape = "sine"
period = 2.0
depth = 0.05

[[lfo]]
param = "fx.feedback"
shape = "triangle"
period = 0.5
phase = 0.25
depth = 0.01

[[lfo]]
param = "fx.perturb"
shape = "sine"
period = 1.0
depth = 0.5
"""
    m, heat, _ = engine_for(tmp_path, text, watch=False)
    loop = Loop([m])
    try:
        for n in range(90):
            s = loop.frame()
            t = n / 30.0
            assert s.fx.feedback == pytest.approx(0.1 + 0.05 * math.sin(math.pi * t) + 0.01 * lfo_wave("triangle", t / 0.5 + 0.25))
            assert s.fx.perturb == pytest.approx(max(0.0, 0.5 * math.sin(2 * math.pi * t)))  # base 0, clamped at 0
    finally:
        loop.close()


def osc_loop(tmp_path, text, temp=40.0):
    server = OscServer("127.0.0.1", 0)
    m, heat, p = engine_for(tmp_path, text, Heat(temp), watch=False)
    server.on_release = m.release
    server.preset_view = m.preset_view
    loop = Loop([heat.sampler, server, m])
    return loop, server, m, heat, SimpleUDPClient("127.0.0.1", server.port)


def test_osc_overrides_a_mapped_parameter_until_released(tmp_path):
    loop, server, m, heat, c = osc_loop(tmp_path, PSI + '\n[[lfo]]\nparam = "latent.speed"\nperiod = 1.0\ndepth = 0.1\n')
    try:
        loop.frame()
        assert loop.store.get("latent.psi") == 0.5
        c.send_message("/engine/latent/psi", 2.0)
        assert loop.until(lambda: loop.store.get("latent.psi") == 2.0)
        heat.set(85.0)
        for _ in range(10):
            loop.frame()
        assert loop.store.get("latent.psi") == 2.0  # overridden: the temperature no longer moves it
        assert m.stats()["overridden"] == ["latent.psi"]
        c.send_message("/engine/release/latent/psi", None)
        assert loop.until(lambda: m.stats()["overridden"] == [])
        # Glides from the override value (2.0) toward the mapped 1.5 with the 1 s time constant.
        p1 = loop.store.get("latent.psi")
        assert 1.5 < p1 < 2.0
        for _ in range(150):
            loop.frame()
        assert loop.store.get("latent.psi") == pytest.approx(1.5, abs=1e-2)
        # An LFO-only parameter: a value sent over OSC becomes the centre it swings around.
        c.send_message("/engine/latent/speed", 5.0)
        assert loop.until(lambda: abs(loop.store.get("latent.speed") - 5.0) <= 0.1 + 1e-9 and loop.store.get("latent.speed") > 4)
        vals = [loop.frame().latent.speed for _ in range(30)]
        assert min(vals) < 5.0 < max(vals) and all(abs(v - 5.0) <= 0.1 + 1e-9 for v in vals)
    finally:
        loop.close()


def test_set_then_release_in_one_frame_applies_in_arrival_order(tmp_path):
    loop, server, m, heat, c = osc_loop(tmp_path, PSI)
    try:
        loop.frame()
        for first, second in ((("/engine/latent/psi", 3.0), ("/engine/release/latent/psi", None)),
                              (("/engine/release", None), ("/engine/latent/psi", 3.0))):
            n = server.counts["accepted"]
            c.send_message(*first)
            c.send_message(*second)
            deadline = time.monotonic() + 2
            while server.counts["accepted"] < n + 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            loop.frame()  # both arrive before this frame
            released = second[0].startswith("/engine/release")
            assert (m.stats()["overridden"] == []) == released
    finally:
        loop.close()


def test_presets_leave_out_mapped_values_and_save_lfo_bases(tmp_path):
    loop, server, m, heat, c = osc_loop(tmp_path, PSI + '\n[[lfo]]\nparam = "fx.feedback"\nperiod = 1.0\ndepth = 0.05\n')
    try:
        for _ in range(8):
            loop.frame()
        values = {"latent.psi": 0.9, "fx.feedback": 0.123, "latent.seed": 5}
        view = m.preset_view(values)
        assert view == {"fx.feedback": 0.1, "latent.seed": 5}  # psi follows the temperature; feedback's base
    finally:
        loop.close()


# ----------------------------------------------------------------------------------------------------------------
# Files: parse errors with file:line, hot reload, the shipped examples
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,line,message",
    [
        ("[[map]]\nparam = 'latent.psi'\nin = [40, 85\n", 3, "invalid TOML"),
        ("[[map]]\nparam = 'latent.psi'\nin = [40, 85]\nout = [0, 1]\n\n[[map]]\nparam = 'latent.nope'\nin = [1, 2]\nout = [0, 1]\n", 7, "unknown parameter 'latent.nope'"),
        ("[[map]]\nparam = 'latent.noise_mode'\nin = [1, 2]\nout = [0, 1]\n", 2, "only int and float"),
        ("[[map]]\nparam = 'fx.feedback'\nin = [1, 2]\nout = [0, 2]\n", 4, "leaves fx.feedback's range 0..1"),
        ("[[map]]\nparam = 'fx.feedback'\nin = [3, 3]\nout = [0, 1]\n", 3, "two different values"),
        ("[[map]]\nparam = 'fx.feedback'\nin = [1, 2]\nout = [0, 1]\ncurve = 'cubic'\n", 5, "curve must be one of"),
        ("[[map]]\nparam = 'fx.feedback'\nin = [1, 2]\nout = [0, 1]\nsmoothing = -1\n", 5, "must be >= 0"),
        ("[[map]]\nparam = 'fx.feedback'\nin = [1, 2]\nout = [0, 1]\nsource = 'humidity'\n", 5, "source must be one of"),
        ("[[map]]\nparam = 'fx.feedback'\nin = [1, 2]\nout = [0, 1]\nsmooth = 1\n", 5, "unknown key 'smooth'"),
        ("[[map]]\nparam = 'fx.feedback'\nout = [0, 1]\n", 1, "needs in = [low, high]"),
        ("[[map]]\nparam = 'fx.feedback'\nin = [1, 2]\nout = [0, 1]\n[[map]]\nparam = 'fx.feedback'\nin = [1, 2]\nout = [0, 1]\n", 6, "already mapped at line 2"),
        ("[[lfo]]\nparam = 'fx.feedback'\nperiod = 0\ndepth = 1\n", 3, "period (seconds) must be at least 0.001"),
        # Issue 17: values that passed validation and then crashed the show at start and after a hot reload.
        ("[[lfo]]\nparam = 'fx.feedback'\nperiod = 1e-320\ndepth = 1\n", 3, "period (seconds) must be at least 0.001"),
        ("[[map]]\nparam = 'fx.feedback'\nin = [1, 2]\nout = [0, 1]\ncurve = 'exponential'\nexponent = 710\n", 6,
         "exponent must be within +-50"),
        ("[[lfo]]\nparam = 'fx.feedback'\nperiod = 1\n", 1, "needs depth"),
        ("[[lfo]]\nparam = 'fx.feedback'\nperiod = 1\ndepth = 1\nshape = 'saw'\n", 5, "shape must be one of"),
        ("[mapping]\nx = 1\n", 1, "unknown key 'mapping'"),
    ],
)
def test_bad_files_name_file_and_line(text, line, message):
    with pytest.raises(MappingError) as e:
        parse_mapping(text, "show.toml")
    assert e.value.line == line, str(e.value)
    assert str(e.value).startswith(f"show.toml:{line}: ") and message in str(e.value)


def test_an_extrapolating_exponential_curve_stays_finite():
    """clamp = false lets the input run past `in`: the curve grows but never raises (the parameter's bounds clamp it)."""
    from engine.control.mapping import curve_value

    for u in (-1e9, -30.0, 0.0, 0.5, 1.0, 30.0, 1e9):
        for exponent in (-50.0, -3.0, 3.0, 50.0):
            assert math.isfinite(curve_value("exponential", u, exponent=exponent))


def test_a_bad_file_at_startup_is_a_usage_error(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text("[[map]]\nparam = 'latent.psi'\nin = [40, 85]\nout = [0.5]\n")
    with pytest.raises(UsageError, match=rf"--map {p}:4: out must be two finite numbers"):
        MappingEngine(p)
    with pytest.raises(UsageError, match="no such file"):
        MappingEngine(tmp_path / "missing.toml")


def test_hot_reload_applies_changes_and_keeps_the_last_good_mapping(tmp_path):
    m, heat, p = engine_for(tmp_path, PSI.replace("smoothing = 1.0", "smoothing = 0"), Heat(85.0), poll=0.05)
    loop = Loop([heat.sampler, m])
    try:
        assert loop.frame().latent.psi == 1.5
        p.write_text(PSI.replace("smoothing = 1.0", "smoothing = 0").replace("out = [0.5, 1.5]", "out = [0.2, 0.8]"))
        assert loop.until(lambda: loop.store.get("latent.psi") == 0.8, timeout=3)
        assert m.reloads == 1
        # A broken edit: reported with file:line, the last good mapping stays in force.
        p.write_text(PSI.replace("param = \"latent.psi\"", "param = \"latent.psy\""))
        assert loop.until(lambda: m.reload_errors == 1, timeout=3)
        assert m.last_error.startswith(f"{p}:4: unknown parameter 'latent.psy'")
        heat.set(40.0)
        assert loop.frame().latent.psi == 0.2  # still the last good mapping (out 0.2..0.8)
        p.write_text("[[map]]\nparam = 'latent.psi'\nin = [40, 85\n")  # broken TOML
        assert loop.until(lambda: m.reload_errors == 2, timeout=3)
        assert m.last_error.startswith(f"{p}:3: invalid TOML")
        p.unlink()
        assert loop.until(lambda: m.reload_errors == 3, timeout=3)
        # A good file again, now with an LFO on feedback; then the LFO goes and feedback returns to its base.
        p.write_text(PSI + '\n[[lfo]]\nparam = "fx.feedback"\nperiod = 1.0\ndepth = 0.05\nphase = 0.25\n')
        assert loop.until(lambda: m.reloads == 2 and loop.store.get("fx.feedback") != 0.1, timeout=3)
        assert m.last_error is None
        p.write_text(PSI)
        assert loop.until(lambda: m.reloads == 3, timeout=3)
        loop.frame()
        assert loop.store.get("fx.feedback") == 0.1
    finally:
        loop.close()


def test_the_shipped_examples_are_valid_and_drive_their_parameters(tmp_path):
    heat_file = REPO / "engine/examples/mappings/heat_as_image.toml"
    sg_file = REPO / "engine/examples/mappings/stylegan_heat.toml"
    h = load_mapping(heat_file)
    assert h.targets["diffusion.steps"][0].source == "temperature"
    assert any(l.shape == "sine" for l in h.targets["diffusion.strength"][1])  # seed 000's sine variation layer
    sg = load_mapping(sg_file)
    assert {"latent.psi", "latent.speed"} <= set(sg.targets)
    for f, checks in ((heat_file, {"diffusion.steps": (1, 4)}), (sg_file, {"latent.speed": (0.05, 0.6)})):
        heat = Heat(30.0)
        m = MappingEngine(f, feed=heat.sampler, watch=False)
        loop = Loop([heat.sampler, m])
        try:
            (path, (cold, hot)), = checks.items()
            loop.frame()
            assert loop.store.get(path) == pytest.approx(cold)
            heat.set(95.0)
            for _ in range(30 * 40):  # 40 s of show time: every smoothing has settled
                loop.frame()
            assert loop.store.get(path) == pytest.approx(hot, rel=1e-3)
        finally:
            loop.close()


def test_master_switch_holds_then_glides_back_over_udp(tmp_path):
    """Issue 16: /engine/map/enabled 0 stops the whole mapping (the values hold, the performer may move them);
    1 hands everything back, overrides included, gliding from where each value is over map.glide_seconds."""
    loop, server, m, heat, c = osc_loop(tmp_path, PSI.replace("smoothing = 1.0", "smoothing = 0.0")
                                        + '\n[[lfo]]\nparam = "latent.speed"\nperiod = 1.0\ndepth = 0.1\n')
    try:
        loop.frame()
        assert loop.store.get("latent.psi") == 0.5
        c.send_message("/engine/map/glide_seconds", 1.0)
        c.send_message("/engine/map/enabled", 0)
        assert loop.until(lambda: m.stats()["enabled"] is False)
        held_speed = loop.store.get("latent.speed")
        heat.set(85.0)  # the mapping would say 1.5 now
        for _ in range(20):
            loop.frame()
        assert loop.store.get("latent.psi") == 0.5 and loop.store.get("latent.speed") == held_speed  # held: no LFO
        c.send_message("/engine/latent/psi", 0.8)  # the performer's
        assert loop.until(lambda: abs(loop.store.get("latent.psi") - 0.8) < 1e-6)
        c.send_message("/engine/map/enabled", 1)
        assert loop.until(lambda: m.stats()["enabled"] is True)
        start = loop.index
        seen = [loop.frame().latent.psi for _ in range(40)]  # 40 frames at 30 fps: the glide (1 s) and after
        # From 0.8 towards the mapped 1.5 without a jump: monotonic, small steps, there after glide_seconds.
        assert seen[0] < 1.0 and all(b >= a - 1e-9 for a, b in zip(seen, seen[1:]))
        assert max(b - a for a, b in zip(seen, seen[1:])) < 0.06
        assert seen[-1] == pytest.approx(1.5) and loop.index - start == 40
        assert m.stats()["overridden"] == [] and m.stats()["switches"] == 2
    finally:
        loop.close()
