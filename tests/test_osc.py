"""OSC in over real UDP on loopback: python-osc and liblo (oscsend/oscdump) as two independent implementations,
replies, presets, every kind of bad input, a fuzz run while frames render, the factory and the Max patch."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from engine.clock import FrameTime
from engine.control import build_controllers
from engine.control.osc import OscServer
from engine.errors import UsageError
from engine.params import SPECS, ParamStore

REPO = Path(__file__).resolve().parents[1]
HAVE_LIBLO = shutil.which("oscsend") is not None and shutil.which("oscdump") is not None


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
        snap = self.store.snapshot()
        for c in self.controllers:
            c.after_frame(when, {"fps": self.fps, "frame_ms": 1000.0 / self.fps})
        self.index += 1
        return snap

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


@pytest.fixture
def osc(tmp_path):
    server = OscServer("127.0.0.1", 0, preset_dir=str(tmp_path / "presets"))
    loop = Loop([server])
    yield server, loop
    loop.close()


def f32(x: float) -> float:
    return struct.unpack(">f", struct.pack(">f", x))[0]


def client_for(server):
    return SimpleUDPClient("127.0.0.1", server.port)


def recv_until(sock_or_client, address, timeout=2.0):
    """Messages received until one at `address` (inclusive)."""
    got = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        data = sock_or_client.receive(timeout=max(0.01, end - time.monotonic()))
        if not data:
            continue
        m = OscMessage(data)
        got.append(m)
        if m.address == address:
            return got
    raise AssertionError(f"no reply at {address}; got {[m.address for m in got]}")


# ----------------------------------------------------------------------------------------------------------------


def test_python_osc_sets_every_kind_of_parameter(osc):
    server, loop = osc
    c = client_for(server)
    c.send_message("/engine/latent/psi", 0.7)
    c.send_message("/engine/latent/seed", 42)
    c.send_message("/engine/latent/truncation_cutoff", 7.6)  # control surfaces send floats: rounded
    c.send_message("/engine/latent/noise_mode", "random")
    c.send_message("/engine/latent/motion", 1)  # enum by index
    c.send_message("/engine/diffusion/denoise_batch", False)
    c.send_message("/engine/diffusion/prompt", "a red fox")
    assert loop.until(lambda: loop.store.get("diffusion.prompt") == "a red fox")
    s = loop.store.snapshot()
    assert s.latent.psi == f32(0.7)
    assert s.latent.seed == 42 and s.latent.truncation_cutoff == 8
    assert s.latent.noise_mode == "random" and s.latent.motion == "still"
    assert s.diffusion.denoise_batch is False
    assert server.counts["accepted"] == 7 and server.stats()["rejected_total"] == 0


def test_float32_values_at_a_limit_are_that_limit(osc, caplog):
    """Issue 13, bug 1: TouchDesigner and Max send float32, so 0.01 arrives as 0.0099999998 and the seed maximum as
    4294967296: within one float32 step of a limit is the limit. Further out is refused, with the value received."""
    server, loop = osc
    c = client_for(server)
    c.send_message("/engine/diffusion/strength", 0.01)  # python-osc sends float32, as the hosts do
    c.send_message("/engine/diffusion/latent_smoothing", 0.99)
    c.send_message("/engine/latent/seed", 4294967295.0)
    assert loop.until(lambda: loop.store.get("latent.seed") == 4294967295)
    assert loop.store.get("diffusion.strength") == 0.01 and loop.store.get("diffusion.latent_smoothing") == 0.99
    assert server.stats()["rejected_total"] == 0
    with caplog.at_level("WARNING"):
        c.send_message("/engine/diffusion/strength", 0.009)
        assert loop.until(lambda: server.stats()["rejected_total"] == 1)
        # the receiver thread logs before it counts, so the line is there once the count is
        assert "0.008999999613 is below the minimum 0.01" in caplog.text, caplog.text
    assert loop.store.get("diffusion.strength") == 0.01


def test_a_time_slice_of_samples_for_one_channel_takes_the_newest(osc):
    """Issue 13, bug 3: TouchDesigner's OSC Out CHOP with Time Slice on sends several floats for a scalar channel."""
    server, loop = osc
    c = client_for(server)
    c.send_message("/engine/fx/feedback", [0.1, 0.2, 0.3])
    c.send_message("/engine/latent/seed", [5.0, 6.0, 7.0])
    assert loop.until(lambda: loop.store.get("latent.seed") == 7)
    assert loop.store.get("fx.feedback") == f32(0.3)
    c.send_message("/engine/diffusion/prompt", ["two", "words"])  # text: still one value per message
    assert loop.until(lambda: server.stats()["rejected_total"] == 1)


