"""Platform sinks: Spout (Windows), Syphon (macOS), v4l2 (Linux + v4l2loopback).

On the platform they need, the marked tests publish a real texture and read it back with the platform's own
receiver. Elsewhere they are skipped with the reason, and what *can* be checked here is: the one-line
availability reasons `engine info` shows, and that `open()` fails at setup with that same line (what
`engine run` prints) instead of failing mid-show.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from engine.errors import SetupError, UsageError
from engine.sinks import availability, parse_sink
from engine.sinks.spout import SpoutSink
from engine.sinks.syphon import SyphonSink
from engine.sinks.v4l2 import MODPROBE_HINT, V4L2Sink, loopback_devices

IS_LINUX = sys.platform.startswith("linux")
W, H = 64, 48


def _gl():
    """A real GL context for the platform tests. EGL (GL.headless) is Linux-only: on Windows a standalone WGL
    context, on macOS the NSOpenGLContext made current by create_headless_context()."""
    import moderngl
    from engine.gl import GL

    if sys.platform == "win32":
        return GL(moderngl.create_standalone_context(require=330), "wgl")
    if sys.platform == "darwin":
        return GL.from_current()
    return GL.headless()


def _gradient_texture(gl):
    """An RGBA8 texture holding a top-first image (row 0 = top) whose rows and columns are all distinct."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([x * 4, y * 5, (x + y) % 256, np.full_like(x, 255)], -1).astype(np.uint8)
    tex = gl.ctx.texture((W, H), 4, img.tobytes())
    return tex, img


# ---------------------------------------------------------------------------------------------------------------
# Names and specs (every platform)
# ---------------------------------------------------------------------------------------------------------------


def test_names_default_to_engine():
    assert parse_sink("spout").name == "engine"
    assert parse_sink("spout:").name == "engine"
    assert parse_sink("syphon").name == "engine"
    assert parse_sink("spout:VJ out").name == "VJ out"
    assert parse_sink("syphon:main").label == "syphon:main"
    assert parse_sink("v4l2").device is None  # first loopback device, found at open()
    assert parse_sink("v4l2:/dev/video10").device == "/dev/video10"
    assert not SpoutSink.needs_host and not SyphonSink.needs_host and V4L2Sink.needs_host


def test_bad_specs_are_usage_errors():
    with pytest.raises(UsageError, match="/dev/video10"):
        parse_sink("v4l2:video10")
    with pytest.raises(UsageError):
        parse_sink("spout:" + "x" * 300)


# ---------------------------------------------------------------------------------------------------------------
# On Linux (this machine, CI): availability reasons and setup failures
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not IS_LINUX, reason="checks the messages Linux users see")
def test_spout_and_syphon_say_which_os_they_need():
    av = availability()
    # `engine info` prints "spout  unavailable: Windows only"; `engine run` fails with "spout: Windows only".
    assert av["spout"] == (False, "Windows only")
    assert av["syphon"] == (False, "macOS only")
    for spec, line in (("spout:x", "spout: Windows only"), ("syphon:x", "syphon: macOS only")):
        with pytest.raises(SetupError) as e:
            parse_sink(spec).open(None, W, H, 30.0)
        assert str(e.value) == line


@pytest.mark.skipif(not IS_LINUX, reason="v4l2loopback is Linux only")
@pytest.mark.skipif(IS_LINUX and bool(loopback_devices()), reason="this machine has a v4l2loopback device")
def test_v4l2_without_loopback_device_gives_the_modprobe_line():
    ok, reason = V4L2Sink.availability()
    assert not ok
    assert MODPROBE_HINT in reason and "sudo modprobe v4l2loopback" in reason
    try:
        import pyvirtualcam  # noqa: F401

        assert "pip install pyvirtualcam" not in reason
    except ImportError:
        assert "pip install pyvirtualcam" in reason  # both missing: both named, one line
    assert "\n" not in reason
    with pytest.raises(SetupError) as e:
        V4L2Sink("/dev/video10").open(None, W, H, 30.0)
    assert str(e.value) == f"v4l2: {reason}"


