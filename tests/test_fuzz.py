"""Issue 17: property-based fuzzing (hypothesis) of everything a show receives: OSC messages, bend and edit expressions,
mapping files and config files. Every case must end in one of two ways: accepted, or refused with one line (a
logged warning or an engine error). Never a traceback, never more than a second, never a memory blow-up (each case's
Python allocations are traced: the 4-billion-int channel set of issue 17 was one such case).

Deterministic (derandomized, no example database), so CI runs the same cases every time within its time budget.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.clock import FrameTime
from engine.errors import EngineError
from engine.params import SPECS, ParamStore

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
SECONDS_PER_CASE = 1.0
BYTES_PER_CASE = 64 * 2**20


@contextmanager
def bounded(what: str):
    """One case: under a second and 64 MB of Python allocations."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < SECONDS_PER_CASE, f"{what}: {elapsed:.2f} s"
    assert peak < BYTES_PER_CASE, f"{what}: {peak / 2**20:.0f} MB"


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message.strip() and "Traceback" not in message


# -- values: what hosts actually send, and what they should not ----------------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64), st.floats(width=32),
    st.integers(min_value=-2**31, max_value=2**31 - 1),
    st.sampled_from([0, 1, -1, 0.5, 1e308, -1e308, 2**31 - 1, 710.0, -710.0, 1e-320, 5e-324, 1e-3]),
)
texts = st.one_of(st.text(max_size=80), st.sampled_from(["", "random", "const", "walk", "a red cat", "1,2,3", "nan"]))
osc_args = st.lists(st.one_of(numbers, texts, st.booleans(), st.binary(max_size=32)), max_size=6)
addresses = st.one_of(st.sampled_from([s.address for s in SPECS] + ["/engine/get", "/engine/list", "/engine/release",
                                                                      "/engine/preset/load", "/engine/input/temperature"]),
                      st.text(max_size=40).map(lambda t: "/engine/" + t), st.text(max_size=20))


@pytest.fixture(scope="module")
def osc(tmp_path_factory):
    """One running server for every case (as in a show: one server, many messages)."""
    from engine.control.osc import OscServer

    server = OscServer("127.0.0.1", 0, preset_dir=str(tmp_path_factory.mktemp("presets")))
    store = ParamStore()
    server.start(store, {})
    yield server, store
    server.stop()


@FUZZ
@given(messages=st.lists(st.tuples(addresses, osc_args), min_size=1, max_size=8))
def test_osc_messages_are_accepted_or_refused_never_raise(messages, osc):
    from pythonosc.osc_message_builder import OscMessageBuilder

    server, store = osc
    for address, args in messages:
        b = OscMessageBuilder(address=address if address.startswith("/") else "/" + address)
        try:
            for a in args:
                b.add_arg(a)
            dgram = b.build().dgram
        except Exception:  # python-osc cannot encode it (e.g. an int beyond 32 bits): nothing to send
            continue
        with bounded(f"{address} {args!r}"):
            server.handle_packet(dgram, ("127.0.0.1", 9))
            server.before_frame(store, FrameTime(0.0, 0))
    assert store.snapshot() is not None  # whatever was accepted is a valid snapshot


# -- bend and edit expressions -------------------------------------------------------------------------------------

ops = st.sampled_from(["translate", "rotate", "scale", "erode", "dilate", "invert", "threshold", "multiply", "ablate", "blur"])
args_ = st.lists(st.one_of(numbers.map(lambda v: repr(v)), st.sampled_from(["t", "sin(t)", "9**9**9", "1/0", "1" * 400,
                                                                            "noise(t*1e308)", "log(-1)"])), max_size=3)
channels = st.one_of(st.just(""), st.sampled_from(["[all]", "[25%]", "[0-4294967295]", "[0 3 8-15]", "[99999999%]",
                                                    "[-1]", "[5-2]"]),
                     st.text(max_size=12).map(lambda t: f"[{t}]"))
layers = st.sampled_from(["b8.conv1", "b16.conv0", "b4.conv1", "nope", "b8.conv1.weight", ""])
bend_texts = st.one_of(
    st.lists(st.tuples(layers, ops, args_, channels).map(lambda c: f"{c[0]} {c[1]}({', '.join(c[2])}) {c[3]}"),
             max_size=3).map("; ".join),
    st.text(max_size=120),
)


@FUZZ
@given(text=bend_texts, t=st.floats(allow_nan=True, allow_infinity=True))
def test_bend_expressions_are_applied_or_warned_never_raise(text, t):
    import torch

    from engine.generators.layers import bend_maps, channel_index, parse_bend

    warnings: list[str] = []
    x = torch.randn(1, 16, 16, 16)
    with bounded(text):
        clauses = parse_bend(text, lambda name: name.startswith("b"), lambda key, message: warnings.append(message))
        for cl in clauses:
            values = [a(t) for a in cl.args]  # as the Bender does each frame
            if not all(math.isfinite(v) for v in values):
                continue  # the Bender skips a clause whose formula is not finite this frame
            idx = channel_index(cl.channels, x.shape[1], cl.layer)
            sel = x if idx is None else x[:, idx]
            assert bend_maps(sel, cl.op, values).shape == sel.shape
    assert all(one_line(w) for w in warnings), warnings


edit_texts = st.one_of(
    st.lists(st.tuples(st.sampled_from(["mapping.fc0.weight", "synthesis.*", "b8.*weight", "nope", "[", "**"]),
                       st.sampled_from(["*=", "+=", "=", "-="]), args_.map(lambda a: a[0] if a else "1")),
             max_size=3).map(lambda es: "; ".join(" ".join(e) for e in es)),
    st.text(max_size=120),
)