def test_latest_wins_and_values_apply_at_a_frame_boundary(osc):
    server, loop = osc
    c = client_for(server)
    for v in (0.1, 0.2, 0.3, 0.4):
        c.send_message("/engine/fx/feedback", v)
    deadline = time.monotonic() + 2
    while server.counts["accepted"] < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert loop.store.get("fx.feedback") == 0.1  # default: nothing applied until the loop runs a frame
    v0 = loop.store.version
    loop.frame()
    assert loop.store.get("fx.feedback") == f32(0.4)
    assert loop.store.version == v0 + 1  # four messages, one store update


def test_vector_takes_all_values_in_one_message_and_clears_with_none(osc):
    server, loop = osc
    c = client_for(server)
    z = [random.Random(1).gauss(0, 1) for _ in range(512)]
    c.send_message("/engine/latent/z", z)
    assert loop.until(lambda: len(loop.store.get("latent.z")) == 512)
    assert loop.store.get("latent.z") == tuple(f32(x) for x in z)
    b = OscMessageBuilder("/engine/latent/z")  # a typed OSC array works too
    b.add_arg([1.0, 2.0, 3.0])
    c.send(b.build())
    assert loop.until(lambda: loop.store.get("latent.z") == (1.0, 2.0, 3.0))
    c.send_message("/engine/latent/z", None)
    assert loop.until(lambda: loop.store.get("latent.z") == ())


def test_get_replies_to_sender_and_list_describes_every_address(osc):
    server, loop = osc
    c = SimpleUDPClient("127.0.0.1", server.port)
    c.send_message("/engine/fx/feedback", 0.25)
    assert loop.until(lambda: loop.store.get("fx.feedback") == 0.25)
    c.send_message("/engine/get/fx/feedback", None)
    (m,) = recv_until(c, "/engine/fx/feedback")
    assert m.params == [0.25]
    c.send_message("/engine/get/diffusion/denoise_batch", None)
    assert recv_until(c, "/engine/diffusion/denoise_batch")[-1].params == [1]  # bools as 0/1 for Max/TD
    c.send_message("/engine/get/latent/seed", None)
    assert recv_until(c, "/engine/latent/seed")[-1].params == [0]

    c.send_message("/engine/list", None)
    got = recv_until(c, "/engine/list/done")
    items = {m.params[0]: m.params[1:] for m in got if m.address == "/engine/list/param"}
    assert got[-1].params == [len(SPECS) + 1]
    assert set(items) == {s.address for s in SPECS} | {"/engine/input/temperature"}
    kind, rng, default, doc = items["/engine/fx/feedback"]
    assert (kind, rng, default) == ("float", "0..1", "0.1") and doc
    assert items["/engine/latent/noise_mode"][:3] == ["enum", "const|random|none", "const"]


