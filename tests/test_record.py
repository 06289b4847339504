"""Record and replay: a show driven by real OSC over UDP, a temperature source and a mapping with smoothing
and LFOs is recorded; replaying it gives the identical parameter snapshot at every frame. Also end to end
through `engine run --record` / `--replay`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pythonosc.udp_client import SimpleUDPClient

from engine.clock import FrameTime
from engine.control import build_controllers
from engine.control.record import FORMAT, Replayer, diff
from engine.errors import UsageError
from engine.params import ParamStore

REPO = Path(__file__).resolve().parents[1]

MAP = """
[[map]]
source = "temperature"
param = "latent.psi"
in = [40, 85]
out = [0.3, 1.4]
curve = "smoothstep"
smoothing = 0.5

[[map]]
source = "temperature"
param = "diffusion.steps"
in = [40, 85]
out = [1, 4]
smoothing = 0.2

[[lfo]]
param = "fx.perturb"
shape = "noise"
period = 0.3
depth = 0.4
seed = 9

[[lfo]]
param = "latent.speed"
shape = "triangle"
period = 0.7
depth = 0.1
"""


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_frames(controllers, store, n, fps=30.0, on_frame=None, sleep=0.004):
    """The hooks in engine.loop's order; returns the snapshot every frame rendered with."""
    for c in controllers:
        c.start(store, {})
    snaps = []
    try:
        for i in range(n):
            if on_frame:
                on_frame(i)
            when = FrameTime(t=i / fps, index=i, dt=(1.0 / fps) if i else 0.0)
            for c in controllers:
                c.before_frame(store, when)
            snaps.append(store.snapshot())
            for c in controllers:
                c.after_frame(when, {"fps": fps, "frame_ms": 1000.0 / fps})
            time.sleep(sleep)  # OSC arrives on its own thread meanwhile, at frames nobody can predict
    finally:
        for c in reversed(controllers):
            c.stop()
    return snaps


def test_record_then_replay_gives_identical_snapshots_every_frame(tmp_path):
    (tmp_path / "m.toml").write_text(MAP)
    rec = tmp_path / "show.jsonl"
    port = free_udp_port()
    cs = build_controllers({"osc_port": port, "thermal": "synthetic:sine,lo=35,hi=90,period=0.8",
                            "map": str(tmp_path / "m.toml"), "record": str(rec), "preset_dir": str(tmp_path)})
    assert [type(c).__name__ for c in cs] == ["ThermalSampler", "OscServer", "MappingEngine", "PromptList", "Recorder"]
    sampler = cs[0]
    client = SimpleUDPClient("127.0.0.1", port)
    temps = []

    def perform(i):
        if i == 10:
            client.send_message("/engine/fx/feedback", 0.6)
            client.send_message("/engine/latent/seed", 77)
        if i == 25:
            client.send_message("/engine/latent/psi", 1.9)  # overrides the mapping...
            client.send_message("/engine/latent/z", [0.1 * k for k in range(16)])
        if i == 40:
            client.send_message("/engine/preset/save", "mid")
        if i == 55:
            client.send_message("/engine/release/latent/psi", None)  # ...until released
            client.send_message("/engine/latent/speed", 3.0)
        if i == 70:
            client.send_message("/engine/fx/feedback", 0.2)
            client.send_message("/engine/preset/load", "mid")

    store = ParamStore()
    snaps = run_frames(cs, store, 100, on_frame=perform)
    temps = sampler.samples
    assert temps >= 5
    # The show really moved: OSC values, mapping output and LFOs all changed the snapshot.
    assert snaps[-1].latent.seed == 77 and snaps[-1].fx.feedback == pytest.approx(0.6)
    assert len({s.latent.psi for s in snaps}) > 10 and len({s.fx.perturb for s in snaps}) > 50
    assert len({s.diffusion.steps for s in snaps}) >= 2
    lines = [json.loads(l) for l in rec.read_text().splitlines()]
    assert lines[0]["format"] == FORMAT and lines[-1] == {"end": True, "frames": 100}
    osc = [l["osc"][0] for l in lines if "osc" in l]
    assert osc.count("/engine/fx/feedback") == 2 and "/engine/release/latent/psi" in osc and "/engine/preset/load" in osc
    assert sum(1 for l in lines if "temp" in l) >= 3

    # Replay into a store that starts somewhere else entirely: the header puts it back.
    store2 = ParamStore()
    store2.update({"latent.psi": -3.0, "fx.feedback": 0.99, "latent.seed": 5})
    cs2 = build_controllers({"replay": str(rec), "osc_port": 0})
    assert [type(c).__name__ for c in cs2] == ["Replayer", "PromptList"]
    replayed = run_frames(cs2, store2, 100, sleep=0)
    for i, (a, b) in enumerate(zip(snaps, replayed)):
        assert a == b, (i, diff(a, b))
    assert cs2[0].stats()["finished"]