@FUZZ
@given(text=edit_texts)
def test_weight_edits_are_parsed_or_warned_never_raise(text):
    from engine.generators.layers import parse_edits

    warnings: list[str] = []
    names = ["mapping.fc0.weight", "mapping.fc0.bias", "synthesis.b8.conv1.weight", "synthesis.b8.conv1.bias"]
    with bounded(text):
        parse_edits(text, names, lambda key, message: warnings.append(message))
    assert all(one_line(w) for w in warnings), warnings


# -- mapping files ---------------------------------------------------------------------------------------------------

toml_values = st.one_of(numbers.filter(lambda v: not (isinstance(v, float) and math.isnan(v))),
                        st.sampled_from(["latent.psi", "fx.feedback", "diffusion.steps", "latent.noise_mode", "nope",
                                         "exponential", "steps", "smoothstep", "sine", "noise", "temperature"]),
                        st.booleans(), st.lists(numbers.filter(lambda v: not (isinstance(v, float) and math.isnan(v))),
                                                max_size=3))
map_keys = st.sampled_from(["source", "param", "in", "out", "curve", "exponent", "steps", "smoothing", "clamp", "what"])
lfo_keys = st.sampled_from(["param", "shape", "period", "phase", "depth", "seed", "what"])


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


finite = numbers.filter(lambda v: not (isinstance(v, float) and math.isnan(v)))
# Structurally valid rules with hostile numbers: the shapes that passed validation and then crashed (exponent 710,
# period 1e-320) live here, not in random TOML.
valid_maps = st.builds(
    lambda curve, exponent, steps, clamp, lo, width: (
        f'[[map]]\nparam = "fx.feedback"\nin = [{_toml(lo)}, {_toml(lo + width)}]\nout = [0.0, 1.0]\ncurve = "{curve}"\n'
        f"exponent = {_toml(exponent)}\nsteps = {_toml(steps)}\nclamp = {_toml(clamp)}\n"),
    st.sampled_from(["linear", "exponential", "smoothstep", "steps"]), st.one_of(st.floats(-1000, 1000), finite),
    st.integers(2, 10**6), st.booleans(), st.floats(-100, 100), st.sampled_from([1.0, 45.0, 1e-6, 1e6]))
valid_lfos = st.builds(
    lambda shape, period, phase, depth, seed: (
        f'[[lfo]]\nparam = "latent.psi"\nshape = "{shape}"\nperiod = {_toml(period)}\nphase = {_toml(phase)}\n'
        f"depth = {_toml(depth)}\nseed = {_toml(seed)}\n"),
    st.sampled_from(["sine", "triangle", "noise"]), finite, finite, st.floats(-1, 1), st.integers(-2**63, 2**63 - 1))

mapping_texts = st.one_of(
    valid_maps, valid_lfos, valid_maps, valid_lfos,
    st.tuples(st.lists(st.dictionaries(map_keys, toml_values, max_size=8), max_size=3),
              st.lists(st.dictionaries(lfo_keys, toml_values, max_size=6), max_size=2)).map(
        lambda ml: "".join("[[map]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in m.items()) for m in ml[0])
        + "".join("[[lfo]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in m.items()) for m in ml[1])),
    st.text(max_size=200),
)


@FUZZ
@given(text=mapping_texts, inputs=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=4))
def test_mapping_files_are_accepted_and_stay_finite_or_refused_with_file_and_line(text, inputs):
    from engine.control.mapping import MappingError, parse_mapping

    with bounded(text):
        try:
            m = parse_mapping(text, "show.toml")
        except MappingError as e:
            assert str(e).startswith("show.toml:") and one_line(str(e)), str(e)
            return
        for rule in m.maps:
            for x in inputs:
                y = rule.shape(x)  # may not raise; unclamped extrapolation may grow (the parameter clamps it)
                assert math.isfinite(y) or not rule.clamp, (rule, x, y)
        for lfo in m.lfos:
            for t in (0.0, 0.5, 1e6):
                assert math.isfinite(lfo.value(t)), (lfo, t)


# -- config files ----------------------------------------------------------------------------------------------------

run_keys = st.sampled_from(["generator", "size", "seed", "psi", "frames", "seconds", "sink", "fps", "clock", "set",
                            "quiet", "threads", "max_params", "osc_port", "osc_out", "stats_json", "nope"])
tables = st.sampled_from(["run", "latent", "fx", "generator", "diffusion", "nope"])


@FUZZ
@given(body=st.dictionaries(tables, st.dictionaries(st.one_of(run_keys, st.sampled_from(["psi", "seed", "feedback",
                                                                                         "steps", "prompt"])),
                                                     toml_values, max_size=5), max_size=3))
def test_config_files_are_accepted_or_refused_with_one_line(body, tmp_path_factory):
    from engine.cli import add_run_arguments
    from engine.config import load_config
    from engine.options import (
        RUN_DEFAULTS,
        Parser,
        check_config_options,
        config_run_options,
        control_defaults,
    )

    path = tmp_path_factory.mktemp("cfg") / "show.toml"
    path.write_text("".join(f"[{t}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in kv.items()) for t, kv in body.items()))
    parser = Parser(prog="engine run")
    add_run_arguments(parser)
    with bounded(path.read_text()):
        try:
            cfg = load_config(path, config_run_options())
            check_config_options(cfg.run, parser, {**RUN_DEFAULTS, **control_defaults()}, str(path))
        except EngineError as e:
            assert one_line(str(e)) and str(path) in str(e), str(e)
