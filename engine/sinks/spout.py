"""`--sink spout[:NAME]` (Windows): share the output texture with Spout receivers, GPU to GPU, no host copy.

Written against SpoutGL (the Python binding of the Spout 2 SDK) but NOT run here: no Windows machine was
available, so this file is unverified (see README "Sinks").

How it works: `SpoutSender.sendTexture(tex_id, GL_TEXTURE_2D, w, h, invert, host_fbo)` blits our RGBA8 output
texture into the shared DirectX texture through the WGL_NV_DX_interop extension, with the engine's GL context
current on the render thread (texture sinks are called there). Spout falls back to a CPU copy by itself on
machines without GL/DX interop.

Orientation: Spout's shared texture is a DirectX texture, whose row 0 is the top of the image. Spout's `invert`
flag exists because ordinary GL textures hold row 0 = bottom and must be flipped on the way in. Ours hold
row 0 = top already (engine.gl conventions), so we pass invert=False: a flip here would show the picture upside
down in TouchDesigner, Resolume and OBS.

`host_fbo`: Spout binds its own framebuffer for the blit and rebinds `host_fbo` afterwards; we pass the one
moderngl believes is bound, so the next draw lands where the loop expects.

Sender names are unique machine-wide: when a sender called NAME exists already (another engine, TouchDesigner),
Spout renames ours (NAME_1) and receivers, frame sync and our log would disagree. So the sink picks a free name
itself from Spout's sender list before it registers (NAME, NAME_1, NAME_2, ...) and logs the name it really
uses. GL/DX interop readiness is only known after the first send; it is logged then.

Frame sync: after each frame we call `setFrameSync(name)`, which signals receivers that wait for new frames
(Spout's WaitFrameSync); receivers that do not wait are unaffected, and the call does not block.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from engine.errors import SetupError, UsageError
from engine.sinks.base import Sink

log = logging.getLogger("engine.sinks")

GL_TEXTURE_2D = 0x0DE1
INSTALL_HINT = "install SpoutGL (pip install SpoutGL)"
# Spout keeps sender names in a fixed 256-byte shared-memory slot.
MAX_NAME = 255


class SpoutSink(Sink):
    kind = "spout"
    needs_host = False

    def __init__(self, target: str = ""):
        name = target.strip() or "engine"
        if len(name.encode("utf-8")) > MAX_NAME or any(ord(c) < 32 for c in name):
            raise UsageError(f"spout: sender name {name!r} must be printable and at most {MAX_NAME} bytes")
        super().__init__(name)
        self.name = name
        self._sender: Any = None
        self._gl: Any = None
        self.width = self.height = 0
        self._failures = 0
        self.requested = name
        self._reported = False

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if sys.platform != "win32":
            return False, "Windows only"
        try:
            import SpoutGL  # noqa: F401
        except ImportError:
            return False, INSTALL_HINT
        return True, ""

    def open(self, gl: Any, width: int, height: int, fps: float) -> None:
        ok, reason = self.availability()
        if not ok:
            raise SetupError(f"spout: {reason}")
        import SpoutGL

        self._gl, self.width, self.height = gl, int(width), int(height)
        taken = _sender_names(SpoutGL)
        self.name = free_sender_name(self.requested, taken)
        if self.name != self.requested:
            log.warning("spout: a sender named %r exists already; sharing as %r (receivers must pick that name)",
                        self.requested, self.name)
        try:
            sender = SpoutGL.SpoutSender()
            sender.setSenderName(self.name)
        except Exception as e:
            raise SetupError(f"spout: could not create sender {self.name!r}: {e}") from None
        self._sender = sender
        log.info("spout: sharing %r, %dx%d", self.name, self.width, self.height)

    def send_texture(self, texture: Any, frame_index: int, t: float | None = None) -> None:
        if self._sender is None:
            return
        host_fbo = _bound_fbo(self._gl)
        ok = self._sender.sendTexture(texture.glo, GL_TEXTURE_2D, texture.width, texture.height, False, host_fbo)
        if ok:
            self.frames_sent += 1
            self._sender.setFrameSync(self.name)
            if not self._reported:  # known only once a frame went out
                self._reported = True
                log.info("spout: first frame sent as %r (GL/DX interop: %s)", self.name, _safe(self._sender.isGLDXReady))
        else:
            # A failed share (device lost, receiver resized) is retried on the next frame; the loop goes on.
            self.frames_dropped += 1
            self._failures += 1
            if self._failures == 1 or self._failures % 300 == 0:
                log.warning("spout: sendTexture failed (%d so far); retrying every frame", self._failures)

    def close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            try:
                sender.releaseSender()
            except Exception as e:
                log.warning("spout: releasing sender: %s", e)


def free_sender_name(requested: str, taken: set[str]) -> str:
    """`requested`, or the first of requested_1, requested_2, ... that no running sender uses (Spout's own scheme)."""
    if requested not in taken:
        return requested
    n = 1
    while f"{requested}_{n}" in taken:
        n += 1
    return f"{requested}_{n}"


def _sender_names(spout: Any) -> set[str]:
    """The names of the Spout senders running on this machine (SpoutGL's SpoutReceiver.getSenderList, SpoutGL
    0.1+); empty when this SpoutGL cannot list them (then Spout's own renaming is the fallback)."""
    try:
        receiver = spout.SpoutReceiver()
        try:
            return {str(n) for n in receiver.getSenderList()}
        finally:
            receiver.releaseReceiver()
    except Exception as e:
        log.info("spout: cannot list the running senders (%s); a name clash is left to Spout", e)
        return set()


def _bound_fbo(gl: Any) -> int:
    """The GL name of the framebuffer moderngl has bound (0 = default framebuffer)."""
    ctx = getattr(gl, "ctx", None)
    fbo = getattr(ctx, "fbo", None)
    return int(getattr(fbo, "glo", 0) or 0)


def _safe(fn) -> str:
    try:
        return str(fn())
    except Exception:
        return "?"
