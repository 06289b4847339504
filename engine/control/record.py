"""Show recording and replay: `--record FILE` and `--replay FILE`.

The file is JSON Lines, one object per line, every event stamped with the frame index `f` it took effect at:

    {"format": "engine-record/1", "params": {...every parameter...}, "info": {...}}   header: state at start
    {"f": 0, "begin": true}                                      first frame rendered
    {"f": 12, "ts": 0.41, "osc": ["/engine/latent/psi", 0.7]}    an accepted OSC message (applied at frame 12)
    {"f": 12, "ts": 0.38, "temp": {"temperature": 61.0, ...}, "src": "nvml"}
                                                                  the temperature sample used from frame 12 on
    {"f": 12, "t": 0.4, "set": {"latent.psi": 0.7, ...}}          what changed in the frame's snapshot, whoever
                                                                  wrote it (OSC, mapping, LFO, preset)
    {"f": 13, "t": 0.4333}                                        a frame's show time, when nothing changed
    {"end": true, "frames": 300}

`ts` is seconds since the recording started (wall clock) when the message arrived or the sample was taken; `t` is
the frame's show time. Temperature is recorded as the samples the show used (the latest one at each frame; the
sampler's 10 Hz samples in between never reached the show).

Replay restores the header's parameters, then applies each frame's "set" at the same frame (counted from the
replay's first frame), and gives every frame its recorded show time t, so every frame's parameter snapshot and
time are identical to the recorded ones, on the wall clock too; the generator does the rest with the same seed
(latent.seed is a parameter like any other). noise_mode=random draws new noise and is the one exception. The recorded temperature samples
are the replay's temperature input (telemetry and any recorder see them). Because the recorded "set" already
holds what mappings and LFOs produced, `--replay` takes no `--map`. Live OSC still works during a replay: a value
sent by hand holds until the recording next writes that parameter.

The recorder is the last controller to run before the loop takes its snapshot, and all writers in the engine
write in before_frame on the render thread, so the diff it records is exactly the frame's snapshot. Lines are
written by a writer thread; the render thread only queues them.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from pathlib import Path
from typing import Any

from engine.clock import FrameTime
from engine.control import Controller
from engine.control.thermal import FIELDS, Sample
from engine.errors import UsageError
from engine.params import SPECS, ParamError, Params, ParamStore, spec_for, with_values
from engine.paths import user_path

log = logging.getLogger("engine.control.record")

FORMAT = "engine-record/1"


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def snapshot_values(p: Params) -> dict[str, Any]:
    return {s.path: _jsonable(getattr(getattr(p, s.group), s.name)) for s in SPECS}


def diff(old: Params, new: Params) -> dict[str, Any]:
    """{path: new value} for every parameter that differs. Unchanged groups are the same object (copy-on-write),
    so the common case is a few identity checks."""
    if old is new:
        return {}
    out: dict[str, Any] = {}
    for s in SPECS:
        og, ng = getattr(old, s.group), getattr(new, s.group)
        if og is ng:
            continue
        a, b = getattr(og, s.name), getattr(ng, s.name)
        if a is not b and a != b:
            out[s.path] = _jsonable(b)
    return out


class Recorder(Controller):
    def __init__(self, path: str | Path, thermal: Any = None):
        self.path = user_path(path, "--record")
        try:  # fail at setup if it cannot be written, but only truncate an old recording once the show starts
            self.path.parent.mkdir(parents=True, exist_ok=True)
            open(self.path, "a", encoding="utf-8").close()
        except OSError as e:
            raise UsageError(f"--record {self.path}: cannot write ({e.strerror or e})") from None
        self._f = None
        self.thermal = thermal
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._last: Params | None = None
        self._last_sample: Sample | None = None
        self._began = False
        self._t0 = time.monotonic()  # reset when the show starts; "ts" counts from there
        self.frames = 0
        self.events = {"set": 0, "osc": 0, "temp": 0}
        self.lines = 0
        self.write_errors = 0
        self._closed = False

    def _put(self, obj: dict[str, Any]) -> None:
        self._q.put(obj)

    def start(self, store: ParamStore, info: dict[str, Any]) -> None:
        try:
            self._f = open(self.path, "w", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"--record {self.path}: cannot write ({e.strerror or e})") from None
        snap = store.snapshot()
        self._last = snap
        self._put({"format": FORMAT, "params": snapshot_values(snap), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "info": json.loads(json.dumps(info, default=str))})
        if self._thread is None:
            self._thread = threading.Thread(target=self._write_loop, name="engine-record", daemon=True)
            self._thread.start()
        log.info("recording the show to %s", self.path)

    def record_osc(self, when: FrameTime, events: list[list[Any]]) -> None:
        """OscServer.on_applied: the accepted messages that took effect at this frame."""
        ts = round(time.monotonic() - self._t0, 4)
        for ev in events:
            self._put({"f": when.index, "ts": ts, "osc": ev})
        self.events["osc"] += len(events)

    def before_frame(self, store: ParamStore, when: FrameTime) -> None:
        if not self._began:
            self._began = True
            self._t0 = time.monotonic()
            self._put({"f": when.index, "begin": True})
        sample = getattr(self.thermal, "current", None) if self.thermal is not None else None
        if sample is not None and sample is not self._last_sample:
            self._last_sample = sample
            self._put({"f": when.index, "ts": round(sample.t - self._t0, 4), "temp": sample.values(), "src": sample.source})
            self.events["temp"] += 1
        snap = store.snapshot()
        d = diff(self._last, snap) if self._last is not None else snapshot_values(snap)
        self._last = snap
        if d:
            self._put({"f": when.index, "t": when.t, "set": d})
            self.events["set"] += 1
        else:
            self._put({"f": when.index, "t": when.t})
        self.frames += 1

    def _write_loop(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                obj = self._q.get(timeout=0.5)
            except queue.Empty:
                obj = None
            if obj is StopIteration:
                break
            try:
                if obj is not None:
                    self._f.write(json.dumps(obj, separators=(",", ":")) + "\n")
                    self.lines += 1
                if time.monotonic() - last_flush > 0.5:  # a crash loses at most half a second of the show
                    self._f.flush()
                    last_flush = time.monotonic()
            except (OSError, ValueError, TypeError) as e:
                self.write_errors += 1
                if self.write_errors == 1:
                    log.error("recording to %s failed: %s (the show goes on)", self.path, e)

    def stats(self) -> dict[str, Any]:
        return {"file": str(self.path), "frames": self.frames, **{f"{k}_events": v for k, v in self.events.items()},
                "lines": self.lines, "write_errors": self.write_errors}

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._put({"end": True, "frames": self.frames})
        self._q.put(StopIteration)
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        if self._f is None:
            return  # never started: the old file (if any) is untouched
        try:
            self._f.close()
        except OSError as e:
            log.error("closing %s failed: %s", self.path, e)


class Replayer(Controller):
    """Applies a recording frame by frame. Also a temperature feed: `current` is the recorded sample."""

    def __init__(self, path: str | Path):
        self.path = user_path(path, "--replay")
        self.params, self.sets, self.temps, self.first, self.last = self._load()
        self.current: Sample | None = None
        self.latest: Sample | None = None
        self._offset: int | None = None
        self.frames = 0
        self.applied = 0
        self.finished = False

    def _load(self):
        where = str(self.path)
        try:
            f = open(self.path, encoding="utf-8")
        except OSError as e:
            raise UsageError(f"--replay {where}: cannot read ({e.strerror or e})") from None
        sets: dict[int, dict[str, Any]] = {}
        temps: dict[int, dict[str, float]] = {}
        times: dict[int, float] = {}
        params: Params | None = None
        first, last = None, 0
        with f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UsageError(f"--replay {where}:{n}: not JSON ({e.msg})") from None
                except RecursionError:
                    raise UsageError(f"--replay {where}:{n}: nested too deeply to be a recording line") from None
                if not isinstance(obj, dict):
                    raise UsageError(f"--replay {where}:{n}: expected a JSON object")
                if n == 1 or params is None:
                    if obj.get("format") != FORMAT:
                        raise UsageError(f"--replay {where}:{n}: not an engine recording (expected format {FORMAT!r})")
                    start = obj.get("params") or {}
                    if not isinstance(start, dict):
                        raise UsageError(f"--replay {where}:{n}: \"params\" must be an object of parameter values")
                    try:
                        params = with_values(Params(), {k: _vec(k, v) for k, v in start.items()})
                    except ParamError as e:
                        raise UsageError(f"--replay {where}:{n}: {e}") from None
                    continue
                if "f" not in obj:
                    continue  # the end line
                fi = obj["f"]
                if isinstance(fi, bool) or not isinstance(fi, int) or fi < 0:
                    raise UsageError(f"--replay {where}:{n}: frame index must be a whole number >= 0")
                if obj.get("begin"):
                    first = fi if first is None else first
                if "set" in obj:
                    if not isinstance(obj["set"], dict):
                        raise UsageError(f"--replay {where}:{n}: \"set\" must be an object of parameter values")
                    try:
                        vals = {spec_for(k).path: spec_for(k).coerce(_vec(k, v)) for k, v in obj["set"].items()}
                    except (ParamError, AttributeError) as e:
                        raise UsageError(f"--replay {where}:{n}: {e}") from None
                    sets.setdefault(fi, {}).update(vals)
                if "temp" in obj and isinstance(obj["temp"], dict):
                    temps[fi] = {k: float(v) for k, v in obj["temp"].items()
                                 if k in FIELDS and _finite_number(v)}
                if "t" in obj:
                    # A NaN or infinite show time rendered black frames with no error: refuse it.
                    if not _finite_number(obj["t"]):
                        raise UsageError(f"--replay {where}:{n}: t must be a finite number of seconds, got {obj['t']!r}")
                    times[fi] = float(obj["t"])
                last = max(last, fi)
        if params is None:
            raise UsageError(f"--replay {where}: empty file")
        self.times = times
        return params, sets, temps, (first if first is not None else 0), last

    def start(self, store: ParamStore, info: dict[str, Any]) -> None:
        store.replace(self.params)
        log.info("replaying %s: frames %d..%d", self.path, self.first, self.last)

    def frame_time(self, index: int) -> float | None:
        """The recorded show time of this frame (older recordings without per-frame t: None, the loop's clock)."""
        if self._offset is None:
            self._offset = self.first - index
        return self.times.get(index + self._offset)

    def before_frame(self, store: ParamStore, when: FrameTime) -> None:
        if self._offset is None:
            self._offset = self.first - when.index
        f = when.index + self._offset
        t = self.temps.get(f)
        if t is not None:
            self.current = self.latest = Sample(t=time.monotonic(), source="replay", **t)
        vals = self.sets.get(f)
        if vals:
            store.update(vals)
            self.applied += 1
        self.frames += 1
        if f >= self.last and not self.finished:
            self.finished = True
            log.warning("replay of %s finished at frame %d; parameters hold their last values", self.path, when.index)

    def stats(self) -> dict[str, Any]:
        return {"file": str(self.path), "frames": self.frames, "frames_with_changes": self.applied, "finished": self.finished,
                "recorded_frames": self.last - self.first + 1}


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _vec(path: str, v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v
