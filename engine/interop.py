"""Zero-copy CUDA-GL interop: frames go from the generator's CUDA tensor into the GL texture without touching host
memory, and (img2img feedback) from a GL texture back into a CUDA tensor.

Same interface as engine.upload.StagedUpload (upload / download / prepare / release / close, name,
host_copies_per_frame = 0), so the loop does not care which path it has. `select_uploader` decides, once, at setup.

How (cuda-bindings runtime API; torch and cuda-bindings share the device's primary CUDA context):
    setup      cudaGraphicsGLRegisterImage(texture.glo, GL_TEXTURE_2D, flags) once per texture, plus one
               preallocated (H, W, 4) staging tensor per texture in the texture's format (uint8 / float16).
    per frame  on torch's current stream: fused layout kernel (engine.kernels.layout.to_rgba) into the staging tensor,
               cudaGraphicsMapResources -> cudaGraphicsSubResourceGetMappedArray -> cudaMemcpy2DToArrayAsync
               (device to device) -> cudaGraphicsUnmapResources. No registration, allocation or host sync.
               Map waits for GL's pending work on the texture and unmap orders GL's later draws after the copy,
               both on the GPU.
    teardown   cudaGraphicsUnregisterResource before the texture is released (`release(texture)` / `close()`).

The GL context that owns the textures must be current on the calling thread (it is: the loop's render thread).
Rows: the staging tensor's row 0 (the image's top row) goes to texture row 0, exactly as texture.write() does on
the staged path, so both paths produce the same texture and the present shader's flip is unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import SetupError
from engine.kernels.layout import from_rgba, to_rgba
from engine.upload import StagedUpload, texture_dtype

GL_TEXTURE_2D = 0x0DE1
# cuda-bindings releases known to break GL interop (shared/notes/facts.md): 12.9.3 returns a null handle from
# cudaGraphicsGLRegisterImage, 13.0.2 ships with the graphics APIs disabled.
BAD_CUDA_BINDINGS = {"12.9.3": "returns a null resource from cudaGraphicsGLRegisterImage",
                     "13.0.2": "has the graphics interop APIs disabled"}
_MODES = ("write", "read", "readwrite")


class InteropError(RuntimeError):
    """A CUDA call failed during a frame (after setup succeeded): driver reset, context lost, texture deleted
    under us. Setup failures raise SetupError instead."""


def _cuda_bindings_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("cuda-bindings")
    except Exception:
        return None


def import_runtime():
    """cuda.bindings.runtime, or SetupError saying how to get a working one."""
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        raise SetupError("cuda-bindings is not installed: pip install 'cuda-bindings>=12.8,!=12.9.3,!=13.0.2' "
                         "(major version = torch's CUDA major, see torch.version.cuda)") from None
    ver = _cuda_bindings_version()
    if ver in BAD_CUDA_BINDINGS:
        raise SetupError(f"cuda-bindings {ver} {BAD_CUDA_BINDINGS[ver]}; install another version "
                         "(pip install 'cuda-bindings>=12.8,!=12.9.3,!=13.0.2')")
    return rt


def _error_text(rt, err) -> str:
    """'cudaErrorInvalidValue (invalid argument)' for an error code."""
    try:
        _, name = rt.cudaGetErrorName(err)
        _, text = rt.cudaGetErrorString(err)
        msg = f"{name.decode()} ({text.decode()})"
    except Exception:  # the error lookup itself failed: still report the number
        msg = f"CUDA error {int(err)}"
    if getattr(err, "name", "") == "cudaErrorInsufficientDriver":
        msg += (f"; cuda-bindings {_cuda_bindings_version()} needs a newer driver than this one: install the "
                f"cuda-bindings major version of torch's CUDA ({torch.version.cuda})")
    return msg


@dataclass
class _Registered:
    texture: Any  # the moderngl.Texture (kept to detect a recycled GL name)
    glo: int
    size: tuple[int, int]  # (W, H)
    mode: str  # write | read | readwrite
    resource: Any  # cudaGraphicsResource_t
    staging: torch.Tensor  # (H, W, 4) uint8 / float16, contiguous, on the CUDA device
    row_bytes: int  # W * 4 * element size: both the staging pitch and the copied width


class CudaGLInterop:
    """CUDA-GL interop uploader. Construct at setup (after the GL context exists and torch has picked the device)."""

    name = "interop"
    host_copies_per_frame = 0

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise SetupError(f"CUDA-GL interop needs a CUDA device, got {self.device}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._rt = import_runtime()
        rt = self._rt
        self._ok = rt.cudaError_t.cudaSuccess
        self._d2d = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._flags = {
            "write": int(rt.cudaGraphicsRegisterFlags.cudaGraphicsRegisterFlagsWriteDiscard),  # we overwrite it all
            "read": int(rt.cudaGraphicsRegisterFlags.cudaGraphicsRegisterFlagsReadOnly),
            "readwrite": int(rt.cudaGraphicsRegisterFlags.cudaGraphicsRegisterFlagsNone),
        }
        torch.cuda.init()
        # Make torch's device (its primary context) the one cuda-bindings' runtime uses on this thread.
        self._setup_call("cudaSetDevice", rt.cudaSetDevice(self.device.index))
        self._regs: dict[int, _Registered] = {}

    # -- error checking -----------------------------------------------------------------------------------------
    def _setup_call(self, what: str, result: tuple) -> tuple:
        if result[0] != self._ok:
            raise SetupError(f"CUDA-GL interop: {what} failed: {_error_text(self._rt, result[0])}")
        return result[1:]

    def _frame_call(self, what: str, result: tuple) -> tuple:
        if result[0] != self._ok:
            raise InteropError(f"CUDA-GL interop: {what} failed: {_error_text(self._rt, result[0])}")
        return result[1:]

    # -- registration (setup) -----------------------------------------------------------------------------------
    def prepare(self, texture, mode: str = "write", image_dtype: torch.dtype = torch.float32) -> None:
        """Register `texture` now (setup) rather than on its first frame, and compile the layout kernel for
        `image_dtype` frames. mode: write (upload target), read (download source) or readwrite."""
        reg = self._registration(texture, mode)
        h, w = reg.staging.shape[:2]
        with torch.no_grad():
            if mode != "read":
                to_rgba(torch.zeros((1, 3, h, w), dtype=image_dtype, device=self.device), reg.staging)
            if mode != "write":
                from_rgba(reg.staging, torch.empty((1, 3, h, w), dtype=image_dtype, device=self.device))

    def _registration(self, texture, need: str) -> _Registered:
        """The texture's registration, registering (once) or re-registering when the texture changed size,
        its GL name was recycled, or it is now used in a direction its flags exclude."""
        reg = self._regs.get(texture.glo)
        if reg is not None and reg.texture is texture and reg.size == tuple(texture.size) and (reg.mode == need or reg.mode == "readwrite"):
            return reg
        mode = need
        if reg is not None:
            if reg.texture is texture and reg.size == tuple(texture.size):
                mode = "readwrite"  # same texture used both ways (feedback)
            self._unregister(reg, quiet=reg.texture is not texture)
        return self._register(texture, mode)

    def _register(self, texture, mode: str) -> _Registered:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if texture.components != 4 or texture.dtype not in ("f1", "f2"):
            raise SetupError(f"CUDA-GL interop handles RGBA8 and RGBA16F textures; got {texture.components} components of {texture.dtype}")
        w, h = texture.size
        (resource,) = self._setup_call(
            f"cudaGraphicsGLRegisterImage(texture {texture.glo}, {w}x{h} {texture.dtype})",
            self._rt.cudaGraphicsGLRegisterImage(texture.glo, GL_TEXTURE_2D, self._flags[mode]),
        )
        if resource is None or int(resource) == 0:
            raise SetupError(f"CUDA-GL interop: cudaGraphicsGLRegisterImage returned a null resource "
                             f"(cuda-bindings {_cuda_bindings_version()}; 12.9.3 has this bug)")
        dtype = texture_dtype(texture)
        staging = torch.empty((h, w, 4), dtype=dtype, device=self.device)
        reg = _Registered(texture, texture.glo, (w, h), mode, resource, staging, w * 4 * staging.element_size())
        self._regs[texture.glo] = reg
        return reg

    def _unregister(self, reg: _Registered, quiet: bool = False) -> None:
        self._regs.pop(reg.glo, None)
        err = self._rt.cudaGraphicsUnregisterResource(reg.resource)[0]
        if err != self._ok and not quiet:
            raise SetupError(f"CUDA-GL interop: cudaGraphicsUnregisterResource failed: {_error_text(self._rt, err)}")

    def release(self, texture) -> None:
        """Unregister `texture`; call before texture.release() (e.g. on resize)."""
        reg = self._regs.get(texture.glo)
        if reg is not None and reg.texture is texture:
            self._unregister(reg)

    # -- per frame ----------------------------------------------------------------------------------------------
    def _copy(self, reg: _Registered, to_texture: bool) -> None:
        rt = self._rt
        stream = torch.cuda.current_stream(self.device).cuda_stream
        h = reg.staging.shape[0]
        self._frame_call("cudaGraphicsMapResources", rt.cudaGraphicsMapResources(1, reg.resource, stream))
        try:
            (array,) = self._frame_call("cudaGraphicsSubResourceGetMappedArray",
                                        rt.cudaGraphicsSubResourceGetMappedArray(reg.resource, 0, 0))
            if to_texture:
                self._frame_call("cudaMemcpy2DToArrayAsync", rt.cudaMemcpy2DToArrayAsync(
                    array, 0, 0, reg.staging.data_ptr(), reg.row_bytes, reg.row_bytes, h, self._d2d, stream))
            else:
                self._frame_call("cudaMemcpy2DFromArrayAsync", rt.cudaMemcpy2DFromArrayAsync(
                    reg.staging.data_ptr(), reg.row_bytes, array, 0, 0, reg.row_bytes, h, self._d2d, stream))
        finally:
            # Always unmap: a resource left mapped makes every later GL use of the texture an error.
            self._frame_call("cudaGraphicsUnmapResources", rt.cudaGraphicsUnmapResources(1, reg.resource, stream))

    def upload(self, image: torch.Tensor, texture) -> None:
        """image (1, 3, H, W) float in [-1, 1] on the CUDA device -> RGBA texture, all on the GPU."""
        h, w = image.shape[-2:]
        if (w, h) != tuple(texture.size):
            raise ValueError(f"frame is {w}x{h} but the texture is {texture.size[0]}x{texture.size[1]}")
        reg = self._registration(texture, "write")
        with torch.no_grad():
            to_rgba(image, reg.staging)
        self._copy(reg, to_texture=True)

    def download(self, texture, out: torch.Tensor) -> torch.Tensor:
        """RGBA texture -> preallocated out (1, 3, H, W) float in [-1, 1] on the CUDA device. Returns `out`."""
        reg = self._registration(texture, "read")
        self._copy(reg, to_texture=False)
        with torch.no_grad():
            return from_rgba(reg.staging, out)

    def close(self) -> None:
        """Unregister every texture (the GL context must still be alive)."""
        errors = []
        for reg in list(self._regs.values()):
            try:
                self._unregister(reg)
            except SetupError as e:
                errors.append(str(e))
        if errors:
            raise SetupError(errors[0])

    # -- probe --------------------------------------------------------------------------------------------------
    def probe(self, ctx) -> None:
        """Prove interop works with `ctx` (a moderngl.Context, current on this thread): register a 1x1 RGBA8
        texture, copy a known pixel in through CUDA, read it back through GL. SetupError when anything fails."""
        rt = self._rt
        # Which CUDA devices back the current GL context (fails on some drivers: then the copy check decides).
        res = rt.cudaGLGetDevices(4, rt.cudaGLDeviceList.cudaGLDeviceListAll)
        if res[0] == self._ok and res[1] > 0:
            gl_devices = [int(d) for d in list(res[2])[: res[1]]]
            if self.device.index not in gl_devices:
                raise SetupError(f"the GL context runs on CUDA device(s) {gl_devices}, not on {self.device} "
                                 "(pick the EGL device with engine.egl_device, or move the generator)")
        tex = ctx.texture((1, 1), 4, dtype="f1")
        try:
            reg = self._register(tex, "write")
            try:
                reg.staging.copy_(torch.tensor([[[11, 22, 33, 44]]], dtype=torch.uint8))
                self._copy(reg, to_texture=True)
                torch.cuda.synchronize(self.device)  # setup only
                got = bytes(tex.read())
            except InteropError as e:
                raise SetupError(str(e)) from None
            finally:
                self._unregister(reg, quiet=True)
        finally:
            tex.release()
        if got != bytes([11, 22, 33, 44]):
            raise SetupError(f"copy check failed: wrote RGBA (11, 22, 33, 44) through CUDA, GL read back {tuple(got)}")


# ---------------------------------------------------------------------------------------------------------------
# Choosing the path
# ---------------------------------------------------------------------------------------------------------------


def _gl_parts(gl) -> tuple[Any, dict[str, str]]:
    """(moderngl context or None, info dict) from an engine.gl.GL, a moderngl.Context or an info mapping."""
    ctx = getattr(gl, "ctx", None)
    if ctx is None and hasattr(gl, "texture") and hasattr(gl, "info"):
        ctx = gl
    if ctx is not None:
        return ctx, dict(ctx.info)
    return None, dict(gl or {})


def wsl_detected() -> bool:
    try:
        with open("/proc/version", encoding="utf-8", errors="replace") as f:
            return "microsoft" in f.read().lower()
    except OSError:
        return False


def virtualgl_detected(info: dict[str, str]) -> str | None:
    """Why we think VirtualGL interposes GL (its faker does not pass CUDA interop through), or None."""
    vgl_vars = sorted(k for k in os.environ if k.startswith("VGL_"))
    if vgl_vars:
        return f"environment has {', '.join(vgl_vars[:3])}"
    if "vglfaker" in os.environ.get("LD_PRELOAD", "").lower():
        return "LD_PRELOAD loads VirtualGL's faker"
    text = f"{info.get('GL_RENDERER', '')} {info.get('GL_VENDOR', '')}".lower()
    if "virtualgl" in text:
        return f"GL renderer is {info.get('GL_RENDERER')!r}"
    return None


def environment_reason(info: dict[str, str]) -> str | None:
    """Why this machine's GL cannot share textures with CUDA, judged without touching CUDA (WSL, VirtualGL, a
    GL renderer that is not NVIDIA), or None when nothing rules it out."""
    if wsl_detected():
        return "WSL detected (/proc/version mentions Microsoft): its GL is not shared with CUDA"
    vgl = virtualgl_detected(info)
    if vgl:
        return f"VirtualGL detected ({vgl}): it does not pass CUDA-GL interop through"
    renderer, vendor = info.get("GL_RENDERER", "?"), info.get("GL_VENDOR", "?")
    if "nvidia" not in f"{renderer} {vendor}".lower():
        return (f"GL renderer is {renderer!r} (vendor {vendor!r}), not NVIDIA: CUDA can only share textures with "
                "NVIDIA's GL (headless: pick the NVIDIA EGL device, see engine.egl_device)")
    return None


def select_uploader(device: torch.device | str, gl, pipeline=None) -> tuple[Any, str | None]:
    """(uploader, None) with CUDA-GL interop when it provably works, else (StagedUpload, one-line reason).

    gl: engine.gl.GL, a moderngl.Context, or just its info mapping (then no test registration is possible, so
    the staged path is chosen). pipeline: an engine.gl.Pipeline whose frame texture is registered now, at setup.
    Checks, in order: CUDA device, cuda-bindings, WSL, VirtualGL, an NVIDIA GL renderer, then a real test
    registration and copy on a 1x1 texture.
    """
    device = torch.device(device)

    def staged(reason: str) -> tuple[StagedUpload, str]:
        up = StagedUpload(device)
        if pipeline is not None:
            up.prepare(pipeline.frame.texture, "write")  # allocate at setup, not on frame 1
        return up, reason

    if device.type != "cuda" or not torch.cuda.is_available():
        return staged(f"no CUDA device (device {device}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()})")
    try:
        import_runtime()
    except SetupError as e:
        return staged(str(e))
    ctx, info = _gl_parts(gl)
    reason = environment_reason(info)
    if reason:
        return staged(reason)
    if ctx is None:
        return staged("no GL context was given to test a registration")
    interop = None
    try:
        interop = CudaGLInterop(device)
        interop.probe(ctx)
        if pipeline is not None:
            interop.prepare(pipeline.frame.texture, "write")
    except SetupError as e:
        if interop is not None:
            try:
                interop.close()
            except SetupError:
                pass
        return staged(f"register failed: {str(e).removeprefix('CUDA-GL interop: ')}")
    return interop, None


def probe_interop(device: torch.device | str | None = None) -> tuple[bool, str | None]:
    """For `engine info`: (True, where) when interop works on `device` (default: the current CUDA device) with a
    headless GL context on the matching EGL device, else (False, the reason select_uploader would give)."""
    if not torch.cuda.is_available():
        return False, "no CUDA device: frames are staged through host memory"
    device = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    try:
        import moderngl

        from engine.egl_device import egl_device_for_cuda

        index, egl_reason = egl_device_for_cuda(device.index if device.index is not None else torch.cuda.current_device())
        kwargs: dict[str, Any] = {"standalone": True, "backend": "egl", "require": 330}
        if index is not None:
            kwargs["device_index"] = index
        ctx = moderngl.create_context(**kwargs)
    except Exception as e:
        return False, f"no headless GL context to test with: {e}"
    try:
        uploader, reason = select_uploader(device, ctx)
        uploader.close()
    finally:
        ctx.release()
    if reason is not None:
        if egl_reason:
            reason += f" (EGL device matching: {egl_reason})"
        return False, reason
    return True, f"CUDA-GL interop on {torch.cuda.get_device_name(device)} (EGL device {index})"
