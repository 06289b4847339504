"""Temperature (and other GPU telemetry) as an input.

Sources, picked with `--thermal auto|nvml[:INDEX]|sysfs[:ZONE]|osc|synthetic[:SPEC]`:
  nvml       NVIDIA's management library (nvidia-ml-py): temperature, power, SM clock, utilisation and thermal
             throttling of GPU INDEX (default 0). Every call is guarded; a field the GPU does not support is
             reported once and then no longer asked for.
  sysfs      Linux thermal zones (/sys/class/thermal/thermal_zone*/temp, millidegrees C), so a CPU-only machine
             has a real temperature too. ZONE: a zone number, a zone type (e.g. x86_pkg_temp) or the path of
             any millidegree file (e.g. /sys/class/hwmon/hwmon3/temp1_input). Default: the first CPU-like zone.
  osc        the value last received on /engine/input/temperature (an external sensor, another machine).
  synthetic  a generated curve for rehearsals and tests: synthetic:sine,lo=40,hi=85,period=60 (default),
             synthetic:ramp,lo=30,hi=90,period=120 (sawtooth), synthetic:const,value=70,
             synthetic:soak,lo=35,hi=80,tau=60 (a GPU heat-soaking: rises from lo towards hi and levels off).
  auto       nvml, else sysfs, else osc (each refusal is logged once, with its reason).

A `ThermalSampler` reads its source on its own thread at 10 Hz; the render loop never calls NVML or touches a
file. Each frame `before_frame` latches the latest sample into `current`, so every consumer of that frame
(mappings, the recorder, telemetry) sees the same sample.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from engine.clock import FrameTime
from engine.control import Controller
from engine.control.ratelimit import LogLimiter
from engine.errors import SetupError, UsageError
from engine.params import ParamStore

log = logging.getLogger("engine.control.thermal")

#: The fields a sample can carry; each one is also a mapping source name.
FIELDS = ("temperature", "power", "sm_clock", "utilization", "throttle")
FIELD_UNITS = {"temperature": "degC", "power": "W", "sm_clock": "MHz", "utilization": "%", "throttle": "0|1"}

# nvmlClocksEventReasonSwThermalSlowdown (0x20) | nvmlClocksEventReasonHwThermalSlowdown (0x40).
THERMAL_THROTTLE_BITS = 0x20 | 0x40


@dataclass(frozen=True)
class Sample:
    """One reading. Fields a source cannot provide are None (a mapping from a None field holds its value)."""

    t: float  # time.monotonic() when read
    source: str
    temperature: float | None = None
    power: float | None = None
    sm_clock: float | None = None
    utilization: float | None = None
    throttle: float | None = None

    def get(self, name: str) -> float | None:
        return getattr(self, name) if name in FIELDS else None

    def values(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in FIELDS if getattr(self, k) is not None}


class Source:
    name = "source"

    def read(self) -> dict[str, float | None]:
        """Return {field: value}. May raise: the sampler logs (rate-limited), counts and keeps the last sample."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------------------------
# NVML
# ----------------------------------------------------------------------------------------------------------------


