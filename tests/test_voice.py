"""`engine voice` (issue 16, seed 000): espeak-ng for real over real UDP (WAV files that hold speech, /voice/done with
their duration), a flood that stays bounded, the busy policies, the templates, the engine's --voice emitter on a
synthetic temperature ramp, clear errors, and Parler-TTS where its environment can run."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from engine.clock import FrameTime
from engine.control.thermal import SyntheticSource, ThermalSampler
from engine.control.voice_out import VoiceEmitter, band_of, parse_bands
from engine.errors import UsageError
from engine.params import ParamStore
from engine.voice.backends import Backend, default_parler_env, env_python
from engine.voice.service import VoiceService
from engine.voice.templates import Templates, fill, load_templates

REPO = Path(__file__).resolve().parents[1]
HAVE_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng not installed (apt-get install espeak-ng)")


def listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)
    return s


def receive(sock, address, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            m = OscMessage(sock.recv(65536))
        except socket.timeout:
            continue
        if m.address == address:
            return m
    raise AssertionError(f"no {address} within {timeout} s")


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class VoiceProcess:
    def __init__(self, tmp_path, *extra):
        self.port, self.reply = free_port(), listener()
        self.out = tmp_path / "wav"
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "voice", "--port", str(self.port), "--reply",
                                      f"127.0.0.1:{self.reply.getsockname()[1]}", "--out", str(self.out), "--audio", "none",
                                      "--backend", "espeak", *extra], cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        assert "listening on" in line, line + self.proc.stdout.read()
        self.banner = line
        self.client = SimpleUDPClient("127.0.0.1", self.port)

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def close(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        self.reply.close()
        return out


def wav_stats(path: Path) -> tuple[float, float, float]:
    """(seconds, RMS level, fraction of 20 ms windows with sound)."""
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    win = rate // 50
    frames = x[: len(x) // win * win].reshape(-1, win)
    active = float((np.sqrt((frames ** 2).mean(axis=1)) > 0.01).mean())
    return len(x) / rate, float(np.sqrt((x ** 2).mean())), active


@needs_espeak
def test_say_over_udp_writes_speech_and_replies_with_its_duration(tmp_path):
    v = VoiceProcess(tmp_path)
    try:
        v.client.send_message("/voice/say", "The machine is warm tonight, seventy two degrees.")
        started = receive(v.reply, "/voice/started")
        done = receive(v.reply, "/voice/done")
        assert started.params == ["The machine is warm tonight, seventy two degrees."]
        wavs = sorted(v.out.glob("*.wav"))
        assert len(wavs) == 1
        seconds, rms, active = wav_stats(wavs[0])
        assert 1.5 < seconds < 8.0 and done.params[0] == pytest.approx(seconds, abs=0.01)
        assert rms > 0.02 and 0.3 < active < 0.98  # speech: loud enough, with the pauses between words
        # An event from engine run, filled from the shipped lines file.
        v.client.send_message("/voice/event", ["temperature_band", "temperature", 81.0, "direction", "rising", "band", 5])
        assert receive(v.reply, "/voice/started").params == ["I am getting warmer: 81 degrees."]
        receive(v.reply, "/voice/done")
    finally:
        out = v.close()
    assert "espeak" in v.banner and "2 lines spoken" in out


@needs_espeak
def test_a_flood_of_lines_stays_bounded_and_the_voice_still_answers(tmp_path):
    v = VoiceProcess(tmp_path)
    try:
        v.client.send_message("/voice/say", "warm up")
        receive(v.reply, "/voice/done")
        before = v.rss_kb()
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        from pythonosc.osc_message_builder import OscMessageBuilder

        for i in range(1000):
            b = OscMessageBuilder("/voice/say")
            b.add_arg(f"line number {i} of a flood that must not grow memory")
            sender.sendto(b.build().dgram, ("127.0.0.1", v.port))
        junk = bytes(range(256)) * 4
        for _ in range(200):
            sender.sendto(junk, ("127.0.0.1", v.port))  # not OSC at all
        t0 = time.monotonic()
        v.client.send_message("/voice/stop", [])
        time.sleep(0.5)
        v.client.send_message("/voice/say", "still here")
        m = None
        while m is None or m.params != ["still here"]:
            m = receive(v.reply, "/voice/started", timeout=30)
        assert time.monotonic() - t0 < 30
        receive(v.reply, "/voice/done")
        assert v.rss_kb() - before < 30_000, (before, v.rss_kb())
    finally:
        out = v.close()
    assert "'dropped'" in out and len(list(v.out.glob("*.wav"))) <= 12  # 8 queued at most, plus what was speaking


class Slow(Backend):
    """A backend that speaks 1 s of tone in 0.1 s chunks at real-time pace (the busy policies need a line that takes
    time, which WAV-only espeak output does not)."""

    name = "slow"
    rate = 8000

    def __init__(self):
        self.stopped = threading.Event()

    def stream(self, text, description):
        for _ in range(10):
            time.sleep(0.1)
            yield np.full(800, 0.25, np.float32)

    def interrupt(self):
        self.stopped.set()


@pytest.mark.parametrize("policy", ["queue", "interrupt", "drop"])
def test_busy_policies(tmp_path, policy):
    reply = listener()
    svc = VoiceService(Slow(), Templates(), port=0, reply=("127.0.0.1", reply.getsockname()[1]), out_dir=tmp_path,
                       on_busy=policy)
    svc.start()
    try:
        c = SimpleUDPClient("127.0.0.1", svc.port)
        c.send_message("/voice/say", "first")
        receive(reply, "/voice/started")
        c.send_message("/voice/say", "second")
        first_done = receive(reply, "/voice/done").params[0]
        if policy == "interrupt":
            assert first_done < 0.9 and receive(reply, "/voice/started").params == ["second"]
        elif policy == "queue":
            assert first_done == pytest.approx(1.0) and receive(reply, "/voice/started").params == ["second"]
        else:
            assert first_done == pytest.approx(1.0)
            time.sleep(0.3)
            assert svc.pending() == 0 and svc.stats["dropped"] == 1
    finally:
        svc.close()
        reply.close()


def test_templates_fill_from_live_values_and_never_fail_a_line(tmp_path):
    assert fill("{temperature:.0f} degrees at {fps:.1f} fps", {"temperature": 71.6, "fps": 29.97}) == "72 degrees at 30.0 fps"
    assert fill("{temperature:.0f} degrees", {"temperature": float("nan")}) == "unknown degrees"
    assert fill("{prompt:.0f} and {missing}", {"prompt": "a red house"}) == "a red house and unknown"
    assert fill("{unclosed", {}) == "{unclosed"
    t = load_templates(None)  # the shipped example
    assert t.line("temperature_band", {"temperature": 50.0, "direction": "falling"}).startswith("Cooling down, 50")
    assert t.line("temperature_band", {"temperature": 50.0, "direction": "falling"}).startswith("The fever passes")
    assert t.line("no-such-event", {}) is None
    bad = tmp_path / "bad.toml"
    bad.write_text("[events.start]\nlines = 'not a list'\n")
    with pytest.raises(UsageError, match=r"bad.toml: events.start.lines must be a list"):
        load_templates(bad)


class Feed:
    """A synthetic temperature sampled at the frame's time (the real SyntheticSource behind the real sampler)."""

    def __init__(self, spec):
        self.t = 0.0
        self.sampler = ThermalSampler(SyntheticSource(spec, clock=lambda: self.t))

    def at(self, t):
        self.t = t
        self.sampler.sample_once()
        self.sampler.current = self.sampler.latest


