"""Sources for img2img generators: camera (through a recorded clip, the same OpenCV code path as a device), image,
noise, feedback (through a real GL texture and the staged uploader), NDI (a real cyndilib round trip with the
engine's NDI sink as the sender), and live switching."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import UsageError
from engine.params import Params, with_values
from engine.sources import SourceManager, fit_into, parse_source_spec
from engine.sources.still import FeedbackSource, ImageSource, NoiseSource

CPU = torch.device("cpu")
S = 32

# Clip colours (RGB): far apart, so a decoded (lossy MJPEG) frame is identified by its nearest colour.
CLIP_RGB = [(230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20), (20, 230, 230), (230, 20, 230)]


def write_clip(path: Path, fps: float = 30.0) -> Path:
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (96, 64))
    assert writer.isOpened()
    for r, g, b in CLIP_RGB:
        writer.write(np.full((64, 96, 3), (b, g, r), np.uint8))  # OpenCV writes BGR
    writer.release()
    return path


def snap_with(**values) -> Params:
    return with_values(Params(), {f"source.{k}": v for k, v in values.items()})


def wait_for(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value is not None:
            return value
        time.sleep(0.02)
    raise AssertionError(f"nothing within {timeout} s")


def as_rgb255(x: torch.Tensor) -> np.ndarray:
    return ((x[0].permute(1, 2, 0).float() + 1) * 127.5).numpy()


def test_parse_source_spec():
    assert parse_source_spec("feedback") == {"source.mode": "feedback"}
    assert parse_source_spec("camera") == {"source.mode": "camera", "source.camera": "0"}
    assert parse_source_spec("camera:clip.mp4") == {"source.mode": "camera", "source.camera": "clip.mp4"}
    assert parse_source_spec("ndi:HOST (OBS)") == {"source.mode": "ndi", "source.ndi": "HOST (OBS)"}
    assert parse_source_spec("image:/a/b.png") == {"source.mode": "image", "source.image": "/a/b.png"}
    assert parse_source_spec("noise") == {"source.mode": "noise"}
    with pytest.raises(UsageError, match="unknown source 'webcam'"):
        parse_source_spec("webcam")
    with pytest.raises(UsageError, match="needs a file"):
        parse_source_spec("image")
    with pytest.raises(UsageError, match="takes no target"):
        parse_source_spec("noise:3")


def test_camera_source_plays_a_recorded_clip(tmp_path):
    clip = write_clip(tmp_path / "clip.avi")
    sources = SourceManager(S, S, CPU)
    snap = snap_with(mode="camera", camera=str(clip))
    try:
        t0 = time.monotonic()
        first = sources.read("camera", snap)  # opening never blocks the loop: no frame yet is fine
        assert time.monotonic() - t0 < 0.5
        img = wait_for(lambda: sources.read("camera", snap))
        assert img.shape == (1, 3, S, S) and img.dtype == torch.float32 and img.min() >= -1 and img.max() <= 1
        cam = sources._open["camera"][1]
        assert cam.fps == pytest.approx(30.0)
        seen = set()
        deadline = time.monotonic() + 8.0
        while time.monotonic() < deadline and (len(seen) < len(CLIP_RGB) or cam.frames_captured <= 2 * len(CLIP_RGB)):
            rgb = as_rgb255(sources.read("camera", snap)).reshape(-1, 3).mean(0)
            dist = [np.abs(rgb - np.array(c)).max() for c in CLIP_RGB]
            assert min(dist) < 20, f"frame colour {rgb} is none of the clip's"  # MJPEG is lossy, a few levels
            seen.add(int(np.argmin(dist)))
            time.sleep(0.01)
        assert seen == set(range(len(CLIP_RGB)))  # BGR -> RGB right, every frame shown
        assert cam.frames_captured > 2 * len(CLIP_RGB)  # the clip loops like a live feed
        assert cam.error is None
        stats = sources.stats()["camera"]
        assert stats["captured"] >= stats["used"]
        del first
    finally:
        sources.close()
    assert not cam._thread.is_alive()


def test_camera_errors(tmp_path):
    with pytest.raises(UsageError, match="not a device index"):
        from engine.sources.camera import CameraSource

        CameraSource(str(tmp_path / "missing.mp4"), S, S, CPU)
    sources = SourceManager(S, S, CPU)
    try:
        # A device that is not there: reported by the capture thread, the loop just gets no frame.
        snap = snap_with(mode="camera", camera="63")
        assert sources.read("camera", snap) is None
        assert wait_for(lambda: sources.problems.get("camera")) == "camera: cannot open '63'"
        assert sources.read("camera", snap) is None
    finally:
        sources.close()


def test_image_source_cover_and_stretch(tmp_path):
    from PIL import Image

    # 120x40, thirds red | green | blue
    px = np.zeros((40, 120, 3), np.uint8)
    px[:, :40, 0] = 255
    px[:, 40:80, 1] = 255
    px[:, 80:, 2] = 255
    Image.fromarray(px).save(tmp_path / "thirds.png")
    src = ImageSource(str(tmp_path / "thirds.png"), S, S, CPU)
    cover = as_rgb255(src.read(fit="cover"))
    assert np.abs(cover - np.array([0, 255, 0])).max() < 1  # centre crop = the green third
    stretch = as_rgb255(src.read(fit="stretch"))
    assert np.abs(stretch[:, :8] - np.array([255, 0, 0])).max() < 1
    assert np.abs(stretch[:, 14:18] - np.array([0, 255, 0])).max() < 1
    assert np.abs(stretch[:, -8:] - np.array([0, 0, 255])).max() < 1
    with pytest.raises(UsageError, match="file not found"):
        ImageSource(str(tmp_path / "nope.png"), S, S, CPU)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UsageError, match="cannot read"):
        ImageSource(str(tmp_path / "bad.png"), S, S, CPU)


def test_fit_into_tall_source_crops_top_and_bottom():
    tall = torch.zeros(1, 3, 90, 30)
    tall[:, :, 30:60] = 1.0  # middle third white
    out = fit_into(tall, torch.empty(1, 3, 15, 15), "cover")
    assert torch.allclose(out, torch.ones_like(out))


def test_noise_source_is_deterministic_smooth_and_animated():
    from engine.clock import FrameTime

    a = NoiseSource(S, S, CPU, seed=3)
    b = NoiseSource(S, S, CPU, seed=3)
    x0 = a.read(FrameTime(0.2, 6), cells=4).clone()
    assert torch.equal(x0, b.read(FrameTime(0.2, 6), cells=4))
    assert x0.min() >= -1 and x0.max() <= 1 and x0.std() > 0.05
    x1 = a.read(FrameTime(0.2 + 1 / 60, 7), cells=4).clone()
    x2 = a.read(FrameTime(1.7, 50), cells=4).clone()
    assert 0 < (x1 - x0).abs().mean() < 0.02  # one frame later: a small drift
    assert (x2 - x0).abs().mean() > 0.1  # over a second: a different field
    assert not torch.equal(x0, NoiseSource(S, S, CPU, seed=4).read(FrameTime(0.2, 6), cells=4))


def test_feedback_source_through_gl_texture(gl):
    from engine.upload import StagedUpload

    up = StagedUpload(CPU)
    tex = gl.ctx.texture((S, S), 4, dtype="f1")
    try:
        image = torch.rand(1, 3, S, S) * 2 - 1
        up.upload(image, tex)
        fb = FeedbackSource(S, S, CPU)
        assert fb.read() is None  # nothing captured yet: the generator feeds back its own output
        got = fb.capture(up, tex)
        assert got is fb.read()
        # through RGBA8 and back: within one quantisation step (2/255)
        assert (got - image).abs().max() <= 2 / 255 + 1e-6
    finally:
        tex.release()


def test_manager_switches_live(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(tmp_path / "grey.png")
    sources = SourceManager(S, S, CPU)
    try:
        noise = sources.read("noise", snap_with(mode="noise"))
        assert noise is not None and noise.std() > 0
        noise_src = sources._open["noise"][1]
        img = sources.read("image", snap_with(mode="image", image=str(tmp_path / "grey.png")))
        assert torch.allclose(img, torch.full_like(img, 200 / 127.5 - 1))
        # a bad path sent live (OSC) does not end the show: no image, one logged problem, the rest keeps working
        assert sources.read("image", snap_with(mode="image", image=str(tmp_path / "typo.png"))) is None
        assert "file not found" in sources.problems["image"]
        assert sources.read("noise", snap_with(mode="noise")) is not None
        assert sources._open["noise"][1] is noise_src  # switching back reuses the open source
        assert sources.read("feedback", snap_with()) is None  # until the loop writes feedback
        sources.feedback.write(torch.zeros(1, 3, S, S))
        assert torch.equal(sources.read("feedback", snap_with()), torch.zeros(1, 3, S, S))
    finally:
        sources.close()


def test_ndi_source_receives_from_the_engine_ndi_sink():
    from ndi_support import require_ndi

    require_ndi()
    from engine.sinks.ndi import NDISink
    from engine.sources.ndi import NDISource

    name = f"src-test-{threading.get_native_id()}-{time.monotonic_ns() % 10**6}"
    sink = NDISink(name)
    w, h = 64, 48
    sink.open(None, w, h, 30.0)
    src = NDISource(name, S, S, CPU)
    try:
        assert src.wait_connected(20.0), f"NDI source ({name}) not found"
        frame = np.zeros((h, w, 4), np.uint8)
        frame[..., 0], frame[..., 1], frame[..., 2], frame[..., 3] = 40, 180, 90, 255
        deadline = time.monotonic() + 15.0
        got = None
        while time.monotonic() < deadline and got is None:
            sink.send_pixels(frame, 0)
            time.sleep(1 / 30)
            got = src.read(fit="stretch")
        assert got is not None, f"no NDI frame received: {src.stats()} {src.error}"
        rgb = as_rgb255(got).reshape(-1, 3).mean(0)
        # NDI compresses (SpeedHQ 4:2:2) even on loopback; a flat colour survives within a few levels
        assert np.abs(rgb - np.array([40, 180, 90])).max() < 8, rgb
    finally:
        src.close()
        sink.close()