class NvmlSource(Source):
    name = "nvml"

    def __init__(self, index: int = 0):
        try:
            import pynvml
        except ImportError:
            raise SetupError("--thermal nvml needs nvidia-ml-py (pip install nvidia-ml-py)") from None
        self.nv = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise SetupError(f"--thermal nvml: NVML is not available ({e}); no NVIDIA driver here? use --thermal sysfs, osc or synthetic") from None
        except OSError as e:  # a broken libnvidia-ml install surfaces as OSError from ctypes
            raise SetupError(f"--thermal nvml: cannot load NVML ({e}); use --thermal sysfs, osc or synthetic") from None
        try:
            count = pynvml.nvmlDeviceGetCount()
            if index >= count:
                raise SetupError(f"--thermal nvml:{index}: only {count} GPU(s) visible to NVML")
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            try:
                gpu = pynvml.nvmlDeviceGetName(self.handle)
                self.gpu_name = gpu.decode() if isinstance(gpu, bytes) else str(gpu)
            except pynvml.NVMLError:
                self.gpu_name = f"GPU {index}"
        except BaseException:
            pynvml.nvmlShutdown()
            raise
        self.index = index
        self.unsupported: set[str] = set()
        self._temp_v = True  # nvmlDeviceGetTemperatureV usable (newer drivers); falls back to the legacy call
        self._reasons_fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
        self._closed = False

    def describe(self) -> str:
        return f"nvml:{self.index} ({self.gpu_name})"

    def _permanent(self, e: Exception) -> bool:
        """Errors that will not go away by asking again: the field is unsupported on this GPU/driver."""
        nv = self.nv
        permanent = tuple(
            c for c in (getattr(nv, "NVMLError_NotSupported", None), getattr(nv, "NVMLError_FunctionNotFound", None),
                        getattr(nv, "NVMLError_ArgumentVersionMismatch", None), getattr(nv, "NVMLError_NoPermission", None))
            if c is not None
        )
        return isinstance(e, permanent) or isinstance(e, AttributeError)

    def _guard(self, name: str, fn: Callable[[], float]) -> float | None:
        if name in self.unsupported:
            return None
        try:
            return fn()
        except (self.nv.NVMLError, AttributeError) as e:
            if self._permanent(e):
                self.unsupported.add(name)
                log.warning("nvml: %s is not available on %s (%s); it is reported as missing from now on", name, self.gpu_name, e)
                return None
            raise  # transient (e.g. GPU busy/lost): the sampler logs it rate-limited and keeps the last sample

    def _temperature(self) -> float:
        nv = self.nv
        if self._temp_v:
            try:
                return float(nv.nvmlDeviceGetTemperatureV(self.handle, nv.NVML_TEMPERATURE_GPU))
            except (nv.NVMLError, AttributeError) as e:
                if not self._permanent(e):
                    raise
                self._temp_v = False  # older driver or binding: use the legacy call from now on
                log.info("nvml: nvmlDeviceGetTemperatureV unavailable (%s); using nvmlDeviceGetTemperature", e)
        return float(nv.nvmlDeviceGetTemperature(self.handle, nv.NVML_TEMPERATURE_GPU))

    def read(self) -> dict[str, float | None]:
        nv, h = self.nv, self.handle
        out: dict[str, float | None] = {}
        out["temperature"] = self._guard("temperature", self._temperature)
        out["power"] = self._guard("power", lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0)  # mW -> W
        out["sm_clock"] = self._guard("sm_clock", lambda: float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)))
        out["utilization"] = self._guard("utilization", lambda: float(nv.nvmlDeviceGetUtilizationRates(h).gpu))
        out["throttle"] = self._guard("throttle", lambda: 1.0 if int(self._reasons_fn(h)) & THERMAL_THROTTLE_BITS else 0.0)
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.nv.nvmlShutdown()
            except self.nv.NVMLError:
                pass


# ----------------------------------------------------------------------------------------------------------------
# Linux sysfs thermal zones
# ----------------------------------------------------------------------------------------------------------------

THERMAL_ROOT = "/sys/class/thermal"
# Zone types that measure the CPU package / SoC, best first (x86 Intel, AMD, ARM boards, generic ACPI).
_CPU_ZONE_TYPES = ("x86_pkg_temp", "k10temp", "cpu-thermal", "cpu_thermal", "soc_thermal", "cpu", "soc", "acpitz")


def list_zones(root: str = THERMAL_ROOT) -> list[tuple[str, str]]:
    """[(zone directory, type)] for every zone with a readable temp file, in zone-number order."""
    zones = []
    for d in glob.glob(os.path.join(root, "thermal_zone*")):
        suffix = os.path.basename(d)[len("thermal_zone"):]
        if not suffix.isdigit() or not os.path.isfile(os.path.join(d, "temp")):
            continue
        try:
            with open(os.path.join(d, "type")) as f:
                ztype = f.read().strip()
        except OSError:
            ztype = ""
        zones.append((int(suffix), d, ztype))
    return [(d, t) for _, d, t in sorted(zones)]


