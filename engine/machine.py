"""A description of the machine, recorded with every benchmark result: host, CPU, load, torch, and for a CUDA device
its name, driver, clocks, temperature and power through NVML. Used by `engine bench` and the bench/ scripts."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from engine import threads as cpu_threads


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gpu_telemetry(index: int = 0) -> dict[str, Any]:
    """Driver, clocks, temperature and power of GPU `index` via NVML; {} with a reason when unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as e:
        return {"nvml": f"unavailable: {e}"}
    out: dict[str, Any] = {}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        probes = {
            "name": lambda: pynvml.nvmlDeviceGetName(h),
            "driver": pynvml.nvmlSystemGetDriverVersion,
            "temperature_c": lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            "power_w": lambda: pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "power_limit_w": lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            "sm_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "sm_clock_max_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
        }
        for key, fn in probes.items():
            try:
                v = fn()
                out[key] = v.decode() if isinstance(v, bytes) else v
            except Exception as e:  # consumer GPUs lack some fields
                out[key] = f"unsupported: {e}"
    finally:
        pynvml.nvmlShutdown()
    return out


def machine_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_threads": cpu_threads.current(),
        # Other work on the machine skews CPU timings: record how busy it was.
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                            cwd=Path(__file__).resolve().parent, timeout=5).stdout.strip() or None
    except Exception:
        info["git_commit"] = None
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
        info["gpu"] = gpu_telemetry(0)
    else:
        info["cuda_device"] = None
    return info
