"""Which EGL device is the CUDA GPU: headless GL must live on the same physical GPU as the generator, or
CUDA-GL interop fails (or silently crosses PCIe).

EGL device indices (the order of eglQueryDevicesEXT, which glcontext's `device_index` indexes) are not CUDA
ordinals on multi-GPU machines, and libglvnd lists other vendors' devices too (Mesa's software device is always
there). NVIDIA's EGL tags its devices with their CUDA ordinal (EGL_NV_device_cuda: EGL_CUDA_DEVICE_NV); a device
that exposes a DRM node can also be matched by PCI address, which survives CUDA_VISIBLE_DEVICES renumbering.

Only ctypes and libEGL: no GL context is created here, so this runs before `moderngl.create_context`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

EGL_EXTENSIONS = 0x3055
EGL_CUDA_DEVICE_NV = 0x323A  # EGL_NV_device_cuda
EGL_DRM_DEVICE_FILE_EXT = 0x3233  # EGL_EXT_device_drm
EGL_DRM_RENDER_NODE_FILE_EXT = 0x3377  # EGL_EXT_device_drm_render_node
_MAX_DEVICES = 32

_EGLBoolean = ctypes.c_uint
_EGLint = ctypes.c_int32
_EGLAttrib = ctypes.c_ssize_t  # intptr_t


@dataclass(frozen=True)
class EglDevice:
    index: int  # position in eglQueryDevicesEXT's list = glcontext's device_index
    extensions: tuple[str, ...]
    cuda_ordinal: int | None  # EGL_CUDA_DEVICE_NV, NVIDIA only
    drm_file: str | None  # /dev/dri/cardN (None for software devices)
    pci_address: str | None  # "0000:01:00.0" from sysfs, when drm_file is known

    def describe(self) -> str:
        bits = [f"EGL device {self.index}"]
        if self.cuda_ordinal is not None:
            bits.append(f"CUDA {self.cuda_ordinal}")
        if self.drm_file:
            bits.append(self.drm_file)
        if self.pci_address:
            bits.append(f"PCI {self.pci_address}")
        if "EGL_MESA_device_software" in self.extensions:
            bits.append("Mesa software")
        return " ".join(bits)


def _libegl_name() -> str | None:
    # The same library glcontext's EGL backend loads (it honours GLCONTEXT_LINUX_LIBEGL), so indices agree.
    return os.environ.get("GLCONTEXT_LINUX_LIBEGL") or ctypes.util.find_library("EGL")


def _pci_address(drm_file: str | None) -> str | None:
    if not drm_file:
        return None
    node = os.path.basename(drm_file)
    try:
        target = os.path.realpath(f"/sys/class/drm/{node}/device")
    except OSError:
        return None
    name = os.path.basename(target)
    # A PCI device directory is named DDDD:BB:DD.F.
    return name.lower() if name.count(":") == 2 and "." in name else None


def list_egl_devices() -> tuple[list[EglDevice], str | None]:
    """All EGL devices in glcontext's order, or ([], reason) when they cannot be enumerated."""
    name = _libegl_name()
    if not name:
        return [], "libEGL not found (install libegl1)"
    try:
        egl = ctypes.CDLL(name)
    except OSError as e:
        return [], f"cannot load {name}: {e}"
    egl.eglQueryString.restype = ctypes.c_char_p
    egl.eglQueryString.argtypes = [ctypes.c_void_p, _EGLint]
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    egl.eglGetError.restype = _EGLint

    client_ext = (egl.eglQueryString(None, EGL_EXTENSIONS) or b"").decode(errors="replace").split()
    if "EGL_EXT_device_enumeration" not in client_ext and "EGL_EXT_device_base" not in client_ext:
        return [], f"{name} lacks EGL_EXT_device_enumeration"

    def proc(fn: str, restype, *argtypes):
        addr = egl.eglGetProcAddress(fn.encode())
        return ctypes.CFUNCTYPE(restype, *argtypes)(addr) if addr else None

    query_devices = proc("eglQueryDevicesEXT", _EGLBoolean, _EGLint, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(_EGLint))
    query_attrib = proc("eglQueryDeviceAttribEXT", _EGLBoolean, ctypes.c_void_p, _EGLint, ctypes.POINTER(_EGLAttrib))
    query_string = proc("eglQueryDeviceStringEXT", ctypes.c_char_p, ctypes.c_void_p, _EGLint)
    if query_devices is None or query_attrib is None or query_string is None:
        return [], f"{name} does not export eglQueryDevicesEXT/eglQueryDeviceAttribEXT/eglQueryDeviceStringEXT"

    handles = (ctypes.c_void_p * _MAX_DEVICES)()
    count = _EGLint(0)
    if not query_devices(_MAX_DEVICES, handles, ctypes.byref(count)):
        return [], f"eglQueryDevicesEXT failed (EGL error 0x{egl.eglGetError() & 0xFFFF:04x})"

    devices = []
    for i in range(count.value):
        h = handles[i]
        ext = tuple((query_string(h, EGL_EXTENSIONS) or b"").decode(errors="replace").split())
        cuda = None
        if "EGL_NV_device_cuda" in ext:
            value = _EGLAttrib(-1)
            if query_attrib(h, EGL_CUDA_DEVICE_NV, ctypes.byref(value)) and value.value >= 0:
                cuda = int(value.value)
        drm = None
        if "EGL_EXT_device_drm" in ext:
            raw = query_string(h, EGL_DRM_DEVICE_FILE_EXT)
            drm = raw.decode(errors="replace") if raw else None
        egl.eglGetError()  # clear any error left by a query on a device without the attribute
        devices.append(EglDevice(i, ext, cuda, drm, _pci_address(drm)))
    return devices, None