@pytest.mark.skipif(not IS_LINUX, reason="v4l2loopback is Linux only")
def test_v4l2_opens_the_camera_in_a_format_pyvirtualcam_accepts():
    """pyvirtualcam's v4l2loopback backend refuses RGBA ("Unsupported image format"), and it checks the format
    before the device: on a device that does not exist, our options must get as far as the device check."""
    pyvirtualcam = pytest.importorskip("pyvirtualcam")
    from engine.sinks.v4l2 import camera_kwargs

    missing = "/dev/video63"
    assert missing not in loopback_devices()
    with pytest.raises(RuntimeError) as e:
        pyvirtualcam.Camera(W, H, 30.0, **camera_kwargs(missing))
    assert "does not exist" in str(e.value) and "format" not in str(e.value)


def test_v4l2_finds_loopback_devices_in_sysfs(tmp_path):
    # The layout v4l2loopback creates: one folder per device under devices/virtual/video4linux.
    for n in (12, 2, 10):
        (tmp_path / f"video{n}").mkdir()
    (tmp_path / "v4l-subdev0").mkdir()
    assert loopback_devices(tmp_path) == ["/dev/video2", "/dev/video10", "/dev/video12"]
    assert loopback_devices(tmp_path / "missing") == []


# ---------------------------------------------------------------------------------------------------------------
# On their platforms: a real round trip through the platform's receiver
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.windows
@pytest.mark.skipif(sys.platform != "win32", reason="Spout is Windows only")
def test_spout_round_trip_upright():
    pytest.importorskip("SpoutGL")
    import SpoutGL

    gl = _gl()
    tex, img = _gradient_texture(gl)
    name = f"engine-test-{time.monotonic_ns() % 10**6}"
    sink = SpoutSink(name)
    sink.open(gl, W, H, 30.0)
    try:
        with SpoutGL.SpoutReceiver() as rx:
            rx.setReceiverName(name)
            got = None
            for i in range(100):
                sink.send_texture(tex, i)
                buf = np.zeros(W * H * 4, np.uint8)
                # invert=False: the receiver writes the shared (top-first) texture's rows in order.
                if rx.receiveImage(buf, SpoutGL.enums.GL_RGBA, False, 0) and rx.getSenderWidth() == W and buf.any():
                    got = buf.reshape(H, W, 4)
                    break
                time.sleep(0.02)
        assert got is not None, "Spout receiver got no frame"
        assert np.array_equal(got, img), "Spout frame differs (upside down if rows are reversed)"
    finally:
        sink.close()
        tex.release()


@pytest.mark.macos
@pytest.mark.skipif(sys.platform != "darwin", reason="Syphon is macOS only")
def test_syphon_server_is_discoverable():
    pytest.importorskip("syphon")
    import syphon
    from engine.sinks.syphon import create_headless_context

    ctx = create_headless_context()  # noqa: F841  (kept alive for the test)
    gl = _gl()
    tex, _ = _gradient_texture(gl)
    name = f"engine-test-{time.monotonic_ns() % 10**6}"
    sink = SyphonSink(name)
    sink.open(gl, W, H, 30.0)
    try:
        directory = syphon.SyphonServerDirectory()
        directory.run_loop_interval = 0.05  # each .servers read runs the run loop this long (default 1 s)
        found = False
        for i in range(200):
            sink.send_texture(tex, i)  # also pumps the run loop that discovery needs
            if any(s.name == name for s in directory.servers):
                found = True
                break
            time.sleep(0.02)
        assert found, "Syphon server not listed in the server directory"
    finally:
        sink.close()
        tex.release()


# ---------------------------------------------------------------------------------------------------------------
# Issue 13, bugs 4 and 5: the logic that does not need the platform, driven through stand-ins of the platform
# modules that record what the sink asks of them (the real round trips are the marked tests above and below).
# ---------------------------------------------------------------------------------------------------------------


def test_spout_picks_a_free_sender_name():
    from engine.sinks.spout import free_sender_name

    assert free_sender_name("engine", set()) == "engine"
    assert free_sender_name("engine", {"engine"}) == "engine_1"
    assert free_sender_name("engine", {"engine", "engine_1", "engine_2", "other"}) == "engine_3"