def test_replay_feeds_the_recorded_temperature_and_holds_after_the_end(tmp_path):
    rec = tmp_path / "r.jsonl"
    sets = [{"f": 3, "begin": True}, {"f": 3, "temp": {"temperature": 50.0}, "src": "nvml"},
            {"f": 4, "t": 0.1, "set": {"fx.feedback": 0.5}}, {"f": 6, "temp": {"temperature": 70.0, "power": 200.0}, "src": "nvml"},
            {"f": 6, "t": 0.2, "set": {"latent.z": [1.0, 2.0]}}, {"end": True, "frames": 4}]
    header = {"format": FORMAT, "params": {"latent.psi": 0.25}}
    rec.write_text("\n".join(json.dumps(x) for x in [header, *sets]) + "\n")
    r = Replayer(rec)
    store = ParamStore()
    r.start(store, {})
    assert store.get("latent.psi") == 0.25 and store.get("fx.feedback") == 0.1
    seen = []
    for i in range(10, 16):  # the replay's own frame numbers need not match the recording's
        r.before_frame(store, FrameTime(t=0, index=i))
        seen.append((store.get("fx.feedback"), store.get("latent.z"), r.current.temperature if r.current else None))
    assert seen == [(0.1, (), 50.0), (0.5, (), 50.0), (0.5, (), 50.0), (0.5, (1.0, 2.0), 70.0), (0.5, (1.0, 2.0), 70.0), (0.5, (1.0, 2.0), 70.0)]
    assert r.current.power == 200.0 and r.finished