@pytest.mark.skipif(not HAVE_LIBLO, reason="liblo-tools (oscsend/oscdump) not installed")
def test_liblo_oscsend_and_oscdump_interoperate(osc):
    """A second, independent OSC implementation (liblo, C) on both sides: oscsend sets values and asks for a
    reply on a port where oscdump listens."""
    server, loop = osc
    port = free_udp_port()
    dump = subprocess.Popen(["oscdump", "-L", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for args in (["/engine/fx/feedback", "f", "0.375"], ["/engine/latent/seed", "i", "1234"],
                     ["/engine/latent/noise_mode", "s", "none"], ["/engine/latent/z", "fff", "0.5", "-1.5", "2"],
                     ["/engine/diffusion/denoise_batch", "F"], ["/engine/latent/seed", "h", "4294967295"]):
            subprocess.run(["oscsend", "127.0.0.1", str(server.port), *args], check=True, timeout=5)
        assert loop.until(lambda: loop.store.get("latent.seed") == 4294967295)
        s = loop.store.snapshot()
        assert (s.fx.feedback, s.latent.noise_mode, s.latent.z, s.diffusion.denoise_batch) == (0.375, "none", (0.5, -1.5, 2.0), False)
        time.sleep(0.2)  # oscdump binds its port after start
        subprocess.run(["oscsend", "127.0.0.1", str(server.port), "/engine/get/fx/feedback", "i", str(port)], check=True, timeout=5)
        subprocess.run(["oscsend", "127.0.0.1", str(server.port), "/engine/get/latent/z", "i", str(port)], check=True, timeout=5)
        lines = read_lines(dump, 2, timeout=3.0)
        # oscdump prints "[time tag] address types values"
        fields = [ln.split()[ln.split().index(next(w for w in ln.split() if w.startswith("/"))):] for ln in lines]
        assert fields[0] == ["/engine/fx/feedback", "f", "0.375000"]
        assert fields[1] == ["/engine/latent/z", "fff", "0.500000", "-1.500000", "2.000000"]
    finally:
        dump.terminate()
        dump.wait(timeout=5)


@pytest.mark.skipif(not HAVE_LIBLO, reason="liblo-tools (oscsend/oscdump) not installed")
def test_telemetry_reaches_liblo_oscdump_one_float_per_address():
    from engine.control.telemetry import OscTelemetry
    from engine.control.thermal import SyntheticSource, ThermalSampler

    port = free_udp_port()
    dump = subprocess.Popen(["oscdump", "-L", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = ThermalSampler(SyntheticSource("const,value=64.25"))
    tel = OscTelemetry([f"127.0.0.1:{port}"], rate=20.0, thermal=sampler, mapped=lambda: ["latent.psi", "diffusion.steps"])
    loop = Loop([sampler, tel])
    try:
        loop.frame()  # fps and frame_ms come from after_frame
        lines = read_lines(dump, 30, timeout=5.0)  # 5 addresses a tick at 20 Hz
        got = {}
        for ln in lines:
            w = ln.split()
            i = next(k for k, x in enumerate(w) if x.startswith("/"))
            got[w[i]] = w[i + 1:]
        assert got["/engine/gpu/temperature"] == ["f", "64.250000"]
        assert got["/engine/fps"] == ["f", "30.000000"] and got["/engine/frame_ms"] == ["f", "33.333332"]
        assert got["/engine/latent/psi"] == ["f", "1.000000"] and got["/engine/diffusion/steps"] == ["f", "1.000000"]
        assert "/engine/gpu/power" not in got  # a synthetic source has no power reading: not sent as a fake 0
        assert all(len(v) == 2 and v[0] == "f" for v in got.values())
    finally:
        loop.close()
        dump.terminate()
        dump.wait(timeout=5)


def read_lines(proc, n, timeout):
    out: list[str] = []

    def reader():
        while len(out) < n:
            line = proc.stdout.readline()
            if not line:
                return
            out.append(line.strip())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    assert len(out) >= n, f"oscdump printed {out}"
    return out


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_bad_input_is_rejected_counted_and_logged_rate_limited(osc, caplog):
    server, loop = osc
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dest = ("127.0.0.1", server.port)

    def msg(address, *args):
        b = OscMessageBuilder(address)
        for a in args:
            b.add_arg(a)
        return b.build().dgram

    cases = {
        "unknown_address": [msg("/engine/latent/nope", 1.0), msg("/psi", 1.0), msg("/engine/*/psi", 1.0)],
        "wrong_type": [msg("/engine/latent/psi"), msg("/engine/latent/psi", 1.0, "x"), msg("/engine/latent/psi", b"\x00\x01"),
                       msg("/engine/latent/z", "a"), msg("/engine/release/latent/psi", 1)],
        "non_finite": [msg("/engine/latent/psi", float("nan")), msg("/engine/latent/psi", float("inf")),
                       msg("/engine/latent/z", 1.0, float("-inf"))],
        "out_of_range": [msg("/engine/fx/feedback", 1.5), msg("/engine/latent/seed", -1), msg("/engine/latent/z", [0.0] * 4097)],
        "bad_value": [msg("/engine/latent/psi", "abc"), msg("/engine/latent/noise_mode", "loud"), msg("/engine/latent/motion", 7)],
        "malformed": [b"", b"hello", b"/engine/latent/psi", b"/engine/latent/psi\x00\x00,f\x00\x00",
                      b"/engine/latent/psi\x00\x00,q\x00\x00\x00\x00\x00", b"#bundle\x00" + b"\x00" * 8 + b"\x00\x00\x00\x03abc",
                      b"/engine/latent/psi\x00\x00,f\x00\x00\x00"],
        "oversized": [msg("/engine/latent/z", [0.0] * 8000)],
        "unused_input": [msg("/engine/input/temperature", 50.0)],
    }
    expected = {k: len(v) for k, v in cases.items()}
    before = loop.store.snapshot()
    caplog.set_level("WARNING", logger="engine.control.osc")
    for dgrams in cases.values():
        for d in dgrams:
            sock.sendto(d, dest)
    total = sum(expected.values())
    # packets are counted on arrival, rejections after handling: wait for the last rejection, not the last packet
    assert loop.until(lambda: server.counts["packets"] >= total and server.stats()["rejected_total"] >= total)
    assert loop.store.snapshot() is before  # nothing was written
    got = {k: v for k, v in server.rejected.items() if v}
    assert got == expected
    # One line per kind (all arrived within the 2 s window), not one per packet.
    assert server._limiter.lines == len(expected)
    assert len([r for r in caplog.records if r.name == "engine.control.osc"]) == len(expected)
    # And the server still works.
    c = client_for(server)
    c.send_message("/engine/fx/feedback", 0.5)
    assert loop.until(lambda: loop.store.get("fx.feedback") == 0.5)


def test_a_backtracking_address_pattern_cannot_stall_the_server(osc):
    """python-osc's Dispatcher takes seconds on this 35-byte address; here it is one dict lookup."""
    server, loop = osc
    c = client_for(server)
    c.send_message("/engine/latent/" + "*" * 16 + "x", 1.0)
    t0 = time.monotonic()
    c.send_message("/engine/get/latent/psi", None)
    recv_until(c, "/engine/latent/psi", timeout=1.0)
    assert time.monotonic() - t0 < 0.5
    assert server.rejected["unknown_address"] == 1


def test_bundles_are_unpacked_and_nested_depth_is_bounded(osc):
    server, loop = osc
    c = client_for(server)
    inner = OscBundleBuilder(IMMEDIATELY)
    inner.add_content(_m("/engine/fx/perturb", 0.25))
    outer = OscBundleBuilder(time.time() + 3600)  # a far-future time tag applies now: no scheduling
    outer.add_content(_m("/engine/fx/feedback", 0.75))
    outer.add_content(inner.build())
    c.send(outer.build())
    assert loop.until(lambda: loop.store.get("fx.perturb") == 0.25)
    assert loop.store.get("fx.feedback") == 0.75
    b = _m("/engine/fx/feedback", 0.5)
    for _ in range(6):  # deeper than MAX_BUNDLE_DEPTH
        nb = OscBundleBuilder(IMMEDIATELY)
        nb.add_content(b)
        b = nb.build()
    c.send(b)
    assert loop.until(lambda: server.rejected["malformed"] == 1)
    assert loop.store.get("fx.feedback") == 0.75


def _m(address, *args):
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build()


def test_presets_save_and_load_over_osc(osc, tmp_path):
    server, loop = osc
    c = client_for(server)
    c.send_message("/engine/latent/psi", 0.5)
    c.send_message("/engine/diffusion/prompt", 'a "quoted" prompt\twith tabs \\ and ünïcode \x7f')
    c.send_message("/engine/latent/z", [0.25, -0.5])
    assert loop.until(lambda: loop.store.get("latent.z") == (0.25, -0.5))
    c.send_message("/engine/preset/save", "scene one")
    saved = recv_until(c, "/engine/preset/saved")[-1]
    path = Path(saved.params[1])
    assert path == tmp_path / "presets" / "scene one.toml"
    data = tomllib.loads(path.read_text())
    assert data["latent"]["psi"] == 0.5 and data["diffusion"]["prompt"] == loop.store.get("diffusion.prompt")

    c.send_message("/engine/latent/psi", 1.5)
    c.send_message("/engine/diffusion/prompt", "other")
    c.send_message("/engine/latent/z", None)
    assert loop.until(lambda: loop.store.get("latent.z") == ())
    c.send_message("/engine/preset/load", "scene one")
    loaded = recv_until(c, "/engine/preset/loaded")[-1]
    assert loaded.params == ["scene one", len(SPECS)]
    assert loop.until(lambda: loop.store.get("latent.psi") == 0.5)
    assert loop.store.get("latent.z") == (0.25, -0.5)
    assert loop.store.get("diffusion.prompt").startswith('a "quoted" prompt\twith tabs \\ and ünïcode')

    for bad in ("../escape", "/etc/passwd", "", ".hidden", "x" * 65):
        c.send_message("/engine/preset/save", bad)
        err = recv_until(c, "/engine/preset/error")[-1]
        assert err.params[0] == bad and "bad preset name" in err.params[1]
    assert not (tmp_path / "escape.toml").exists()
    (tmp_path / "presets" / "broken.toml").write_text("[fx]\nfeedback = 7\n")
    c.send_message("/engine/preset/load", "broken")
    err = recv_until(c, "/engine/preset/error")[-1]
    assert "broken.toml" in err.params[1] and "above the maximum" in err.params[1]
    c.send_message("/engine/preset/load", "missing")
    assert "no preset 'missing'" in recv_until(c, "/engine/preset/error")[-1].params[1]
    assert server.rejected["preset"] == 7
    assert loop.store.get("fx.feedback") == 0.1


def test_fuzz_thousands_of_random_and_mutated_packets_while_rendering(osc):
    """Random bytes, truncations, bit flips and spliced valid packets over real UDP while a render thread
    runs frames. Afterwards frames still advance and a valid message is still answered and applied."""
    server, loop = osc
    stop = threading.Event()
    frames = [0]
    errors: list[BaseException] = []

    def render():
        try:
            while not stop.is_set():
                loop.frame()
                frames[0] += 1
                time.sleep(0.002)
        except BaseException as e:  # any exception here fails the test below
            errors.append(e)

    t = threading.Thread(target=render, daemon=True)
    t.start()
    rng = random.Random(1234)
    valid = [_m(s.address, *( [0.5] if s.kind in ("float", "int", "bool") else ["x"] if s.kind in ("str",) else [0] if s.kind == "enum" else [0.1, 0.2])).dgram
             for s in SPECS] + [_m("/engine/get/latent/psi").dgram, _m("/engine/list").dgram]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))  # replies to /engine/get land here (and are ignored)
    sent = 0
    t0 = time.monotonic()
    for i in range(6000):
        kind = i % 6
        base = bytearray(rng.choice(valid))
        if kind == 0:
            d = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
        elif kind == 1:
            d = bytes(base[: rng.randrange(0, len(base) + 1)])
        elif kind == 2:
            for _ in range(rng.randrange(1, 6)):
                base[rng.randrange(len(base))] ^= 1 << rng.randrange(8)
            d = bytes(base)
        elif kind == 3:
            d = b"/" + bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40))) + bytes(base[rng.randrange(len(base)):])
        elif kind == 4:
            d = b"#bundle\x00" + bytes(8) + struct.pack(">i", rng.randrange(-8, 200)) + bytes(base)
        else:
            d = bytes(base)
        sock.sendto(d, ("127.0.0.1", server.port))
        sent += 1
        if i % 500 == 0:
            time.sleep(0.001)
    send_s = time.monotonic() - t0
    # Wait until the server has drained its socket (the kernel drops what a full buffer cannot hold, and says
    # so with the next packet it delivers, so exact totals are not knowable here).
    last, deadline = -1, time.monotonic() + 10
    while server.counts["packets"] != last and time.monotonic() < deadline:
        last = server.counts["packets"]
        time.sleep(0.3)
    f_before = frames[0]
    time.sleep(0.2)
    assert frames[0] > f_before, "the render loop stopped"
    assert not errors, errors
    assert server._thread is not None and server._thread.is_alive()
    st = server.stats()
    assert st["rejected"].get("malformed", 0) > 100, st
    # The server still answers and still applies a valid message (the flood bucket refills within 1 s).
    time.sleep(1.0)
    c = SimpleUDPClient("127.0.0.1", server.port)
    c.send_message("/engine/get/fx/feedback", None)
    recv_until(c, "/engine/fx/feedback", timeout=2.0)
    c.send_message("/engine/fx/hue_jitter", 0.625)
    end = time.monotonic() + 2
    while loop.store.get("fx.hue_jitter") != 0.625 and time.monotonic() < end:
        time.sleep(0.01)
    stop.set()
    t.join(5)
    assert loop.store.get("fx.hue_jitter") == 0.625
    # Every fuzz packet was either processed or counted as dropped by the kernel (the drop count arrives with
    # the next delivered packet: the valid ones above).
    st = server.stats()
    assert st["packets"] - 2 + st["rejected"].get("kernel_dropped", 0) == sent, st
    print(f"fuzz: {sent} packets in {send_s:.2f} s, {frames[0]} frames, stats {st}")


