"""`--sink syphon[:NAME]` (macOS): publish the output texture to Syphon clients, GPU to GPU, no host copy.

Written against syphon-python (`syphon.SyphonOpenGLServer`, maintained; syphonpy is not) but NOT run here: no
Mac was available, so this file is unverified (see README "Sinks").

What a Syphon OpenGL server needs, and how this sink provides it:
  * An NSOpenGLContext (its CGL context object is what the server binds to). With the window sink, GLFW's
    context is one. A headless engine has none: `create_headless_context()` below makes an offscreen
    NSOpenGLContext (3.2 core profile, no view) and makes it current, after which engine.gl.GL.from_current()
    wraps it. The lead's setup calls it on macOS when no window is requested (EGL does not exist on macOS).
  * A run loop. Syphon announces servers and answers clients' discovery requests through
    NSDistributedNotificationCenter, which delivers on the run loop of the thread that registered. A GUI app
    runs that loop for free; our render loop does not, so every frame we run the current thread's run loop
    once without waiting (`NSRunLoop.runMode:beforeDate:` with a date in the past).
  * An autorelease pool per frame: without NSApplication nobody drains autoreleased Objective-C objects, and
    publishing creates some every frame; a show that runs for hours would grow without it.

Flush before publishing: Syphon copies the texture on its own (the server's) command stream; without a glFlush the
draws that made this frame may not have been submitted yet, and clients get partial frames (Syphon-Framework#81).
`send_texture` calls glFlush (PyOpenGL) first; a flush does not wait for the GPU.

Orientation: Syphon frames follow GL convention (row 0 = bottom). Our textures hold row 0 = top (engine.gl), so
we publish with is_flipped=True and Syphon flips while copying into its IOSurface: clients see it upright.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from engine.errors import SetupError, UsageError
from engine.sinks.base import Sink

log = logging.getLogger("engine.sinks")

INSTALL_HINT = "install syphon-python with OpenGL support (pip install 'syphon-python[opengl]')"


def create_headless_context() -> Any:
    """Make an offscreen NSOpenGLContext current on this thread and return it (keep a reference: releasing it
    destroys the context). For a headless engine on macOS that publishes to Syphon. Raises SetupError."""
    try:
        import AppKit
    except ImportError:
        raise SetupError(f"syphon: {INSTALL_HINT} (PyObjC's AppKit is missing)") from None
    attrs = [
        AppKit.NSOpenGLPFAOpenGLProfile, AppKit.NSOpenGLProfileVersion3_2Core,
        AppKit.NSOpenGLPFAAccelerated,
        AppKit.NSOpenGLPFAColorSize, 24,
        AppKit.NSOpenGLPFAAlphaSize, 8,
        0,
    ]
    fmt = AppKit.NSOpenGLPixelFormat.alloc().initWithAttributes_(attrs)
    if fmt is None:
        raise SetupError("syphon: no accelerated OpenGL 3.2 core pixel format on this Mac")
    ctx = AppKit.NSOpenGLContext.alloc().initWithFormat_shareContext_(fmt, None)
    if ctx is None:
        raise SetupError("syphon: could not create an NSOpenGLContext")
    ctx.makeCurrentContext()
    return ctx


class SyphonSink(Sink):
    kind = "syphon"
    needs_host = False

    def __init__(self, target: str = ""):
        name = target.strip() or "engine"
        if any(ord(c) < 32 for c in name):
            raise UsageError(f"syphon: server name {name!r} contains control characters")
        super().__init__(name)
        self.name = name
        self._server: Any = None
        self._objc: Any = None
        self._runloop: Any = None
        self._past: Any = None
        self._mode: Any = None
        self.width = self.height = 0

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if sys.platform != "darwin":
            return False, "macOS only"
        try:
            import syphon  # noqa: F401
            import OpenGL.GL  # noqa: F401  (syphon-python's OpenGL server needs PyOpenGL)
        except ImportError:
            return False, INSTALL_HINT
        return True, ""

    def open(self, gl: Any, width: int, height: int, fps: float) -> None:
        ok, reason = self.availability()
        if not ok:
            raise SetupError(f"syphon: {reason}")
        import AppKit
        import Foundation
        import objc
        import syphon

        self.width, self.height = int(width), int(height)
        ns_ctx = AppKit.NSOpenGLContext.currentContext()
        if ns_ctx is None:
            raise SetupError(
                "syphon: the engine's OpenGL context is not an NSOpenGLContext; run headless through "
                "engine.sinks.syphon.create_headless_context() or with --sink window"
            )
        try:
            self._server = syphon.SyphonOpenGLServer(self.name, cgl_context_obj=ns_ctx.CGLContextObj())
        except Exception as e:
            raise SetupError(f"syphon: could not create server {self.name!r}: {e}") from None
        from OpenGL.GL import glFlush  # PyOpenGL: syphon-python's OpenGL server needs it anyway

        self._objc = objc
        self._gl_flush = glFlush
        self._runloop = Foundation.NSRunLoop.currentRunLoop()
        self._mode = Foundation.NSDefaultRunLoopMode
        self._past = Foundation.NSDate.distantPast()
        log.info("syphon: publishing %r, %dx%d", self.name, self.width, self.height)

    def send_texture(self, texture: Any, frame_index: int, t: float | None = None) -> None:
        if self._server is None:
            return
        with self._objc.autorelease_pool():
            self._gl_flush()  # submit this frame's draws before Syphon copies the texture (Syphon-Framework#81)
            # size given explicitly: without it syphon-python queries the texture through PyOpenGL every frame.
            self._server.publish_frame_texture(texture.glo, size=(texture.width, texture.height), is_flipped=True)
            self.frames_sent += 1
            # Deliver pending discovery notifications, then return at once (the date is in the past).
            self._runloop.runMode_beforeDate_(self._mode, self._past)

    def stats(self) -> dict[str, Any]:
        s = super().stats()
        if self._server is not None:
            try:
                s["has_clients"] = bool(self._server.has_clients)
            except Exception:
                pass
        return s

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            try:
                server.stop()
            except Exception as e:
                log.warning("syphon: stopping server: %s", e)
