"""engine.egl_device: EGL device enumeration through libEGL (Mesa here), CUDA matching rules, and on a GPU box
that the matched device index really gives an NVIDIA context."""

from __future__ import annotations

import ctypes.util

import moderngl
import pytest
import torch

from engine.egl_device import EglDevice, egl_device_for_cuda, list_egl_devices, match_device

needs_egl = pytest.mark.skipif(ctypes.util.find_library("EGL") is None, reason="no libEGL")
NV = ("EGL_NV_device_cuda", "EGL_EXT_device_drm")


@needs_egl
def test_enumerates_devices_in_glcontext_order():
    devices, err = list_egl_devices()
    assert err is None and devices
    assert [d.index for d in devices] == list(range(len(devices)))
    # glcontext's device_index indexes the same list: the last device opens a context, one past it does not.
    ctx = moderngl.create_context(standalone=True, backend="egl", device_index=devices[-1].index)
    try:
        assert ctx.info["GL_RENDERER"]
    finally:
        ctx.release()
    with pytest.raises(Exception, match="device index"):
        moderngl.create_context(standalone=True, backend="egl", device_index=len(devices))


@needs_egl
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-NVIDIA answer")
def test_without_nvidia_egl_returns_none_with_a_reason():
    devices, _ = list_egl_devices()
    if any(d.cuda_ordinal is not None for d in devices):
        pytest.skip("this machine has NVIDIA EGL")
    index, reason = egl_device_for_cuda(0)
    assert index is None
    assert reason.startswith("no NVIDIA EGL device") and "EGL device 0" in reason


def test_match_prefers_pci_address_over_ordinal():
    devices = [
        EglDevice(0, ("EGL_MESA_device_software",), None, None, None),
        EglDevice(1, NV, 0, "/dev/dri/card1", "0000:41:00.0"),
        EglDevice(2, NV, 1, "/dev/dri/card2", "0000:01:00.0"),
    ]
    assert match_device(devices, 1, None) == (2, None)
    # CUDA_VISIBLE_DEVICES=1: torch's cuda:0 is the card at 01:00.0 whatever EGL's ordinal says
    assert match_device(devices, 0, "00000000:01:00.0") == (2, None)
    assert match_device(devices, 0, "0000:99:00.0") == (1, None)  # unknown address: fall back to the ordinal
    index, reason = match_device(devices, 5, None)
    assert index is None and "is CUDA device 5" in reason and "EGL device 2 CUDA 1" in reason


def test_match_ignores_non_nvidia_devices_with_the_same_address():
    devices = [EglDevice(0, ("EGL_EXT_device_drm",), None, "/dev/dri/card0", "0000:01:00.0")]
    index, reason = match_device(devices, 0, "0000:01:00.0")
    assert index is None and "no NVIDIA EGL device" in reason
    assert match_device([], 0, None) == (None, "EGL reports no devices")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_matched_device_is_the_nvidia_gpu():
    index, reason = egl_device_for_cuda(torch.cuda.current_device())
    assert index is not None, reason
    ctx = moderngl.create_context(standalone=True, backend="egl", device_index=index)
    try:
        assert "nvidia" in (ctx.info["GL_VENDOR"] + ctx.info["GL_RENDERER"]).lower()
    finally:
        ctx.release()


def test_egl_devices_are_matched_only_for_an_egl_context(monkeypatch, caplog):
    """Issue 13, bug 8: on Windows the headless context is WGL; matching EGL devices there warned "libEGL not found"
    on every CUDA run. The loop asks only where the headless context is EGL."""
    import torch

    import engine.egl_device
    from engine.gl import GL
    from engine.loop import Engine

    calls = []
    monkeypatch.setattr(engine.egl_device, "egl_device_for_cuda", lambda ordinal: calls.append(ordinal) or (None, "libEGL not found"))
    eng = Engine.__new__(Engine)  # only the device matters to this method
    eng.device = torch.device("cuda", 0)
    monkeypatch.setattr(GL, "HEADLESS_IS_EGL", False)
    with caplog.at_level("WARNING"):
        assert eng._egl_device_index() is None
    assert calls == [] and "libEGL" not in caplog.text
    monkeypatch.setattr(GL, "HEADLESS_IS_EGL", True)
    with caplog.at_level("WARNING"):
        assert eng._egl_device_index() is None
    assert calls == [0] and "libEGL not found" in caplog.text