def test_flood_from_one_sender_is_dropped_and_counted(tmp_path):
    server = OscServer("127.0.0.1", 0, sender_rate=200.0)
    loop = Loop([server])
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        d = _m("/engine/fx/feedback", 0.3).dgram
        for _ in range(2000):
            sock.sendto(d, ("127.0.0.1", server.port))
        assert loop.until(lambda: server.counts["packets"] + server.rejected["kernel_dropped"] >= 2000, timeout=5)
        assert server.rejected["flood"] >= 1500
        assert server._limiter.lines <= 2
        other = client_for(server)  # another sender is unaffected
        other.send_message("/engine/fx/feedback", 0.7)
        assert loop.until(lambda: loop.store.get("fx.feedback") == f32(0.7))
    finally:
        loop.close()


# ----------------------------------------------------------------------------------------------------------------
# The factory and the CLI flags
# ----------------------------------------------------------------------------------------------------------------


def test_default_port_busy_runs_without_osc_but_a_named_port_must_be_free():
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        holder.bind(("127.0.0.1", 7000))
    except OSError:
        holder.close()
        holder = None  # something else holds 7000 already: just as good for this test
    try:
        # default port taken: warning, no OSC, no error (the prompt list is always there, idle without a list)
        assert [type(c).__name__ for c in build_controllers({})] == ["ThermalSampler", "PromptList"]
        with pytest.raises(UsageError, match="--osc-port 7000: cannot listen on 127.0.0.1:7000"):
            build_controllers({"osc_port": 7000})
    finally:
        if holder:
            holder.close()


