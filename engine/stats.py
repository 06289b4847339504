"""Frame statistics: per-stage milliseconds, fps, the live status line and the --stats-json summary.

Stage times are host wall time around each stage. On CUDA the generate and upload stages additionally get
device time from CUDA events, resolved a few frames later with `Event.query()` (never a sync in the loop).
Recent frames are kept in bounded rings so a show that runs for days uses constant memory; the summary's
percentiles describe the last `window` frames, the totals describe the whole run.
"""

from __future__ import annotations

import collections
import json
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

STAGES = ("generate", "upload", "shaders", "sinks")


class _CudaEvents:
    """Device-time measurement of stages on CUDA, resolved without blocking."""

    def __init__(self, torch_mod):
        self.torch = torch_mod
        self.pending: collections.deque = collections.deque()
        self.current: dict[str, tuple[Any, Any]] = {}
        self.results: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=10_000))
        self.pool: list[Any] = []

    def _event(self):
        # Events are recycled: creating them per frame would allocate in the hot loop.
        return self.pool.pop() if self.pool else self.torch.cuda.Event(enable_timing=True)

    def start(self, stage: str) -> None:
        ev = self._event()
        ev.record()
        self.current[stage] = (ev, None)

    def stop(self, stage: str) -> None:
        start, _ = self.current[stage]
        ev = self._event()
        ev.record()
        self.current[stage] = (start, ev)

    def end_frame(self) -> None:
        if self.current:
            self.pending.append(self.current)
            self.current = {}
        while self.pending:
            frame = self.pending[0]
            if not all(end.query() for _, end in frame.values()):
                break  # oldest frame not finished on the device yet: try again next frame
            self.pending.popleft()
            for stage, (start, end) in frame.items():
                self.results[stage].append(start.elapsed_time(end))
                self.pool.extend((start, end))

    def medians(self) -> dict[str, float]:
        return {k: float(np.median(v)) for k, v in self.results.items() if v}


class Stats:
    def __init__(self, *, device_type: str = "cpu", window: int = 10_000, status_interval: float = 0.5):
        self.window = window
        self.stage_ms: dict[str, collections.deque] = {s: collections.deque(maxlen=window) for s in STAGES}
        self.frame_ms: collections.deque = collections.deque(maxlen=window)
        self.frames = 0
        self.started = time.perf_counter()
        self._frame_start = 0.0
        self._current: dict[str, float] = {}
        self._last_status = 0.0
        self._status_off = False
        self.status_interval = status_interval
        self.counters: dict[str, float] = collections.defaultdict(float)
        self.info: dict[str, Any] = {}
        self.cuda = None
        if device_type == "cuda":
            import torch

            self.cuda = _CudaEvents(torch)
        self._recent_frames: collections.deque = collections.deque(maxlen=120)  # for the live fps figure

    # -- per frame ------------------------------------------------------------------------------------------
    def begin_frame(self) -> None:
        self._frame_start = time.perf_counter()
        self._current = {}

    @contextmanager
    def stage(self, name: str, *, device: bool = False) -> Iterator[None]:
        t0 = time.perf_counter()
        if device and self.cuda is not None:
            self.cuda.start(name)
        try:
            yield
        finally:
            if device and self.cuda is not None:
                self.cuda.stop(name)
            self._current[name] = self._current.get(name, 0.0) + (time.perf_counter() - t0) * 1e3

    def end_frame(self) -> dict[str, float]:
        now = time.perf_counter()
        ms = (now - self._frame_start) * 1e3
        self.frame_ms.append(ms)
        for s in STAGES:
            self.stage_ms[s].append(self._current.get(s, 0.0))
        self.frames += 1
        self._recent_frames.append(now)
        if self.cuda is not None:
            self.cuda.end_frame()
        out = {"frame_ms": ms, "fps": self.fps()}
        out.update({f"{s}_ms": self._current.get(s, 0.0) for s in STAGES})
        return out

    def fps(self) -> float:
        r = self._recent_frames
        if len(r) < 2:
            return 0.0
        return (len(r) - 1) / max(r[-1] - r[0], 1e-9)

    # -- reporting ------------------------------------------------------------------------------------------
    def status_line(self) -> str:
        def med(d: collections.deque, n: int = 60) -> float:
            if not d:
                return 0.0
            tail = list(d)[-n:]
            return float(np.median(tail))

        parts = [f"{self.fps():6.1f} fps", f"frame {med(self.frame_ms):6.1f} ms"]
        parts += [f"{s} {med(self.stage_ms[s]):5.1f}" for s in STAGES]
        parts.append(f"#{self.frames}")
        extra = self.info.get("status_extra")
        if extra:
            parts.append(str(extra))
        return " | ".join(parts)

    def maybe_print_status(self, stream=None) -> None:
        if self._status_off:
            return
        stream = stream or sys.stderr
        now = time.perf_counter()
        try:
            interactive = stream.isatty()
            interval = self.status_interval if interactive else max(self.status_interval, 2.0)
            if now - self._last_status < interval:
                return
            self._last_status = now
            line = self.status_line()
            stream.write("\r" + line + "\x1b[K" if interactive else line + "\n")
            stream.flush()
        except (OSError, ValueError):
            # The terminal went away (a closed ssh session or window: EIO; a closed pipe): the show goes on without
            # its status line rather than dying on a write nobody can read.
            self._status_off = True

    def summary(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.started
        fm = np.asarray(self.frame_ms, dtype=np.float64)

        def pct(a: np.ndarray, q: float) -> float | None:
            return float(np.percentile(a, q)) if a.size else None

        out: dict[str, Any] = {
            "frames": self.frames,
            "seconds": elapsed,
            "fps_mean": self.frames / elapsed if elapsed > 0 else None,
            "fps_median": (1000.0 / float(np.median(fm))) if fm.size else None,
            "frame_ms": {"median": pct(fm, 50), "p99": pct(fm, 99), "mean": float(fm.mean()) if fm.size else None},
            "stage_ms": {s: {"median": pct(np.asarray(self.stage_ms[s]), 50), "p99": pct(np.asarray(self.stage_ms[s]), 99)} for s in STAGES},
            "counters": dict(self.counters),
        }
        if self.cuda is not None:
            out["stage_gpu_ms_median"] = self.cuda.medians()
        out.update(self.info)
        out.pop("status_extra", None)
        return out

    def write_json(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        data = self.summary()
        if extra:
            data.update(extra)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(jsonable(data), indent=2, sort_keys=True) + "\n")


def jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)
