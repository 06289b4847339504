"""Temperature sources: NVML (real GPU when there is one, the refusal path when not), Linux sysfs thermal zones
(this machine's, and a zone tree in the kernel's layout), the OSC-fed value over real UDP, synthetic curves,
and the 10 Hz sampler thread."""

from __future__ import annotations

import math
import os
import time

import pytest
from pythonosc.udp_client import SimpleUDPClient

from engine.clock import FrameTime
from engine.control import build_controllers
from engine.control.thermal import (
    NvmlSource,
    OscTemperatureSource,
    Source,
    SyntheticSource,
    SysfsSource,
    ThermalSampler,
    create_source,
    list_zones,
)
from engine.errors import SetupError, UsageError
from engine.params import ParamStore


def nvml_works() -> bool:
    try:
        NvmlSource(0).close()
        return True
    except SetupError:
        return False


HAVE_NVML = nvml_works()


@pytest.mark.skipif(not HAVE_NVML, reason="no NVIDIA driver/GPU visible to NVML")
def test_nvml_reads_a_real_gpu():
    src = NvmlSource(0)
    try:
        v = src.read()
        assert 5.0 < v["temperature"] < 110.0
        for k in ("power", "sm_clock", "utilization", "throttle"):
            assert k in v  # a value, or None when this GPU does not support it (reported once)
            if k not in src.unsupported:
                assert v[k] is not None and math.isfinite(v[k])
        if v["power"] is not None:
            assert 1.0 < v["power"] < 2000.0  # watts, not milliwatts
        assert v["throttle"] in (0.0, 1.0, None)
        sampler = ThermalSampler(src, rate=20.0)
        sampler.start(ParamStore(), {})
        time.sleep(0.3)
        sampler.stop()
        assert sampler.samples >= 4 and sampler.errors == 0
    finally:
        src.close()


@pytest.mark.skipif(HAVE_NVML, reason="NVML works here: the refusal path is not reachable")
def test_nvml_unavailable_is_one_clear_line_and_auto_falls_back():
    with pytest.raises(SetupError) as e:
        NvmlSource(0)
    msg = str(e.value)
    assert "\n" not in msg and "NVML" in msg and "--thermal sysfs, osc or synthetic" in msg
    src = create_source("auto")
    try:
        assert src.name in ("sysfs", "osc")  # what this machine really has
        if not list_zones():
            assert isinstance(src, OscTemperatureSource)
    finally:
        src.close()


def test_sysfs_on_this_machine():
    zones = list_zones()
    if zones:
        v = SysfsSource().read()["temperature"]
        assert -40.0 < v < 150.0
    else:  # containers usually hide /sys/class/thermal: the error says so, on one line
        with pytest.raises(SetupError, match="no thermal zones under /sys/class/thermal"):
            SysfsSource()


def make_zone(root, n, ztype, millideg):
    d = root / f"thermal_zone{n}"
    d.mkdir(parents=True)
    (d / "type").write_text(ztype + "\n")
    (d / "temp").write_text(f"{millideg}\n")
    return d


def test_sysfs_zone_selection_and_units(tmp_path):
    root = tmp_path / "thermal"
    make_zone(root, 0, "acpitz", 45000)
    make_zone(root, 2, "x86_pkg_temp", 61500)
    (root / "cooling_device0").mkdir()
    make_zone(root, 10, "iwlwifi_1", 38000)
    assert [os.path.basename(d) for d, _ in list_zones(str(root))] == ["thermal_zone0", "thermal_zone2", "thermal_zone10"]
    assert SysfsSource("", root=str(root)).read() == {"temperature": 61.5}  # the CPU package zone is preferred
    assert SysfsSource("0", root=str(root)).read() == {"temperature": 45.0}
    assert SysfsSource("iwlwifi_1", root=str(root)).read() == {"temperature": 38.0}
    hwmon = tmp_path / "temp1_input"
    hwmon.write_text("72125\n")
    src = SysfsSource(str(hwmon))
    assert src.read() == {"temperature": 72.125}
    hwmon.write_text("73000\n")  # re-read every sample
    assert src.read() == {"temperature": 73.0}
    with pytest.raises(SetupError, match=r"no thermal_zone5; present: thermal_zone0 \(acpitz\)"):
        SysfsSource("5", root=str(root))
    with pytest.raises(SetupError, match="no zone of that type"):
        SysfsSource("gpu", root=str(root))
    with pytest.raises(SetupError, match="no such file"):
        SysfsSource(str(tmp_path / "nope"))
    # auto picks sysfs when NVML is absent and zones exist
    if not HAVE_NVML:
        assert create_source("auto", sysfs_root=str(root)).describe() == "sysfs:thermal_zone2 (x86_pkg_temp)"