def test_cli_flags_and_factory_validation(tmp_path):
    import argparse

    from engine.control import CONTROL_DEFAULTS, add_cli_arguments

    p = argparse.ArgumentParser()
    add_cli_arguments(p)
    assert vars(p.parse_args([])) == {}  # nothing given: the CLI's merge supplies defaults
    ns = p.parse_args(["--osc-port", "0", "--osc-out", "127.0.0.1:9001", "--osc-out", "[::1]:9002", "--thermal", "synthetic"])
    cs = build_controllers(ns)
    try:
        assert [type(c).__name__ for c in cs] == ["ThermalSampler", "PromptList", "OscTelemetry"]
    finally:
        for c in cs:
            c.stop()
    assert set(CONTROL_DEFAULTS) == {a.dest for a in p._actions if a.dest != "help"}
    port = free_udp_port()
    for opts, message in [
        ({"osc_port": port, "osc_out": [f"127.0.0.1:{port}"]}, "engine's own OSC port"),
        ({"osc_port": 0, "osc_out": ["nohostport"]}, "expected HOST:PORT"),
        ({"osc_port": 0, "thermal": "lava"}, "unknown source 'lava'"),
        ({"osc_port": 0, "replay": "x.jsonl", "map": "m.toml"}, "drop --map"),
        ({"osc_port": 0, "osc_out": ["127.0.0.1:9"], "osc_out_rate": 0}, "--osc-out-rate"),
        ({"osc_port": 70000}, "must be 0..65535"),
        ({"osc_port": port, "osc_host": "no.such.host.invalid"}, "cannot resolve"),
    ]:
        with pytest.raises(UsageError, match=message):
            build_controllers(opts)
    # A failed build released what it had made: the port is free again.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.close()


