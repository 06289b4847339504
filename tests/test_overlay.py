"""The temperature overlay (issue 16, seed 000) through real EGL: the graph's pixels follow a known temperature
sequence, the number is drawn, history slots follow show time, and an engine with the overlay off renders
bit-identically to one without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.overlay import GLYPHS, HISTORY, Overlay, font_atlas, temperature_text
from engine.params import Fx
from engine.params import Overlay as OverlayParams

REPO = Path(__file__).resolve().parents[1]
W, H = 256, 160
GREY = 40


@pytest.fixture
def stage(gl):
    from engine.gl import Pipeline

    pipe = Pipeline(gl, W, H)
    ov = Overlay(gl, W, H)
    img = np.zeros((H, W, 4), np.uint8)
    img[..., :3], img[..., 3] = GREY, 255
    pipe.frame.texture.write(img.tobytes())
    yield pipe, ov
    ov.release()
    pipe.release()


def _draw(pipe, ov, **params) -> np.ndarray:
    pipe.render(Fx(perturb=0.0, feedback=0.0), 0.0)
    ov.draw(pipe.output.fbo, OverlayParams(enabled=True, **params))
    return np.frombuffer(pipe.output.texture.read(), np.uint8).reshape(H, W, 4).astype(int)


def _feed(ov, values, seconds=60.0):
    for i, v in enumerate(values):
        ov.update(v, i * seconds / HISTORY, seconds)


def test_the_graph_follows_a_known_temperature_sequence(stage):
    pipe, ov = stage
    ramp = [30.0 + 60.0 * i / (HISTORY - 1) for i in range(HISTORY)]  # lo .. hi across the whole graph
    _feed(ov, ramp)
    out = _draw(pipe, ov, x=0.0, y=0.0, width=1.0, height=1.0, opacity=1.0, lo=30.0, hi=90.0)
    graph_top = int(round(H * 0.4))
    graph_h = H - graph_top
    for x in (20, 64, 128, 200, 250):
        slot = min(int((x + 0.5) / W * HISTORY), HISTORY - 1)
        expected = ramp[slot]
        level = (expected - 30.0) / 60.0
        column = out[graph_top:, x, :3]
        lit = np.nonzero(column.max(axis=1) > GREY * 0.6)[0]  # pixels brighter than the panel's dark backing
        height = (graph_h - lit.min()) if lit.size else 0
        assert height == pytest.approx(level * graph_h, abs=2.5), (x, height, level * graph_h)
    # Cool at the left, hot at the right: blue dominates the first columns, red the last.
    left, right = out[H - 3, 8, :3], out[H - 3, W - 4, :3]
    assert left[2] > left[0] and right[0] > right[2] + 100
    # Above the curve the panel darkens the picture (opacity 1: 45% black over the grey).
    assert abs(out[graph_top + 2, 10, 0] - GREY * 0.55) <= 2


def test_a_step_and_a_gap_in_the_samples(stage):
    pipe, ov = stage
    values = [None] * (HISTORY // 2) + [90.0] * (HISTORY // 2)  # no sensor for the first half, then hot
    _feed(ov, values)
    out = _draw(pipe, ov, x=0.0, y=0.0, width=1.0, height=1.0, opacity=1.0, lo=30.0, hi=90.0)
    graph_top = int(round(H * 0.4))
    assert out[graph_top + 4:, : W // 2 - 2, 0].max() <= GREY  # no samples: nothing drawn
    hot = out[graph_top + 4:, W // 2 + 2:, :3]
    assert (hot[..., 0] > 110).all() and (hot[..., 0] > hot[..., 1] + 50).all()  # full height, red


def test_the_number_is_drawn_and_the_panel_sits_where_it_is_told(stage):
    pipe, ov = stage
    _feed(ov, [72.5] * 8)
    out = _draw(pipe, ov, x=0.5, y=0.25, width=0.45, height=0.5, opacity=1.0)
    x0, y0, x1, y1 = int(0.5 * W), int(0.25 * H), int(0.95 * W), int(0.75 * H)
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert (out[outside][:, :3] == GREY).all(), "the overlay drew outside its panel"
    text = out[y0:y0 + int(0.4 * (y1 - y0)), x0:x1, :3]
    assert (text.max(axis=2) > 150).sum() > 100, "no digits drawn"
    assert temperature_text(72.5) == "72.5\u00b0C" and temperature_text(None) == "--.-\u00b0C"
    atlas, name = font_atlas()
    assert atlas.shape[1] % len(GLYPHS) == 0 and atlas.max() == 255 and name


def test_history_slots_follow_show_time(gl):
    ov = Overlay(gl, 64, 64)
    try:
        for frame in range(30 * 20):  # 20 s at 30 fps with a 10 s graph: two full turns of the ring
            ov.update(50.0, frame / 30.0, 10.0)
        assert ov.samples == pytest.approx(2 * HISTORY, abs=2)
        before = ov.samples
        ov.update(50.0, 10_000.0, 10.0)  # a long gap (a frozen replay, a seek): the graph fills once, no loop
        assert ov.samples - before == HISTORY
    finally:
        ov.release()


def _render(tmp_path, name, *extra):
    out = tmp_path / name / "%03d.png"
    p = subprocess.run([sys.executable, "-m", "engine", "run", "--size", "64", "--frames", "4", "--sink", f"file:{out}",
                        "--quiet", "--osc-port", "0", "--config", str(tmp_path / "fast.toml"), *extra],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    from PIL import Image

    return [np.asarray(Image.open(f)).astype(int) for f in sorted(out.parent.glob("*.png"))]


def test_overlay_off_is_bit_identical_and_on_changes_only_its_panel(tmp_path):
    (tmp_path / "fast.toml").write_text("[generator]\nchannel_base = 512\nchannel_max = 16\ncalibrate = false\n")
    plain = _render(tmp_path, "plain")
    off = _render(tmp_path, "off", "--thermal", "synthetic:const,value=70", "--set", "overlay.enabled=0")
    on = _render(tmp_path, "on", "--thermal", "synthetic:const,value=70", "--set", "overlay.enabled=1",
                 "--set", "overlay.x=0.5", "--set", "overlay.y=0.5", "--set", "overlay.width=0.5", "--set", "overlay.height=0.5")
    assert len(plain) == len(off) == len(on) == 4
    for a, b, c in zip(plain, off, on):
        assert np.array_equal(a, b)
        assert np.array_equal(a[:32], c[:32]) and np.array_equal(a[:, :32], c[:, :32])
        assert not np.array_equal(a[32:, 32:], c[32:, 32:])
