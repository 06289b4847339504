"""The numbers of a benchmark, from the recorded frames: pure functions on arrays (the tests check them by hand).

Conventions (also in summary.json's "definitions"):
  fps_median = 1000 / median frame ms; fps_p1 = 1000 / 99th-percentile frame ms (the frame rate that 99 % of frames
  beat; percentiles of frame times are linear-interpolated, numpy's default).
  A temperature bin [lo, lo + width) holds the frames rendered while that temperature was the latest sample; bins with
  fewer than `min_frames` frames are left out of the cold/hot comparison (a few frames are noise, not a figure).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def _finite(a: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    return x[np.isfinite(x)]


def frame_summary(frame_ms: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """fps median/p1 and frame-time p50/p99/mean of the finite, positive frame times."""
    ms = _finite(frame_ms)
    ms = ms[ms > 0]
    if ms.size == 0:
        return {"frames": 0, "fps_median": None, "fps_p1": None, "frame_ms": {"p50": None, "p99": None, "mean": None}}
    p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
    return {"frames": int(ms.size), "fps_median": 1000.0 / p50, "fps_p1": 1000.0 / p99,
            "frame_ms": {"p50": p50, "p99": p99, "mean": float(ms.mean())}}


def stage_medians(stages: dict[str, Sequence[float]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, values in stages.items():
        v = _finite(values)
        out[name] = float(np.median(v)) if v.size else None
    return out


def temperature_bins(temperature: Sequence[float], frame_ms: Sequence[float], width: float = 2.0) -> list[dict[str, Any]]:
    """fps per temperature bin: [{lo, hi, frames, fps_median, frame_ms_median}], coldest first. Frames without a
    temperature (NaN) are left out; bins are aligned to multiples of `width` (so runs can be compared bin by bin)."""
    if not width > 0:
        raise ValueError("bin width must be > 0")
    t = np.asarray(temperature, dtype=np.float64)
    ms = np.asarray(frame_ms, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(ms) & (ms > 0)
    t, ms = t[ok], ms[ok]
    if t.size == 0:
        return []
    idx = np.floor(t / width + 1e-9).astype(np.int64)
    bins = []
    for i in np.unique(idx):
        sel = ms[idx == i]
        med = float(np.median(sel))
        bins.append({"lo": float(i * width), "hi": float((i + 1) * width), "frames": int(sel.size),
                     "fps_median": 1000.0 / med, "frame_ms_median": med})
    return bins


def cold_hot(bins: list[dict[str, Any]], min_frames: int = 10) -> dict[str, Any]:
    """fps lost between the coldest and the hottest temperature bin that each have at least `min_frames` frames."""
    usable = [b for b in bins if b["frames"] >= min_frames]
    if not usable:
        why = "no temperature readings" if not bins else f"no temperature bin has {min_frames} frames"
        return {"fps_cold": None, "fps_hot": None, "fps_lost": None, "fps_lost_pct": None, "reason": why}
    cold, hot = usable[0], usable[-1]
    lost = cold["fps_median"] - hot["fps_median"]
    out = {"cold_bin_c": [cold["lo"], cold["hi"]], "hot_bin_c": [hot["lo"], hot["hi"]],
           "fps_cold": cold["fps_median"], "fps_hot": hot["fps_median"], "fps_lost": lost,
           "fps_lost_pct": 100.0 * lost / cold["fps_median"]}
    if cold is hot:
        out["reason"] = "the temperature stayed inside one bin: nothing to compare"
    return out


def target_hold(bins: list[dict[str, Any]], target: float, min_frames: int = 10, tolerance_pct: float = 5.0) -> dict[str, Any]:
    """How well the governor held `target` fps from cold to hot: each temperature bin's median fps against the
    target, the worst (lowest) one, and whether no bin with `min_frames` frames fell more than `tolerance_pct`
    below it. Above the target is headroom, not a miss: the bench runs unpaced, and at the dearest level the
    governor has nothing left to spend it on."""
    usable = [b for b in bins if b["frames"] >= min_frames and b.get("fps_median")]
    rows = [{"bin_c": [b["lo"], b["hi"]], "fps_median": b["fps_median"],
             "deviation_pct": 100.0 * (b["fps_median"] - target) / target} for b in usable]
    if not rows:
        return {"target_fps": target, "bins": [], "worst_deviation_pct": None, "held": None,
                "reason": "no temperature bin has enough frames"}
    worst = min(r["deviation_pct"] for r in rows)
    return {"target_fps": target, "bins": rows, "worst_deviation_pct": worst, "tolerance_pct": tolerance_pct,
            "held": worst >= -tolerance_pct}


def slope_per_minute(t: Sequence[float], temperature: Sequence[float]) -> float | None:
    """Least-squares slope of temperature against time, in degrees per minute (None with < 2 finite points or no
    spread in time)."""
    ts = np.asarray(t, dtype=np.float64)
    ys = np.asarray(temperature, dtype=np.float64)
    ok = np.isfinite(ts) & np.isfinite(ys)
    ts, ys = ts[ok], ys[ok]
    if ts.size < 2 or float(np.ptp(ts)) <= 0:
        return None
    tc = ts - ts.mean()
    return float((tc * (ys - ys.mean())).sum() / (tc * tc).sum()) * 60.0


class StabilityDetector:
    """Heat-soak end: the temperature has stopped rising when the least-squares slope over the last `window` seconds
    is below `slope` degrees per minute. Falling counts as not rising. Needs a full window of samples first."""

    def __init__(self, window: float = 60.0, slope: float = 0.5, min_samples: int = 10):
        if not window > 0 or not math.isfinite(slope):
            raise ValueError("stability window must be > 0 and the slope finite")
        self.window, self.threshold, self.min_samples = float(window), float(slope), int(min_samples)
        self._t: list[float] = []
        self._y: list[float] = []
        self.last_slope: float | None = None

    def add(self, t: float, temperature: float | None) -> None:
        if temperature is None or not math.isfinite(temperature):
            return
        if self._t and t <= self._t[-1]:
            return  # the same sample latched again
        self._t.append(float(t))
        self._y.append(float(temperature))
        cut = 0
        while cut < len(self._t) and self._t[cut] < t - self.window:
            cut += 1
        if cut:
            # keep one sample at or before the window's start, so "covers the window" can be told
            del self._t[: cut - 1], self._y[: cut - 1]

    def stable(self) -> bool:
        if len(self._t) < self.min_samples or self._t[-1] - self._t[0] < self.window:
            return False
        self.last_slope = slope_per_minute(self._t, self._y)
        return self.last_slope is not None and self.last_slope < self.threshold


def parse_range(text: str) -> list[float]:
    """'LO:HI:STEP' -> [LO, LO+STEP, ..., HI] (HI included when it lands on the grid; STEP may be negative for a
    falling sweep). Raises ValueError with what is wrong."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"expected LO:HI:STEP (e.g. 30:90:10), got {text!r}")
    try:
        lo, hi, step = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected three numbers LO:HI:STEP, got {text!r}") from None
    if not all(math.isfinite(x) for x in (lo, hi, step)) or step == 0 or (hi - lo) * step < 0:
        raise ValueError(f"{text!r}: STEP must be non-zero and go from LO towards HI")
    n = int(math.floor((hi - lo) / step + 1e-9)) + 1
    if n > 1000:
        raise ValueError(f"{text!r} has {n} steps; at most 1000")
    return [round(lo + i * step, 6) for i in range(n)]


def drift(t: Sequence[float], frame_ms: Sequence[float], fraction: float = 0.1) -> dict[str, Any]:
    """fps in the first and the last `fraction` of the measured time (a time-based view of the same question as
    cold_hot, for runs without a temperature)."""
    ts = np.asarray(t, dtype=np.float64)
    ms = np.asarray(frame_ms, dtype=np.float64)
    ok = np.isfinite(ts) & np.isfinite(ms) & (ms > 0)
    ts, ms = ts[ok], ms[ok]
    if ts.size < 2:
        return {"fps_first": None, "fps_last": None}
    span = ts[-1] - ts[0]
    first = ms[ts <= ts[0] + fraction * span]
    last = ms[ts >= ts[-1] - fraction * span]
    return {"fraction": fraction, "fps_first": 1000.0 / float(np.median(first)), "fps_last": 1000.0 / float(np.median(last))}
