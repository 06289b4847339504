"""Show-ready output: any size and aspect (--size WxH), the fit stage on real EGL, the master fader, recordings
stamped with show time, and the CLI and `engine info` side of it."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import diffusers  # noqa: F401  (loaded at collection, before any GL context: Triton's LLVM after Mesa's crashes)
import numpy as np
import pytest

from engine.errors import UsageError
from engine.output import MasterFader, diffusion_size, fit_transform, parse_size, stylegan_square
from engine.params import Fx, Output

REPO = Path(__file__).resolve().parents[1]
FAST = "[generator]\nchannel_base = 512\nchannel_max = 16\ncalibrate = false\n"


def engine(*args, cwd=REPO, timeout=300):
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def decode(path: Path) -> tuple[list[np.ndarray], list[int], Fraction]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames, pts = [], []
        for f in c.decode(s):
            frames.append(f.to_ndarray(format="rgb24"))
            pts.append(int(f.pts))
        return frames, pts, s.time_base


# -- sizes and framing ----------------------------------------------------------------------------------------------


def test_size_parsing():
    assert parse_size("1920x1080") == (1920, 1080)
    assert parse_size("1080X1920") == (1080, 1920)
    assert parse_size(" 256 ") == (256, 256) and parse_size(512) == (512, 512)
    for bad in ("0", "12", "1920x", "x1080", "19.2x10", "-5", "9000x100", "axb", True):
        with pytest.raises(UsageError, match="size"):
            parse_size(bad)


def test_render_sizes_for_an_output():
    # StyleGAN renders a square: its own when that is what the output needs at most, else the power of two covering
    # the output's long side (resized on the device); never above its native size.
    assert stylegan_square((1920, 1080), 1024) == 1024
    assert stylegan_square((1280, 720), 1024) == 1024
    assert stylegan_square((320, 180), 1024) == 512
    assert stylegan_square((256, 256), 512) == 256
    assert stylegan_square((1920, 1080), 256) == 256  # small networks render natively; GL scales up
    # Diffusion renders at the output's aspect, each side to the nearest multiple of 8.
    assert diffusion_size((1920, 1080)) == (1920, 1080)
    assert diffusion_size((1366, 768)) == (1368, 768)
    assert diffusion_size((100, 60)) == (104, 64)


def test_fit_transform_cover_contain_stretch_zoom_pan():
    square, wide, tall = (512, 512), (1920, 1080), (1080, 1920)
    sx, sy, ox, oy = fit_transform(square, wide, "cover")
    assert (sx, ox, oy) == (1.0, 0.0, 0.0) and sy == pytest.approx(1080 / 1920)  # crops top and bottom
    sx, sy, _, _ = fit_transform(square, wide, "contain")
    assert sx == pytest.approx(1920 / 1080) and sy == 1.0  # pillarboxed: the view is wider than the image
    sx, sy, _, _ = fit_transform(square, tall, "cover")
    assert sx == pytest.approx(1080 / 1920) and sy == 1.0
    assert fit_transform(square, wide, "stretch") == (1.0, 1.0, 0.0, 0.0)
    # zoom 2 halves the view; pan +-1 reaches the image's edge, never beyond it.
    sx, sy, ox, oy = fit_transform(square, square, "cover", zoom=2.0, pan_x=1.0, pan_y=-1.0)
    assert (sx, sy) == (0.5, 0.5) and ox == pytest.approx(0.25) and oy == pytest.approx(-0.25)
    assert 0.5 + sx / 2 + ox == pytest.approx(1.0) and 0.5 - sy / 2 + oy == pytest.approx(0.0)
    sx, sy, ox, oy = fit_transform(square, wide, "cover", pan_y=1.0)
    assert 0.5 + sy / 2 + oy == pytest.approx(1.0)  # the bottom edge of the image at the output's bottom


def test_master_fader_fades_over_show_time():
    f = MasterFader()
    assert f.update(0.0, False, 1.0, 1.0) == 1.0
    assert f.update(0.5, True, 1.0, 1.0) == pytest.approx(0.5)  # half way into a 1 s blackout
    assert f.update(1.5, True, 1.0, 1.0) == 0.0
    assert f.update(1.75, False, 1.0, 0.8) == pytest.approx(0.8 * 0.25)  # coming back, under a master opacity
    assert f.update(9.0, False, 1.0, 0.8) == pytest.approx(0.8)
    assert f.update(9.0, True, 0.0, 1.0) == 0.0  # fade_seconds 0 cuts


# -- the fit pass and the fader on real GL (EGL) --------------------------------------------------------------------


def _pipeline(gl, out_size, frame_size):
    from engine.gl import Pipeline

    return Pipeline(gl, *out_size, frame_size=frame_size)


def _quadrants(w: int, h: int) -> np.ndarray:
    """RGBA8 image: red top-left, green top-right, blue bottom-left, white bottom-right (row 0 = top)."""
    img = np.zeros((h, w, 4), np.uint8)
    img[..., 3] = 255
    img[: h // 2, : w // 2, 0] = 255
    img[: h // 2, w // 2:, 1] = 255
    img[h // 2:, : w // 2, 2] = 255
    img[h // 2:, w // 2:, :3] = 255
    return img


def _render(pipe, out: Output, gain: float = 1.0) -> np.ndarray:
    tex = pipe.render(Fx(perturb=0.0, feedback=0.0), 0.0, out=out, gain=gain)
    return np.frombuffer(tex.read(), np.uint8).reshape(pipe.height, pipe.width, 4)


def test_fit_pass_frames_a_square_in_16_9_and_portrait(gl):
    img = _quadrants(64, 64)
    for out_size in ((128, 72), (72, 128)):
        pipe = _pipeline(gl, out_size, (64, 64))
        try:
            pipe.frame.texture.write(img.tobytes())
            w, h = out_size
            cover = _render(pipe, Output(fit="cover"))
            assert cover.shape == (h, w, 4)
            # Cover fills the output: the four colours meet in the middle, nothing is background.
            assert tuple(cover[2, 2, :3]) == (255, 0, 0) and tuple(cover[-3, -3, :3]) == (255, 255, 255)
            assert tuple(cover[2, -3, :3]) == (0, 255, 0) and tuple(cover[-3, 2, :3]) == (0, 0, 255)
            contain = _render(pipe, Output(fit="contain", background=(0.0, 0.0, 1.0)))
            # Contain letterboxes with the background colour on the long side's ends.
            if w > h:
                assert tuple(contain[h // 2, 1, :3]) == (0, 0, 255) and tuple(contain[h // 2, w - 2, :3]) == (0, 0, 255)
                assert tuple(contain[2, w // 2 - 4, :3]) == (255, 0, 0)
            else:
                assert tuple(contain[1, w // 2, :3]) == (0, 0, 255) and tuple(contain[h - 2, w // 2, :3]) == (0, 0, 255)
            stretch = _render(pipe, Output(fit="stretch"))
            assert tuple(stretch[1, 1, :3]) == (255, 0, 0) and tuple(stretch[-2, -2, :3]) == (255, 255, 255)
        finally:
            pipe.release()


def test_zoom_and_pan_show_one_corner(gl):
    pipe = _pipeline(gl, (64, 64), (64, 64))
    try:
        pipe.frame.texture.write(_quadrants(64, 64).tobytes())
        # zoom 2 panned to the bottom-right: the whole view is the white quadrant.
        view = _render(pipe, Output(zoom=2.0, pan_x=1.0, pan_y=1.0))
        assert (view[2:-2, 2:-2, :3] == 255).all()
        view = _render(pipe, Output(zoom=2.0, pan_x=-1.0, pan_y=-1.0))
        assert (view[2:-2, 2:-2, 0] == 255).all() and (view[2:-2, 2:-2, 1:3] == 0).all()
    finally:
        pipe.release()


def test_identity_framing_is_bit_exact_and_skips_the_fit_pass(gl):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (48, 80, 4), dtype=np.uint8)
    img[..., 3] = 255
    pipe = _pipeline(gl, (80, 48), (80, 48))
    try:
        pipe.frame.texture.write(img.tobytes())
        assert pipe.fit_frame(Output()) is pipe.frame.texture
        assert np.array_equal(_render(pipe, Output()), img)
    finally:
        pipe.release()


def test_master_gain_scales_and_the_held_frame_is_presented_again(gl):
    pipe = _pipeline(gl, (32, 32), (32, 32))
    try:
        img = np.full((32, 32, 4), 200, np.uint8)
        pipe.frame.texture.write(img.tobytes())
        full = _render(pipe, Output())
        assert (full[..., :3] == 200).all()
        half = np.frombuffer(pipe.present(0.5).read(), np.uint8).reshape(32, 32, 4)
        assert (np.abs(half[..., :3].astype(int) - 100) <= 1).all()
        black = np.frombuffer(pipe.present(0.0).read(), np.uint8).reshape(32, 32, 4)
        assert (black[..., :3] == 0).all() and (black[..., 3] == 255).all()
    finally:
        pipe.release()


# -- end to end: decoded files at the output size, both generators ---------------------------------------------------


@pytest.mark.parametrize("size", ["160x90", "90x160"])
def test_stylegan_run_writes_16_9_and_portrait_video(tmp_path, size):
    (tmp_path / "fast.toml").write_text(FAST)
    out = tmp_path / "out.mp4"
    p = engine("run", "--config", str(tmp_path / "fast.toml"), "--size", size, "--frames", "12", "--sink", f"file:{out}",
               "--quiet", "--osc-port", "0", "--set", "output.fit=contain", "--stats-json", str(tmp_path / "s.json"))
    assert p.returncode == 0, p.stderr
    frames, pts, _ = decode(out)
    w, h = map(int, size.split("x"))
    assert len(frames) == 12 and frames[0].shape == (h, w, 3)
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["size"] == [w, h] and s["render_size"] == [256, 256]  # the power-of-two square covering the long side
    # Contain: the square sits in the middle of the long side, black bars at its ends.
    f = frames[6].astype(int)
    bar = f[:, :10] if w > h else f[:10]
    assert bar.max() <= 16, "expected a black letterbox bar"
    middle = f[h // 2 - 5:h // 2 + 5, w // 2 - 5:w // 2 + 5]
    assert middle.std() > 0 or middle.mean() > 16


def test_diffusion_renders_natively_at_the_output_aspect(tmp_path):
    from tiny_diffusion import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    out = tmp_path / "d.mp4"
    p = engine("run", "--generator", f"diffusion:{model}", "--size", "100x60", "--frames", "6", "--sink", f"file:{out}",
               "--quiet", "--osc-port", "0", "--stats-json", str(tmp_path / "s.json"))
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["size"] == [100, 60] and s["render_size"] == [104, 64]  # each side to a multiple of 8
    assert any("rounded to a multiple of 8" in n for n in s["generator"]["notes"])
    frames, _, _ = decode(out)
    assert len(frames) == 6 and frames[0].shape == (60, 100, 3)
    portrait = tmp_path / "p.mp4"
    p = engine("run", "--generator", f"diffusion:{model}", "--size", "48x96", "--frames", "4", "--sink", f"file:{portrait}",
               "--quiet", "--osc-port", "0", "--stats-json", str(tmp_path / "p.json"))
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "p.json").read_text())["render_size"] == [48, 96]
    assert decode(portrait)[0][0].shape == (96, 48, 3)


def test_info_says_the_native_size_and_how_it_is_fitted():
    p = engine("info", "--generator", "stylegan2", "--size", "1920x1080", "--json")
    assert p.returncode == 0, p.stderr
    gen = json.loads(p.stdout)["generator"]
    assert gen["size"] == [1024, 1024]
    assert "renders 1024x1024, fitted on the GPU to 1920x1080" in gen["output"] and "cropping 44% of its height" in gen["output"]
    p = engine("info", "--generator", "stylegan2", "--size", "16:9")
    assert p.returncode == 2 and "is not a size" in p.stderr and "WIDTHxHEIGHT" in p.stderr


def test_config_file_size_accepts_width_x_height(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nsize = "96x64"\nframes = 2\nsink = "null"\nquiet = true\nosc_port = 0\n' + FAST)
    p = engine("run", "--config", str(cfg), "--stats-json", str(tmp_path / "s.json"))
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "s.json").read_text())["size"] == [96, 64]
    cfg.write_text('[run]\nsize = "96 by 64"\n')
    p = engine("run", "--config", str(cfg))
    assert p.returncode == 2 and "size" in p.stderr and p.stderr.count("\n") == 1


# -- recordings stamped with show time (issue 13, bug 7) -------------------------------------------------------------


def test_a_recording_keeps_show_time_when_frames_come_late_or_are_dropped(tmp_path):
    from engine.sinks.file import FileSink

    path = tmp_path / "late.mp4"
    sink = FileSink(str(path))
    sink.realtime = False
    sink.open(None, 32, 32, 30.0)
    img = np.zeros((32, 32, 4), np.uint8)
    # A show at 10 fps recorded at 30: every frame covers three slots; two frames land in one slot (jitter).
    times = [0.0, 0.1, 0.2, 0.3, 0.31, 0.4]
    for i, t in enumerate(times):
        img[..., 0] = i * 40
        sink.send_pixels(img, i, t=t)
    sink.close()
    st = sink.stats()
    assert st["failed"] is None and st["written"] == 5 and st["merged"] == 1
    frames, pts, tb = decode(path)
    seconds = [float(p * tb) for p in pts]
    assert seconds == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4], abs=1e-3)
    # The file lasts as long as the show did (0.4 s and one frame), not 5 frames at 30 fps (0.17 s); the second frame
    # of the 0.3 s slot is the one merged.
    assert [int(f[0, 0, 0]) for f in frames] == pytest.approx([0, 40, 80, 120, 200], abs=3)


def test_engine_recording_plays_as_long_as_the_wall_clock_show(tmp_path):
    # A live show (wall clock) recorded at --fps 30 while a slow generator runs at ~10 fps: the video lasts as long as
    # the show, frames held across the gaps, instead of playing three times too fast.
    (tmp_path / "fast.toml").write_text(FAST)
    out = tmp_path / "wall.mp4"
    p = engine("run", "--config", str(tmp_path / "fast.toml"), "--size", "64", "--clock", "wall", "--seconds", "3",
               "--fps", "30", "--sink", f"file:{out}", "--quiet", "--osc-port", "0", "--set", "output.fps=10",
               "--stats-json", str(tmp_path / "s.json"))
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    frames, pts, tb = decode(out)
    assert 20 <= len(frames) <= 32, len(frames)  # ~10 fps for 3 s
    seconds = [float(p * tb) for p in pts]
    assert seconds[-1] + 1 / 30 == pytest.approx(s["seconds"], abs=0.25), (seconds[-1], s["seconds"])
    assert all(b - a >= 1.5 / 30 for a, b in zip(seconds, seconds[1:])), seconds  # each frame holds ~3 slots of 1/30 s


# -- macOS: --device mps (written against torch's MPS API; what runs here is the device-agnostic part) ----------------


def test_mps_device_is_refused_clearly_without_it_and_auto_falls_back():
    import torch

    from engine.devices import mps_available, resolve_device
    from engine.errors import SetupError
    from engine.generators.motion import LatentWalk

    if not mps_available():
        with pytest.raises(SetupError, match=r"--device mps: .*; use --device cpu"):
            resolve_device("mps")
        if not torch.cuda.is_available():
            assert resolve_device("auto").type == "cpu"
    # MPS has no float64: the latent walk keeps its phase arithmetic on the CPU for an MPS generator.
    walk = LatentWalk(8, 1, "mps")
    assert walk.freq.device.type == "cpu" and walk.freq.dtype == torch.float64
    p = engine("run", "--device", "mps", "--frames", "1", "--sink", "null", "--osc-port", "0")
    if not mps_available():
        assert p.returncode == 2 and "--device mps" in p.stderr and p.stderr.count("\n") == 1, p.stderr