def test_spout_registers_the_free_name_and_reports_interop_after_the_first_send(monkeypatch, caplog):
    import logging
    import types

    calls = []

    class Receiver:
        def getSenderList(self):
            return ["engine", "TouchDesigner"]

        def releaseReceiver(self):
            calls.append("release-receiver")

    class Sender:
        def setSenderName(self, name):
            calls.append(("name", name))

        def isGLDXReady(self):
            calls.append("gldx")
            return True

        def sendTexture(self, *args):
            calls.append("send")
            return True

        def setFrameSync(self, name):
            calls.append(("sync", name))

        def releaseSender(self):
            calls.append("release")

    fake = types.SimpleNamespace(SpoutReceiver=Receiver, SpoutSender=Sender)
    monkeypatch.setitem(sys.modules, "SpoutGL", fake)
    monkeypatch.setattr(SpoutSink, "availability", classmethod(lambda cls: (True, "")))
    sink = SpoutSink("engine")
    caplog.set_level(logging.INFO, logger="engine.sinks")
    sink.open(types.SimpleNamespace(ctx=None), W, H, 30.0)
    assert sink.name == "engine_1" and ("name", "engine_1") in calls
    assert "gldx" not in calls, "isGLDXReady is only known after the first send"
    assert "'engine' exists already; sharing as 'engine_1'" in caplog.text
    sink.send_texture(types.SimpleNamespace(glo=1, width=W, height=H), 0)
    assert ("sync", "engine_1") in calls and calls.index("send") < calls.index("gldx")
    sink.close()


def test_syphon_flushes_before_it_publishes(monkeypatch):
    import contextlib
    import types

    calls = []

    class Server:
        def __init__(self, name, cgl_context_obj=None):
            self.has_clients = False

        def publish_frame_texture(self, glo, size, is_flipped):
            calls.append("publish")

        def stop(self):
            calls.append("stop")

    ns_ctx = types.SimpleNamespace(CGLContextObj=lambda: 1)
    modules = {
        "AppKit": types.SimpleNamespace(NSOpenGLContext=types.SimpleNamespace(currentContext=lambda: ns_ctx)),
        "Foundation": types.SimpleNamespace(NSRunLoop=types.SimpleNamespace(currentRunLoop=lambda: types.SimpleNamespace(
            runMode_beforeDate_=lambda mode, date: calls.append("runloop"))), NSDefaultRunLoopMode="default",
            NSDate=types.SimpleNamespace(distantPast=lambda: 0)),
        "objc": types.SimpleNamespace(autorelease_pool=contextlib.nullcontext),
        "syphon": types.SimpleNamespace(SyphonOpenGLServer=Server),
        "OpenGL": types.SimpleNamespace(),
        "OpenGL.GL": types.SimpleNamespace(glFlush=lambda: calls.append("flush")),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(SyphonSink, "availability", classmethod(lambda cls: (True, "")))
    sink = SyphonSink("engine")
    sink.open(None, W, H, 30.0)
    sink.send_texture(types.SimpleNamespace(glo=1, width=W, height=H), 0)
    sink.send_texture(types.SimpleNamespace(glo=1, width=W, height=H), 1)
    assert calls == ["flush", "publish", "runloop", "flush", "publish", "runloop"]
    sink.close()


@pytest.mark.windows
@pytest.mark.skipif(sys.platform != "win32", reason="Spout is Windows only")
def test_spout_name_clash_gets_a_free_name_receivers_can_find():
    pytest.importorskip("SpoutGL")
    import SpoutGL

    gl = _gl()
    tex, _ = _gradient_texture(gl)
    name = f"engine-clash-{time.monotonic_ns() % 10**6}"
    first, second = SpoutSink(name), SpoutSink(name)
    first.open(gl, W, H, 30.0)
    try:
        first.send_texture(tex, 0)
        second.open(gl, W, H, 30.0)
        try:
            second.send_texture(tex, 0)
            assert second.name == f"{name}_1"
            with SpoutGL.SpoutReceiver() as rx:
                assert {name, f"{name}_1"} <= set(rx.getSenderList())
        finally:
            second.close()
    finally:
        first.close()
        tex.release()