# ----------------------------------------------------------------------------------------------------------------
# The Max patch
# ----------------------------------------------------------------------------------------------------------------


def test_max_patch_is_a_valid_patcher_wired_to_real_addresses():
    patch = json.loads((REPO / "engine/examples/max/engine.maxpat").read_text())
    p = patch["patcher"]
    boxes = {b["box"]["id"]: b["box"] for b in p["boxes"]}
    assert len(boxes) == len(p["boxes"])
    for b in boxes.values():
        assert {"id", "maxclass", "numinlets", "numoutlets", "patching_rect"} <= set(b)
        assert len(b["patching_rect"]) == 4
        if b["numoutlets"]:
            assert len(b["outlettype"]) == b["numoutlets"]
    for ln in p["lines"]:
        (src, outlet), (dst, inlet) = ln["patchline"]["source"], ln["patchline"]["destination"]
        assert outlet < boxes[src]["numoutlets"] and inlet < boxes[dst]["numinlets"]
    texts = [b.get("text", "") for b in boxes.values()]
    addresses = {s.address for s in SPECS}
    prepends = [t.split()[1] for t in texts if t.startswith("prepend ")]
    assert {"/engine/latent/psi", "/engine/latent/speed", "/engine/latent/seed", "/engine/fx/feedback", "/engine/fx/perturb",
            "/engine/diffusion/strength", "/engine/diffusion/steps"} <= set(prepends)
    assert set(prepends) <= addresses
    # seed 002's /z: a bang makes 512 values and sends them as one message (the server takes all values at once).
    # zl's first argument raises Max's default list limit of 256, else it sends 256 values (issue 13, bug 2).
    assert "/engine/latent/z" in prepends and "uzi 512" in texts and "zl 512 group 512" in texts
    assert "zl group 512" not in texts
    # Gaussian z (Box-Muller from two uniforms), not uniform: [t b b] fires right to left, so the right outlet's random
    # must reach expr's cold (right) inlet before the left one's reaches the hot inlet.
    expr = next(i for i, b in boxes.items() if b.get("text", "").startswith("expr ") and "sqrt(-2." in b["text"])
    assert "cos(6.2831853 * $i2" in boxes[expr]["text"] and "log(($i1" in boxes[expr]["text"]
    trig = next(i for i, b in boxes.items() if b.get("text") == "t b b")
    wires = {(ln["patchline"]["source"][0], ln["patchline"]["source"][1]): ln["patchline"]["destination"] for ln in p["lines"]}
    right_random, left_random = wires[(trig, 1)][0], wires[(trig, 0)][0]
    assert wires[(right_random, 0)] == [expr, 1] and wires[(left_random, 0)] == [expr, 0]
    # Diffusion has its own prompt, guidance and seed controls; the show controls are there.
    assert {"/engine/diffusion/prompt", "/engine/diffusion/guidance", "/engine/diffusion/seed", "/engine/output/freeze",
            "/engine/output/blackout", "/engine/output/opacity", "/engine/output/fps", "/engine/stylegan/network",
            "/engine/stylegan/network_index"} <= set(prepends)
    assert {"/engine/output/fit cover", "/engine/output/fit contain"} <= set(texts)
    # seed 004's "new prompt" button: next / random entry of the prompt list
    assert "/engine/diffusion/prompt_index" in prepends and "counter" in texts
    send = next(i for i, b in boxes.items() if b.get("text") == "udpsend 127.0.0.1 7000")
    into_send = {ln["patchline"]["source"][0] for ln in p["lines"] if ln["patchline"]["destination"][0] == send}
    assert {i for i, b in boxes.items() if b.get("text", "").startswith("prepend ")} <= into_send
    assert "udpreceive 7001" in texts
    route = next(t for t in texts if t.startswith("route "))
    assert "/engine/fps" in route and "/engine/gpu/temperature" in route
    # Every message box is something the server accepts.
    server = OscServer("127.0.0.1", 0)
    try:
        for b in boxes.values():
            if b["maxclass"] == "message":
                assert b["text"].split()[0] in server.routes, b["text"]
    finally:
        server.stop()


