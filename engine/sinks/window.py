"""`--sink window[:fullscreen]`: a live preview window (GLFW).

The engine renders inside the window's GL context (the window is made before the GL stage), so presenting is
one draw of the output texture into the default framebuffer, letterboxed, flipped for GL's bottom-left origin.
Keys: Esc or Q closes (ends the run), F toggles fullscreen.
"""

from __future__ import annotations

import os
import sys

from engine.errors import SetupError
from engine.sinks.base import Sink


def _display_reason() -> str | None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY/WAYLAND_DISPLAY unset); run on a desktop session, or use --sink file:out.mp4 / --sink ndi"
    return None


class WindowSink(Sink):
    kind = "window"

    def __init__(self, target: str = ""):
        super().__init__(target)
        self.fullscreen = target == "fullscreen"
        self.window = None
        self._closed = False
        self.program = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import glfw  # noqa: F401
        except Exception as e:
            return False, f"GLFW is not usable ({e}); pip install glfw"
        reason = _display_reason()
        return (reason is None), (reason or "")

    def create_window(self, width: int, height: int) -> None:
        """Make the window and make its GL context current on this thread (called before the GL stage)."""
        reason = _display_reason()
        if reason:
            raise SetupError(f"window: {reason}")
        import glfw

        if not glfw.init():
            raise SetupError("window: GLFW could not initialise the display; check DISPLAY, or use --sink file:out.mp4")
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)  # required on macOS
        monitor = glfw.get_primary_monitor() if self.fullscreen else None
        if monitor is not None:
            mode = glfw.get_video_mode(monitor)
            win = glfw.create_window(mode.size.width, mode.size.height, "engine", monitor, None)
        else:
            win = glfw.create_window(width, height, "engine", None, None)
        if not win:
            glfw.terminate()
            raise SetupError("window: could not create an OpenGL 3.3 core window (driver too old, or no GL on this display)")
        glfw.make_context_current(win)
        glfw.swap_interval(0)  # the loop paces itself (--fps); vsync would add up to a frame of blocking
        glfw.set_key_callback(win, self._on_key)
        self.window = win
        self.size = (width, height)

    def _on_key(self, win, key, scancode, action, mods) -> None:
        import glfw

        if action != glfw.PRESS:
            return
        if key in (glfw.KEY_ESCAPE, glfw.KEY_Q):
            self._closed = True
        elif key == glfw.KEY_F:
            monitor = glfw.get_window_monitor(win)
            if monitor:
                glfw.set_window_monitor(win, None, 100, 100, self.size[0], self.size[1], 0)
            else:
                m = glfw.get_primary_monitor()
                mode = glfw.get_video_mode(m)
                glfw.set_window_monitor(win, m, 0, 0, mode.size.width, mode.size.height, mode.refresh_rate)

    def open(self, gl, width: int, height: int, fps: float) -> None:
        if self.window is None:
            raise SetupError("window: internal error: the window must be created before the GL stage")
        from engine.gl import ShaderProgram, shader_dir

        self.gl = gl
        folder = shader_dir()
        self.program = ShaderProgram(gl, folder / "fullscreen.vert", folder / "present.frag")

    def send_texture(self, texture, frame_index: int, t: float | None = None) -> None:
        import glfw

        fb_w, fb_h = glfw.get_framebuffer_size(self.window)
        if fb_w > 0 and fb_h > 0:  # minimised windows have a 0x0 framebuffer
            # Letterbox: the largest rectangle of the frame's aspect ratio that fits, centred.
            tw, th = texture.size
            scale = min(fb_w / tw, fb_h / th)
            vw, vh = int(tw * scale), int(th * scale)
            screen = self.gl.ctx.screen
            screen.use()
            screen.viewport = (0, 0, fb_w, fb_h)
            self.gl.ctx.clear(0.0, 0.0, 0.0, 1.0)
            screen.viewport = ((fb_w - vw) // 2, (fb_h - vh) // 2, vw, vh)
            self.program.maybe_reload()
            self.program.draw(screen, {"src": texture}, flip_y=True, gain=1.0)  # the output has the master fader already
            glfw.swap_buffers(self.window)
        glfw.poll_events()
        self.frames_sent += 1

    def should_close(self) -> bool:
        if self.window is None:
            return False
        import glfw

        return self._closed or bool(glfw.window_should_close(self.window))

    def close(self) -> None:
        if self.program is not None:
            self.program.release()
        if self.window is not None:
            import glfw

            glfw.destroy_window(self.window)
            glfw.terminate()
            self.window = None
