"""`engine run` / `engine info` end to end, as a user runs them: real generator, real GL, real video files
decoded back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parent.parent


def engine(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=e)


def decode(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_run_writes_a_live_coherent_video(tmp_path):
    out = tmp_path / "out.mp4"
    stats = tmp_path / "stats.json"
    p = engine("run", "--frames", "30", "--size", "128", "--sink", f"file:{out}", "--osc-port", "0",
               "--stats-json", str(stats))
    assert p.returncode == 0, p.stderr
    frames = decode(out)
    assert len(frames) == 30
    assert frames[0].shape == (128, 128, 3)
    f = np.stack(frames).astype(np.float64)
    assert f.std() > 20, "the default generator should make visible imagery, not a flat field"
    step = [np.abs(f[i + 1] - f[i]).mean() for i in range(29)]
    assert min(step) > 0.0, "every frame differs from the last: the stream is alive"
    far = np.abs(f[29] - f[0]).mean()
    assert np.mean(step) < far, "consecutive frames are closer than frames far apart: the stream is coherent"
    s = json.loads(stats.read_text())
    assert s["frames"] == 30
    assert s["upload"]["host_copies_per_frame"] == 1  # CPU: the staged texture write
    assert s["sink_stats"][f"file:{out}"]["written"] == 30
    assert set(s["stage_ms"]) == {"generate", "upload", "shaders", "sinks"}


def test_same_seed_same_video_png_sequence_is_lossless_and_seeds_differ(tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        pattern = tmp_path / name / "%05d.png"
        p = engine("run", "--frames", "3", "--size", "64", "--seed", str(seed), "--sink", f"file:{pattern}", "--osc-port", "0", "--quiet")
        assert p.returncode == 0, p.stderr
        from PIL import Image

        runs[name] = [np.asarray(Image.open(tmp_path / name / f"{i:05d}.png")) for i in range(3)]
        assert not (tmp_path / name / "00003.png").exists()
    assert all(np.array_equal(x, y) for x, y in zip(runs["a"], runs["b"]))  # frame clock: reproducible
    assert np.abs(runs["a"][0].astype(int) - runs["c"][0]).mean() > 5


def test_config_file_and_cli_precedence(tmp_path):
    cfg = tmp_path / "show.toml"
    out = tmp_path / "cfg.mp4"
    cfg.write_text(f'[run]\nsize = 64\nframes = 4\nsink = ["file:{out}"]\nosc_port = 0\n\n[fx]\nfeedback = 0.5\n')
    p = engine("run", "--config", str(cfg), "--size", "128", "--quiet")  # the flag wins over [run] size
    assert p.returncode == 0, p.stderr
    frames = decode(out)
    assert len(frames) == 4 and frames[0].shape == (128, 128, 3)


def test_seconds_with_frame_clock_renders_seconds_times_fps(tmp_path):
    out = tmp_path / "s.mp4"
    p = engine("run", "--seconds", "0.5", "--fps", "12", "--size", "64", "--sink", f"file:{out}", "--osc-port", "0", "--quiet")
    assert p.returncode == 0, p.stderr
    assert len(decode(out)) == 6


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "--generator", "biggan"], "unknown generator 'biggan'"),
        (["run", "--generator", "/nope/net.pkl"], "generator file not found: /nope/net.pkl"),
        (["run", "--sink", "hologram"], "unknown sink 'hologram'"),
        (["run", "--sink", "file:out.avi"], "unsupported file type .avi"),
        (["run", "--sink", "file"], "the file sink needs a path"),
        (["run", "--size", "100x", "--frames", "1"], "is not a size; use N or WIDTHxHEIGHT"),
        (["run", "--size", "-4"], "is not a size"),
        (["run", "--size", "8x8"], "each side must be 16..8192 pixels"),
        (["run", "--frames", "ten"], "expected a whole number"),
        (["run", "--wobble"], "unrecognized arguments: --wobble"),
        (["run", "--config", "/nope/show.toml"], "config file not found"),
        (["run", "--set", "fx.feedback=7"], "fx.feedback: 7 is above the maximum 1"),
        (["run", "--set", "feedback"], "expected GROUP.NAME=VALUE"),
        (["run", "--device", "tpu"], "unknown device 'tpu'"),
        (["run", "--source", "webcam"], "unknown source 'webcam'"),
        # starting tool texts are checked at setup (live, over OSC, the same text only warns)
        (["run", "--size", "64", "--frames", "1", "--set", "stylegan.layer=nope"], "stylegan.layer 'nope' is not a synthesis layer"),
        (["run", "--size", "64", "--frames", "1", "--set", "stylegan.edits=b99.w *= 2"], "'b99.w' matches no parameter"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(args, message, capsys):
    rc = main(args + ["--osc-port", "0"] if args[0] == "run" else args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1, err
    assert err[0].startswith("engine: error: ") and message in err[0], err[0]


def test_window_sink_without_display_is_a_setup_error(capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    rc = main(["run", "--sink", "window", "--frames", "1", "--size", "64", "--osc-port", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "window: no display" in err


def test_info_lists_gl_cuda_nvml_and_every_sink_with_reasons():
    p = engine("info", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["gl"]["available"] and "version" in d["gl"]
    assert "available" in d["cuda"] and "available" in d["nvml"]
    assert set(d["sinks"]) == {"null", "file", "window", "ndi", "spout", "syphon", "v4l2"}
    for kind, s in d["sinks"].items():
        assert s["available"] or s["reason"], kind  # every unavailable sink says why
    if sys.platform.startswith("linux"):
        assert "Windows only" in d["sinks"]["spout"]["reason"]
    text = engine("info").stdout
    assert "GL:" in text and "CUDA:" in text and "NVML:" in text and "Sinks:" in text


def test_info_params_lists_every_address():
    from engine.params import SPECS

    p = engine("info", "--params")
    assert p.returncode == 0
    for s in SPECS:
        assert s.address in p.stdout


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb (apt-get install xvfb)")
def test_window_sink_renders_into_a_real_window_under_xvfb(tmp_path):
    display = ":87"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        stats = tmp_path / "w.json"
        png = tmp_path / "w" / "%05d.png"
        # The window first on the command line: it is still closed last, after the pipeline and the other sinks
        # that need its GL context (issue 13, bug 6). A 16:9 output: the window and the file get 96x54.
        p = engine("-v", "run", "--sink", "window", "--sink", f"file:{png}", "--frames", "8", "--size", "96x54", "--osc-port",
                   "0", "--quiet", "--stats-json", str(stats), env={"DISPLAY": display})
        assert p.returncode == 0, p.stderr
        assert "while closing" not in p.stderr and "Traceback" not in p.stderr, p.stderr
        s = json.loads(stats.read_text())
        assert s["gl"]["context"] == "window" and s["size"] == [96, 54]
        from PIL import Image

        assert Image.open(sorted(png.parent.glob("*.png"))[0]).size == (96, 54)
        assert s["sink_stats"]["window"]["sent"] == 8
        assert s["sink_stats"][f"file:{png}"]["written"] == 8  # the window's context also feeds host sinks
    finally:
        xvfb.terminate()
        xvfb.wait(10)


CLOSE_ORDER_PROBE = """
import json, glfw
from engine.loop import Engine, RunOptions
e = Engine(RunOptions(generator="stylegan2", size=(64, 64), sinks=["window", "null"], frames=2, quiet=True,
                      generator_options={"channel_base": 512, "channel_max": 16, "calibrate": False}))
