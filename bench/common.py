"""Shared by the bench/ scripts: the machine description recorded with every result (engine.machine: device,
clocks, temperature), and robust summaries (median, p99)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from engine import threads as cpu_threads
from engine.machine import cpu_model, gpu_telemetry, machine_info

# The engine's CPU thread choice (engine/threads.py) holds for the bench scripts as for `engine run`: OpenMP's wait
# settings are made before torch loads (each script imports this module first), the count when a script calls
# cpu_threads.apply(); machine_info() records both.
cpu_threads.prepare_process()

__all__ = ["cpu_model", "cpu_threads", "gpu_telemetry", "machine_info", "summarize_ms", "write_result"]


def summarize_ms(samples: list[float] | np.ndarray) -> dict[str, float | None]:
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        return {"median": None, "p99": None, "mean": None, "n": 0}
    return {"median": float(np.median(a)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "n": int(a.size)}


def write_result(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"wrote {path}")