def test_synthetic_curves_follow_their_formulas():
    s = SyntheticSource("sine,lo=40,hi=80,period=10")
    for t in (0.0, 1.0, 2.5, 7.5, 13.3):
        assert s.value_at(t) == pytest.approx(60.0 + 20.0 * math.sin(2 * math.pi * t / 10))
    r = SyntheticSource("ramp,lo=30,hi=90,period=60")
    assert [r.value_at(t) for t in (0, 15, 30, 59.999, 60, 75)] == pytest.approx([30, 45, 60, 90, 30, 45], abs=1e-2)
    assert SyntheticSource("const,value=66.5").value_at(123.0) == 66.5
    assert SyntheticSource("").describe() == "synthetic:sine,lo=40,hi=85,period=60"
    for spec, msg in [("synthetic:square", "unknown shape"), ("synthetic:sine,lo=x", "not a number"),
                      ("synthetic:sine,depth=3", "bad option"), ("synthetic:ramp,period=0", "period must be > 0"),
                      ("nvml:gpu0", "whole number"), ("osc:7000", "takes no options"), ("heat", "unknown source")]:
        with pytest.raises(UsageError, match=msg):
            create_source(spec)


class FlakySource(Source):
    """A real Source subclass whose sensor fails every third read (a GPU that drops off the bus briefly)."""

    name = "flaky"

    def __init__(self):
        self.n = 0

    def read(self):
        self.n += 1
        if self.n % 3 == 0:
            raise OSError("sensor went away")
        return {"temperature": 40.0 + self.n, "power": float("nan")}


def test_sampler_thread_keeps_the_last_sample_on_errors_and_latches_per_frame():
    src = FlakySource()
    sampler = ThermalSampler(src, rate=50.0)
    store = ParamStore()
    sampler.start(store, {})
    try:
        assert sampler.current is not None and sampler.current.temperature == 41.0  # read once at start
        time.sleep(0.5)
        assert 15 <= src.n <= 30, src.n  # ~50 Hz
        assert sampler.errors == src.n // 3
        latched = sampler.current
        sampler.before_frame(store, FrameTime(0.0, 0))
        assert sampler.current is sampler.latest and sampler.current is not latched
        assert sampler.current.power is None  # NaN never reaches a mapping
        assert sampler.stats()["errors"] == sampler.errors
    finally:
        sampler.stop()
    n = src.n
    time.sleep(0.1)
    assert src.n == n  # the thread is gone


def test_osc_fed_temperature_over_udp():
    cs = build_controllers({"osc_port": 0, "thermal": "osc"})
    assert [type(c).__name__ for c in cs] == ["ThermalSampler", "PromptList"]  # --osc-port 0: no server
    for c in cs:
        c.stop()
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cs = build_controllers({"osc_port": port, "thermal": "osc"})
    sampler, server, _prompts = cs
    store = ParamStore()
    for c in cs:
        c.start(store, {})
    try:
        assert sampler.latest.temperature is None  # nothing received yet
        c = SimpleUDPClient("127.0.0.1", port)
        c.send_message("/engine/input/temperature", 71.5)
        c.send_message("/engine/input/temperature", float("nan"))
        c.send_message("/engine/input/temperature", 1000.0)
        deadline = time.monotonic() + 3
        while (sampler.latest.temperature != 71.5 or server.counts["packets"] < 3) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sampler.latest.temperature == 71.5 and sampler.latest.source == "osc"
        assert server.rejected["non_finite"] == 1 and server.rejected["out_of_range"] == 1
    finally:
        for c in reversed(cs):
            c.stop()