def test_emitter_sends_the_right_events_on_a_temperature_ramp():
    sock = listener()
    clock = [0.0]
    feed = Feed("ramp,lo=30,hi=90,period=60")
    store = ParamStore()
    em = VoiceEmitter(f"127.0.0.1:{sock.getsockname()[1]}", bands=parse_bands("50,70"), gap=2.0, thermal=feed.sampler,
                      clock=lambda: clock[0])
    em.start(store, {})
    got = []
    for frame in range(30 * 40):  # 40 s at 30 fps: the ramp goes 30 -> ~70 degrees
        t = frame / 30.0
        clock[0] = t
        feed.at(t)
        if frame == 30 * 25:
            store.set("diffusion.prompt", "a red house by the sea")
        em.after_frame(FrameTime(t=t, index=frame, dt=1 / 30), {"fps": 30.0})
    while True:
        try:
            m = OscMessage(sock.recv(65536))
        except socket.timeout:
            break
        got.append((m.params[0], dict(zip(m.params[1::2], m.params[2::2]))))
    sock.close()
    names = [n for n, _ in got]
    assert names == ["start", "temperature_band", "prompt"], names
    band = got[1][1]
    assert band["direction"] == "rising" and band["band"] == 1 and 50.0 <= band["temperature"] < 51.0
    assert got[2][1]["prompt"] == "a red house by the sea" and got[2][1]["fps"] == 30.0
    assert band_of(69.9, (50.0, 70.0)) == 1 and band_of(70.0, (50.0, 70.0)) == 2
    with pytest.raises(UsageError, match="--voice-bands"):
        parse_bands("50,hot")