e.setup()
e.run()
order = []
def recorded(name, fn):
    def call(*a, **k):
        order.append((name, glfw.get_current_context() is not None))
        return fn(*a, **k)
    return call
window = next(s for s in e.sinks if s.kind == "window")
e.pipeline.release = recorded("pipeline", e.pipeline.release)
e.uploader.close = recorded("uploader", e.uploader.close)
window.close = recorded("window", window.close)
e.close()
print(json.dumps(order))
"""


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb (apt-get install xvfb)")
def test_window_closes_after_everything_that_needs_its_context():
    """Issue 13, bug 6: glfw.terminate() destroys the window's GL context, which the pipeline, the readback and the
    texture sinks still release into: the window must go last, whatever the sink order. (In its own process: a GLX
    window beside this test process's EGL context is not something one process should hold.)"""
    display = ":88"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "320x240x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        p = subprocess.run([sys.executable, "-c", CLOSE_ORDER_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "DISPLAY": display})
        assert p.returncode == 0, p.stderr
        order = json.loads(p.stdout.strip().splitlines()[-1])
        names = [n for n, _ in order]
        assert names[-1] == "window" and {"pipeline", "uploader"} <= set(names), order
        assert all(alive for _, alive in order), f"released without a GL context: {order}"
    finally:
        xvfb.terminate()
        xvfb.wait(10)