class SysfsSource(Source):
    name = "sysfs"

    def __init__(self, zone: str = "", root: str = THERMAL_ROOT):
        self.path, self.label = self._resolve(zone, root)
        try:
            self._read_file()
        except (OSError, ValueError) as e:
            raise SetupError(f"--thermal sysfs: cannot read {self.path}: {e}") from None

    @staticmethod
    def _resolve(zone: str, root: str) -> tuple[str, str]:
        if zone.startswith("/") or zone.startswith("."):
            p = os.path.join(zone, "temp") if os.path.isdir(zone) else zone
            if not os.path.isfile(p):
                raise SetupError(f"--thermal sysfs:{zone}: no such file (give a thermal zone directory or a millidegree file)")
            return p, zone
        zones = list_zones(root)
        if not zones:
            raise SetupError(f"--thermal sysfs: no thermal zones under {root} (containers and VMs often hide them); "
                             "use --thermal nvml, osc or synthetic")
        if zone.isdigit():
            d = os.path.join(root, f"thermal_zone{zone}")
            for zd, zt in zones:
                if zd == d:
                    return os.path.join(zd, "temp"), f"thermal_zone{zone} ({zt})"
            raise SetupError(f"--thermal sysfs:{zone}: no thermal_zone{zone}; present: " + ", ".join(f"{os.path.basename(d)} ({t})" for d, t in zones))
        if zone:
            for zd, zt in zones:
                if zt == zone:
                    return os.path.join(zd, "temp"), f"{os.path.basename(zd)} ({zt})"
            raise SetupError(f"--thermal sysfs:{zone}: no zone of that type; present: " + ", ".join(f"{os.path.basename(d)} ({t})" for d, t in zones))
        for wanted in _CPU_ZONE_TYPES:
            for zd, zt in zones:
                if zt.lower() == wanted:
                    return os.path.join(zd, "temp"), f"{os.path.basename(zd)} ({zt})"
        zd, zt = zones[0]
        return os.path.join(zd, "temp"), f"{os.path.basename(zd)} ({zt})"

    def describe(self) -> str:
        return f"sysfs:{self.label}"

    def _read_file(self) -> float:
        with open(self.path) as f:
            text = f.read().strip()
        return int(text) / 1000.0  # the kernel reports millidegrees Celsius

    def read(self) -> dict[str, float | None]:
        return {"temperature": self._read_file()}


# ----------------------------------------------------------------------------------------------------------------
# OSC-fed and synthetic
# ----------------------------------------------------------------------------------------------------------------


class OscTemperatureSource(Source):
    """The value last sent to /engine/input/temperature. push() is called on the OSC thread."""

    name = "osc"
    LO, HI = -100.0, 300.0  # anything outside is a sender bug, not a temperature

    def __init__(self):
        self._value: float | None = None
        self.received = 0

    def push(self, value: float) -> None:
        self._value = float(value)  # one reference store: atomic, no lock needed
        self.received += 1

    def read(self) -> dict[str, float | None]:
        return {"temperature": self._value}


def _parse_kv(spec: str, allowed: dict[str, float], what: str) -> dict[str, float]:
    out = dict(allowed)
    for item in filter(None, (s.strip() for s in spec.split(","))):
        k, eq, v = item.partition("=")
        if not eq or k not in allowed:
            raise UsageError(f"--thermal {what}: bad option {item!r}; options: " + ", ".join(f"{k}=N" for k in allowed))
        try:
            x = float(v)
        except ValueError:
            raise UsageError(f"--thermal {what}: {k}={v!r} is not a number") from None
        if not math.isfinite(x):
            raise UsageError(f"--thermal {what}: {k} must be finite")
        out[k] = x
    return out


class SyntheticSource(Source):
    """A generated temperature curve. value_at(t) is a pure function of seconds since start (tests use it)."""

    name = "synthetic"
    SHAPES = {
        "sine": {"lo": 40.0, "hi": 85.0, "period": 60.0},
        "ramp": {"lo": 30.0, "hi": 90.0, "period": 120.0},
        "const": {"value": 70.0},
        # First-order thermal model of a GPU put under constant load: T = hi - (hi - lo) exp(-t / tau).
        "soak": {"lo": 35.0, "hi": 80.0, "tau": 60.0},
    }

    def __init__(self, spec: str = "", clock=time.monotonic):
        shape, _, rest = spec.partition(",")
        shape = shape.strip() or "sine"
        if shape not in self.SHAPES:
            raise UsageError(f"--thermal synthetic:{spec}: unknown shape {shape!r}; use sine, ramp, soak or const")
        self.shape = shape
        self.opts = _parse_kv(rest, self.SHAPES[shape], f"synthetic:{shape}")
        if "period" in self.opts and self.opts["period"] <= 0:
            raise UsageError(f"--thermal synthetic:{spec}: period must be > 0")
        if "tau" in self.opts and self.opts["tau"] <= 0:
            raise UsageError(f"--thermal synthetic:{spec}: tau must be > 0")
        self._clock = clock
        self._t0 = clock()

    def describe(self) -> str:
        return f"synthetic:{self.shape}," + ",".join(f"{k}={v:g}" for k, v in self.opts.items())

    def value_at(self, t: float) -> float:
        o = self.opts
        if self.shape == "const":
            return o["value"]
        if self.shape == "soak":
            return o["hi"] - (o["hi"] - o["lo"]) * math.exp(-max(t, 0.0) / o["tau"])
        phase = (t / o["period"]) % 1.0
        if self.shape == "sine":  # starts at the middle, rising
            return o["lo"] + (o["hi"] - o["lo"]) * 0.5 * (1.0 + math.sin(2.0 * math.pi * phase))
        return o["lo"] + (o["hi"] - o["lo"]) * phase  # ramp: sawtooth lo -> hi, then jump back

    def read(self) -> dict[str, float | None]:
        return {"temperature": self.value_at(self._clock() - self._t0)}