def test_replies_to_one_host_are_bounded_so_a_forged_sender_cannot_amplify():
    """Issue 17: /engine/list answers ~66 messages (13 kB) to the sender's host. With a forged UDP source that host is
    someone else: what one host can be sent is bounded (100 messages/s, burst 200), other hosts are unaffected."""
    server = OscServer("127.0.0.1", 0)
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        victim.bind(("127.0.0.1", 0))
        other.bind(("127.0.0.2", 0))
        for _ in range(20):  # 20 requests "from" the victim ask for ~1300 replies
            server.handle_packet(_m("/engine/list").dgram, victim.getsockname())
        to_victim = server.counts["replies"]
        assert 66 <= to_victim <= 2 * 100 + 20, to_victim
        server.handle_packet(_m("/engine/list").dgram, other.getsockname())
        assert server.counts["replies"] - to_victim == len(SPECS) + 2  # the other host's whole list
        victim.settimeout(1.0)
        received = 0
        try:
            while True:
                victim.recvfrom(65536)
                received += 1
        except socket.timeout:
            pass
        assert received == to_victim  # replies went to the requesting host:port, nowhere else
    finally:
        server.stop()
        victim.close()
        other.close()


# ----------------------------------------------------------------------------------------------------------------
# End to end: `engine run` as a subprocess, driven over UDP
# ----------------------------------------------------------------------------------------------------------------

E2E_MAP = """
[[map]]
source = "temperature"
param = "latent.psi"
in = [40, 85]
out = [0.5, 1.5]

[[lfo]]
param = "fx.perturb"
shape = "sine"
period = 0.5
depth = 0.3
phase = 0.25
"""


def _max_frame(path: Path) -> int:
    fs = [json.loads(l).get("f", -1) for l in path.read_text().splitlines() if l.strip()]
    return max(fs, default=-1)