def egl_device_for_cuda(cuda_ordinal: int, pci_address: str | None = "auto") -> tuple[int | None, str | None]:
    """(EGL device index for glcontext's device_index, None) for the NVIDIA EGL device that is CUDA device
    `cuda_ordinal`, or (None, reason) when there is none (no NVIDIA EGL, Mesa only, no libEGL): the caller then
    lets EGL pick its default device, and interop is likely to be refused.

    `pci_address` ("0000:01:00.0"; "auto" = ask torch, None = don't use) is tried first: it names the physical
    GPU, whereas EGL_CUDA_DEVICE_NV is an ordinal that CUDA_VISIBLE_DEVICES may renumber. Only devices of
    NVIDIA's EGL (EGL_NV_device_cuda) qualify: no other EGL implementation can share textures with CUDA.
    """
    devices, err = list_egl_devices()
    if err is not None:
        return None, err
    if pci_address == "auto":
        pci_address = cuda_pci_address(cuda_ordinal)
    return match_device(devices, cuda_ordinal, pci_address)


def _norm_pci(address: str) -> str:
    # CUDA may report an 8-digit PCI domain ("00000000:01:00.0"), sysfs a 4-digit one.
    domain, _, rest = address.lower().partition(":")
    try:
        return f"{int(domain, 16):04x}:{rest}"
    except ValueError:
        return address.lower()


def match_device(devices: list[EglDevice], cuda_ordinal: int, pci_address: str | None) -> tuple[int | None, str | None]:
    """The matching rule of egl_device_for_cuda, on an enumerated device list."""
    if not devices:
        return None, "EGL reports no devices"
    nvidia = [d for d in devices if "EGL_NV_device_cuda" in d.extensions]
    if pci_address:
        want = _norm_pci(pci_address)
        for d in nvidia:
            if d.pci_address and _norm_pci(d.pci_address) == want:
                return d.index, None
    for d in nvidia:
        if d.cuda_ordinal == cuda_ordinal:
            return d.index, None
    listing = "; ".join(d.describe() for d in devices)
    if not nvidia:
        return None, f"no NVIDIA EGL device (EGL_NV_device_cuda) for CUDA device {cuda_ordinal}; EGL devices: {listing}"
    return None, f"no NVIDIA EGL device is CUDA device {cuda_ordinal}; EGL devices: {listing}"


def cuda_pci_address(cuda_ordinal: int) -> str | None:
    """The PCI address of CUDA device `cuda_ordinal` as torch reports it ("0000:01:00.0"), or None."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        p = torch.cuda.get_device_properties(cuda_ordinal)
        return f"{p.pci_domain_id:04x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"
    except Exception:  # older torch without the pci_* fields, or no driver
        return None