# ----------------------------------------------------------------------------------------------------------------
# Spec parsing and the sampler
# ----------------------------------------------------------------------------------------------------------------

THERMAL_KINDS = ("auto", "nvml", "sysfs", "osc", "synthetic")


def create_source(spec: str, *, sysfs_root: str = THERMAL_ROOT, quiet: bool = False) -> Source:
    """Build the source for a `--thermal` spec. Raises UsageError (bad spec) or SetupError (unavailable).
    quiet: `auto` chosen by the engine rather than asked for (the overlay's input): no sensor is an info line."""
    kind, _, arg = (spec or "auto").strip().partition(":")
    if kind not in THERMAL_KINDS:
        raise UsageError(f"--thermal {spec}: unknown source {kind!r}; use auto, nvml[:INDEX], sysfs[:ZONE], osc or synthetic[:SPEC]")
    if kind == "nvml":
        if arg and not arg.isdigit():
            raise UsageError(f"--thermal {spec}: the GPU index must be a whole number")
        return NvmlSource(int(arg or 0))
    if kind == "sysfs":
        return SysfsSource(arg, root=sysfs_root)
    if kind == "osc":
        if arg:
            raise UsageError(f"--thermal {spec}: osc takes no options (it listens on /engine/input/temperature)")
        return OscTemperatureSource()
    if kind == "synthetic":
        return SyntheticSource(arg)
    if arg:
        raise UsageError(f"--thermal {spec}: auto takes no options")
    reasons = []
    for make in (lambda: NvmlSource(0), lambda: SysfsSource("", root=sysfs_root)):
        try:
            return make()
        except SetupError as e:
            reasons.append(str(e).replace("--thermal ", ""))
    log.log(logging.INFO if quiet else logging.WARNING,
            "no temperature sensor found (%s); temperature comes from OSC /engine/input/temperature "
            "(or pick --thermal synthetic for a rehearsal)", "; ".join(reasons))
    return OscTemperatureSource()


class ThermalSampler(Controller):
    """Reads a Source on its own thread at `rate` Hz. `latest` is the newest sample (any thread may read it);
    `current` is the sample latched for the frame being rendered."""

    def __init__(self, source: Source, rate: float = 10.0):
        if not rate > 0:
            raise UsageError("thermal sampling rate must be > 0")
        self.source = source
        self.period = 1.0 / rate
        self.latest: Sample | None = None
        self.current: Sample | None = None
        self.samples = 0
        self.errors = 0
        self._limiter = LogLimiter(log, interval=10.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_once(self) -> Sample | None:
        try:
            values = self.source.read()
        except Exception as e:  # a sensor hiccup must never end the show: keep the last sample
            self.errors += 1
            self._limiter("read", "thermal: reading %s failed: %s (keeping the last sample)", self.source.describe(), e)
            return self.latest
        clean = {}
        for k, v in values.items():
            if k in FIELDS and v is not None:
                v = float(v)
                if math.isfinite(v):
                    clean[k] = v
        s = Sample(t=time.monotonic(), source=self.source.name, **clean)
        self.latest = s
        self.samples += 1
        return s

    def start(self, store: ParamStore, info: dict[str, Any]) -> None:
        if self._thread is not None:
            return
        self.sample_once()  # the first frame already has a reading
        self.current = self.latest
        log.info("thermal: sampling %s at %.0f Hz", self.source.describe(), 1.0 / self.period)
        self._thread = threading.Thread(target=self._run, name="engine-thermal", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_due = time.monotonic()
        while not self._stop.is_set():
            self.sample_once()
            next_due += self.period
            delay = next_due - time.monotonic()
            if delay < 0:  # a slow read (NVML can take ms on a busy GPU): don't try to catch up
                next_due = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def before_frame(self, store: ParamStore, when: FrameTime) -> None:
        self.current = self.latest

    def stats(self) -> dict[str, Any]:
        s = self.latest
        out: dict[str, Any] = {"source": self.source.describe(), "samples": self.samples, "errors": self.errors}
        if s is not None:
            out.update(s.values())
        unsupported = getattr(self.source, "unsupported", None)
        if unsupported:
            out["unsupported"] = sorted(unsupported)
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self.source.close()