@pytest.mark.slow
def test_engine_run_end_to_end_osc_telemetry_and_fuzz(tmp_path):
    """`engine run` with OSC in, telemetry out, a synthetic temperature mapped to psi and a recorder: set and
    get over UDP, read telemetry, fuzz it with thousands of bad packets, and check it still renders and still
    answers."""
    (tmp_path / "fast.toml").write_text("[generator]\nchannel_base = 512\nchannel_max = 16\ncalibrate = false\n")
    (tmp_path / "m.toml").write_text(E2E_MAP)
    port = free_udp_port()
    tele = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tele.bind(("127.0.0.1", 0))
    tele.settimeout(0.2)
    rec, stats = tmp_path / "rec.jsonl", tmp_path / "stats.json"
    cmd = [sys.executable, "-m", "engine", "run", "--sink", "null", "--size", "64", "--quiet", "--config", str(tmp_path / "fast.toml"),
           "--clock", "wall", "--seconds", "8", "--osc-port", str(port), "--osc-out", f"127.0.0.1:{tele.getsockname()[1]}",
           "--osc-out-rate", "20", "--thermal", "synthetic:const,value=62.5", "--map", str(tmp_path / "m.toml"),
           "--record", str(rec), "--stats-json", str(stats)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        telemetry: dict[str, float] = {}
        deadline = time.monotonic() + 90
        while "/engine/fps" not in telemetry and time.monotonic() < deadline and proc.poll() is None:
            try:
                m = OscMessage(tele.recv(65536))
                telemetry[m.address] = m.params[0]
            except socket.timeout:
                pass
        assert "/engine/fps" in telemetry, proc.stderr.read() if proc.poll() is not None else "no telemetry"
        for _ in range(30):  # a few ticks: collect every address
            try:
                m = OscMessage(tele.recv(65536))
                telemetry[m.address] = m.params[0]
            except socket.timeout:
                pass
        assert telemetry["/engine/gpu/temperature"] == 62.5
        assert telemetry["/engine/latent/psi"] == pytest.approx(1.0)  # 62.5 C is halfway: 0.5 + 0.5 * 1.0
        assert "/engine/frame_ms" in telemetry and "/engine/fx/perturb" in telemetry
        assert all(isinstance(v, float) for v in telemetry.values())  # one float per address

        c = SimpleUDPClient("127.0.0.1", port)
        c.send_message("/engine/fx/feedback", 0.3)
        c.send_message("/engine/get/fx/feedback", None)
        assert recv_until(c, "/engine/fx/feedback")[-1].params == [pytest.approx(0.3)]

        rng = random.Random(7)
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        good = _m("/engine/latent/psi", 0.5).dgram
        for i in range(4000):
            if i % 2:
                d = bytearray(good)
                d[rng.randrange(len(d))] = rng.getrandbits(8)
                d = bytes(d[: rng.randrange(1, len(d) + 1)])
            else:
                d = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 80)))
            junk.sendto(d, ("127.0.0.1", port))
        time.sleep(0.7)  # the recorder flushes twice a second
        f_after_fuzz = _max_frame(rec)
        time.sleep(1.2)  # also lets the flood bucket refill
        assert _max_frame(rec) > f_after_fuzz, "frames stopped after the fuzz"
        c.send_message("/engine/get/latent/seed", None)
        assert recv_until(c, "/engine/latent/seed", timeout=2.0)[-1].params == [0]
        c.send_message("/engine/fx/hue_jitter", 0.5)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    summary = json.loads(stats.read_text())
    osc = summary["controllers"]["OscServer"]
    assert osc["rejected_total"] > 1000 and osc["accepted"] >= 2, osc
    sets = [json.loads(l) for l in rec.read_text().splitlines() if '"set"' in l]
    assert any(s["set"].get("fx.feedback") == pytest.approx(0.3) for s in sets)
    assert any(s["set"].get("fx.hue_jitter") == 0.5 for s in sets)  # the last message, after the fuzz, applied
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LIBLO, reason="liblo-tools (oscsend/oscdump) not installed")
def test_liblo_drives_a_running_engine_and_reads_its_telemetry(tmp_path):
    """The second OSC implementation against a real `engine run --sink null`: liblo's oscsend sets a parameter
    and asks for it back, liblo's oscdump receives both the reply and the engine's telemetry."""
    (tmp_path / "fast.toml").write_text("[generator]\nchannel_base = 512\nchannel_max = 16\ncalibrate = false\n")
    port, dump_port = free_udp_port(), free_udp_port()
    dump = subprocess.Popen(["oscdump", "-L", str(dump_port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(dump.stdout.readline, "")), daemon=True).start()
    cmd = [sys.executable, "-m", "engine", "run", "--sink", "null", "--size", "64", "--quiet", "--config",
           str(tmp_path / "fast.toml"), "--clock", "wall", "--seconds", "6", "--osc-port", str(port),
           "--osc-out", f"127.0.0.1:{dump_port}", "--osc-out-rate", "10", "--thermal", "synthetic:const,value=55"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def seen(address: str, timeout: float) -> list[list[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [ln.split()[ln.split().index(address):] for ln in list(lines) if address in ln.split()]
            if hits:
                return hits
            time.sleep(0.05)
        return []

    try:
        assert seen("/engine/fps", 90), f"no telemetry reached oscdump: {lines[-5:]}"
        assert seen("/engine/gpu/temperature", 5)[-1] == ["/engine/gpu/temperature", "f", "55.000000"]
        subprocess.run(["oscsend", "127.0.0.1", str(port), "/engine/fx/brightness_jitter", "f", "0.25"], check=True, timeout=5)
        time.sleep(0.3)
        subprocess.run(["oscsend", "127.0.0.1", str(port), "/engine/get/fx/brightness_jitter", "i", str(dump_port)],
                       check=True, timeout=5)
        assert seen("/engine/fx/brightness_jitter", 5)[-1] == ["/engine/fx/brightness_jitter", "f", "0.250000"]
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        for p in (proc, dump):
            if p.poll() is None:
                p.kill()
                p.wait()