def test_emitter_coalesces_inside_the_gap():
    sock = listener()
    clock = [0.0]
    store = ParamStore()
    em = VoiceEmitter(f"127.0.0.1:{sock.getsockname()[1]}", gap=5.0, clock=lambda: clock[0])
    em.start(store, {})
    for i in range(20):  # twenty seed changes in two seconds: one start now, one seed event after the gap
        clock[0] = i * 0.1
        store.set("latent.seed", i)
        em.after_frame(FrameTime(t=clock[0], index=i, dt=0.1), {})
    clock[0] = 6.0
    em.after_frame(FrameTime(t=6.0, index=21, dt=0.1), {})
    names = []
    while True:
        try:
            names.append(OscMessage(sock.recv(65536)).params[0])
        except socket.timeout:
            break
    sock.close()
    assert names == ["start", "seed"] and em.stats()["coalesced"] >= 18
    store.set("latent.seed", 2**32 - 1)  # beyond OSC's int32: sent as int64, never an exception on the render thread
    sock2 = listener()
    em2 = VoiceEmitter(f"127.0.0.1:{sock2.getsockname()[1]}", gap=0.0, clock=lambda: 0.0)
    em2.start(store, {})
    em2.after_frame(FrameTime(t=0.0, index=0, dt=0.0), {})
    m = OscMessage(sock2.recv(65536))
    sock2.close()
    assert dict(zip(m.params[1::2], m.params[2::2]))["seed"] == 2**32 - 1


def test_engine_run_sends_voice_events(tmp_path):
    sock = listener()
    (tmp_path / "fast.toml").write_text("[generator]\nchannel_base = 512\nchannel_max = 16\ncalibrate = false\n")
    p = subprocess.run([sys.executable, "-m", "engine", "run", "--config", str(tmp_path / "fast.toml"), "--size", "64",
                        "--frames", "3", "--sink", "null", "--quiet", "--osc-port", "0", "--thermal", "synthetic:const,value=66",
                        "--voice", f"127.0.0.1:{sock.getsockname()[1]}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    m = OscMessage(sock.recv(65536))
    sock.close()
    values = dict(zip(m.params[1::2], m.params[2::2]))
    assert m.address == "/voice/event" and m.params[0] == "start" and values["temperature"] == 66.0
    bad = subprocess.run([sys.executable, "-m", "engine", "run", "--voice", "nowhere", "--frames", "1"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--voice nowhere: expected HOST:PORT" in bad.stderr


def test_clear_errors(tmp_path):
    def voice(*args):
        return subprocess.run([sys.executable, "-m", "engine", "voice", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=120)

    p = voice("--audio", "none")
    assert p.returncode == 2 and "--audio none needs --out DIR" in p.stderr
    p = voice("--backend", "parler", "--parler-env", str(tmp_path / "none"), "--out", str(tmp_path), "--audio", "none")
    assert p.returncode == 2 and "engine voice --setup parler" in p.stderr and p.stderr.count("\n") == 1
    p = voice("--lines", str(tmp_path / "missing.toml"), "--out", str(tmp_path), "--audio", "none")
    assert p.returncode == 2 and "missing.toml: no such file" in p.stderr
    try:
        import sounddevice as sd

        has_output = any(d.get("max_output_channels", 0) > 0 for d in sd.query_devices())
    except (ImportError, OSError):
        has_output = False
    if not has_output:  # this machine: no sound card
        p = voice("--port", "0")
        assert p.returncode == 2 and "no audio output" in p.stderr and "--out DIR" in p.stderr


def _parler_env_works() -> str | None:
    env = Path(os.environ.get("ENGINE_PARLER_ENV", default_parler_env()))
    python = env_python(env)
    if not python.is_file():
        return f"no Parler-TTS environment at {env} (engine voice --setup parler)"
    r = subprocess.run([str(python), "-c", "import parler_tts"], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return f"parler_tts does not import in {env}: {(r.stderr.strip().splitlines() or ['?'])[-1][:160]}"
    return None


@pytest.mark.slow
def test_parler_tiny_model_produces_audio_of_the_expected_length(tmp_path):
    """A tiny randomly initialised Parler-TTS (its words are noise) in its own environment, through the worker."""
    why = _parler_env_works()
    if why:
        pytest.skip(why)
    from engine.voice.backends import ParlerBackend

    env = Path(os.environ.get("ENGINE_PARLER_ENV", default_parler_env()))
    backend = ParlerBackend(env=env, device="cpu", tiny=True)
    try:
        audio = np.concatenate(list(backend.stream("hello", "a calm voice")))
    finally:
        backend.close()
    # max_length 64 codec frames at 86 frames/s, minus the delay pattern: a fraction of a second, never empty.
    assert backend.rate == 44100 and 0 < len(audio) <= 64 * 44100 // 86 + 44100 // 86