@pytest.mark.parametrize("content,message", [
    ("", "empty file"),
    ('{"format": "something-else"}\n', ":1: not an engine recording"),
    (json.dumps({"format": FORMAT, "params": {}}) + "\n{oops\n", ":2: not JSON"),
    (json.dumps({"format": FORMAT, "params": {}}) + '\n{"f": 1, "set": {"fx.feedback": 9}}\n', ":2: fx.feedback: 9 is above the maximum"),
    (json.dumps({"format": FORMAT, "params": {"latent.nope": 1}}) + "\n", ":1: unknown parameter"),
    # Issue 17: each of these was a traceback, or (t = NaN) black frames with no error.
    ('{"format": "%s", "params": [1, 2]}\n' % FORMAT, ':1: "params" must be an object'),
    (json.dumps({"format": FORMAT, "params": {}}) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n", ":2: nested too deeply"),
    (json.dumps({"format": FORMAT, "params": {}}) + '\n{"f": 1, "t": NaN}\n', ":2: t must be a finite number"),
    (json.dumps({"format": FORMAT, "params": {}}) + '\n{"f": 1, "t": Infinity}\n', ":2: t must be a finite number"),
    (json.dumps({"format": FORMAT, "params": {}}) + '\n{"f": 1, "set": [1]}\n', ':2: "set" must be an object'),
    (json.dumps({"format": FORMAT, "params": {}}) + '\n{"f": true}\n', ":2: frame index must be a whole number"),
])
def test_bad_recordings_are_usage_errors_with_file_and_line(tmp_path, content, message):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        Replayer(p)
    with pytest.raises(UsageError, match="cannot read"):
        Replayer(tmp_path / "missing.jsonl")
    with pytest.raises(UsageError, match="drop --thermal"):
        build_controllers({"replay": str(p), "thermal": "synthetic", "osc_port": 0})


# ----------------------------------------------------------------------------------------------------------------
# End to end: `engine run`
# ----------------------------------------------------------------------------------------------------------------

FAST = "[generator]\nchannel_base = 512\nchannel_max = 16\ncalibrate = false\n"


def engine_run(args, tmp_path, timeout=120):
    (tmp_path / "fast.toml").write_text(FAST)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "engine", "run", "--sink", "null", "--size", "64", "--quiet", "--config", str(tmp_path / "fast.toml"), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def frame_sets(path):
    """{frame offset from begin: changes} and the header params of a recording."""
    lines = [json.loads(l) for l in Path(path).read_text().splitlines()]
    begin = next(l["f"] for l in lines if l.get("begin"))
    return lines[0]["params"], {l["f"] - begin: l["set"] for l in lines if "set" in l}


@pytest.mark.slow
def test_engine_run_record_then_replay_frame_for_frame(tmp_path):
    (tmp_path / "m.toml").write_text(MAP)
    r1, r2 = tmp_path / "r1.jsonl", tmp_path / "r2.jsonl"
    a = engine_run(["--frames", "8", "--osc-port", "0", "--thermal", "synthetic:sine,lo=35,hi=90,period=0.5",
                    "--map", str(tmp_path / "m.toml"), "--record", str(r1), "--seed", "3"], tmp_path)
    assert a.returncode == 0, a.stderr
    b = engine_run(["--frames", "8", "--osc-port", "0", "--replay", str(r1), "--record", str(r2), "--seed", "8"], tmp_path)
    assert b.returncode == 0, b.stderr
    p1, s1 = frame_sets(r1)
    p2, s2 = frame_sets(r2)
    # The replay run was started with another seed; the replay put the recorded start state back before its
    # own recorder looked, and from then on every frame's full parameter state is the recorded one.
    assert p1["latent.seed"] == 3 and p2 == p1
    assert len(s1) >= 7  # the LFOs change something every frame
    state1, state2 = dict(p1), dict(p2)
    for f in range(8):
        state1.update(s1.get(f, {}))
        state2.update(s2.get(f, {}))
        assert state1 == state2, f


@pytest.mark.slow
def test_a_wall_clock_show_replays_to_the_same_pixels(tmp_path):
    """Live shows run on the wall clock, where t depends on how fast each frame was: the recording keeps every
    frame's t and the replay uses it, so the walk and the shaders land on the same images."""
    r1, r2 = tmp_path / "r1.jsonl", tmp_path / "r2.jsonl"
    live, again = tmp_path / "live", tmp_path / "again"
    common = ["--frames", "6", "--osc-port", "0", "--clock", "wall", "--fps", "0", "--set", "latent.speed=3",
              "--set", "fx.perturb=0.5"]
    a = engine_run([*common, "--record", str(r1), "--sink", f"file:{live}/%05d.png"], tmp_path)
    assert a.returncode == 0, a.stderr
    b = engine_run([*common, "--replay", str(r1), "--record", str(r2), "--sink", f"file:{again}/%05d.png"], tmp_path)
    assert b.returncode == 0, b.stderr

    def times(path):
        return [l["t"] for l in map(json.loads, Path(path).read_text().splitlines()) if "t" in l]

    assert times(r1) == times(r2) and len(times(r1)) == 6
    first, second = sorted(live.glob("*.png")), sorted(again.glob("*.png"))
    assert len(first) == 6 and [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert first[0].read_bytes() != first[-1].read_bytes()  # it moved
