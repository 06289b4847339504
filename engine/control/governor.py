"""Thermal governor: hold a target frame rate as the GPU heats, by turning a live cost knob down and back up.

`engine run --target-fps N` (and `engine bench --target-fps N`) adds a `Governor` to the controllers, after the
mappings and before the recorder (so a recording has the governor's choices in it).

The knob is a ladder of levels, level 0 the dearest. It starts from the show's own settings, which are the
ceiling: the governor never asks for more than the show asked for.
  diffusion  diffusion.steps from the ceiling down to 1 (fewer UNet steps per image: batch k of the denoising batch,
             or k calls without it), then, at 1 step, the similarity filter switched on and loosened:
             diffusion.similarity_threshold 0.98, 0.95, 0.90 (only values below the show's own threshold; 0 = off
             counts as the highest). The filter lowers cost only when the source changes little between frames
             (it repeats the last output instead of running the UNet), so those levels help a slowly moving feedback
             loop and do nothing for a live camera. With diffusion.t_index_list set, the steps come from that list and
             only the similarity levels remain.
  stylegan2  the render scale, stylegan.resolution_drop, from the show's own value down to 2 (quarter resolution):
             synthesis stops before its last blocks and the skip architecture's coarse image is upscaled on the
             device, so each level drops the costliest block. A compiled backend prepares these levels at setup
             (Generator.shape_variants): moving between them never compiles in the loop.
  stylegan3  none (its layers all run at the output's scale; the render size needs a new generator). The governor
             says so once, changes nothing, and still reports how often the target was met.
A write to a governed parameter by anyone else (OSC, a preset, `--set`) becomes the new ceiling; the governor keeps
capping below it. A mapping that drives a governed parameter would fight the governor, so build_controllers refuses
that combination.

Measurement: each frame's work time (frame_stats["frame_ms"]: the loop's step, without the pacing sleep, so a show
paced at 30 fps with room to spare measures its headroom), smoothed by a one-pole filter with time constant
`smoothing` seconds (frame-rate independent), fps_s = 1000 / smoothed ms.

Decisions (after_frame; the new level is written in the next before_frame):
  settle  after a change, nothing is judged for `settle` seconds and `min_frames` frames, and the filter restarts:
          the first frames at a new level carry one-off costs and the old level's average.
  down    fps_s < target for `down_hold` seconds: one level cheaper.
  up      the fps one level up is predicted from the measured cost ratio of the two levels (recorded when the
          governor last moved between them, so it does not drift with temperature: both sides were measured within
          seconds of each other); up when the prediction is >= target x (1 + up_margin) for `up_hold` seconds. With
          no ratio yet, up only with probe_margin of headroom (a probe). A move up that has to come back down within
          `probe_window` seconds blocks moving up for a backoff that doubles each time (5 s .. 120 s), so a target
          that sits between two levels does not make the picture flicker between them.
The hysteresis is the gap between "below target" and "predicted above target x (1 + up_margin)", plus the hold times.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from engine.clock import FrameTime
from engine.control import Controller
from engine.control.mapping import one_pole
from engine.errors import UsageError
from engine.generators.stylegan import (
    MAX_RESOLUTION_DROP,  # the deepest render scale; shape_variants prepares the same
)
from engine.params import ParamStore

log = logging.getLogger("engine.control.governor")

#: The parameters the diffusion ladder writes, and the one that changes what the ladder is.
DIFFUSION_KNOBS = ("diffusion.steps", "diffusion.similarity_threshold")
DIFFUSION_WATCHED = DIFFUSION_KNOBS + ("diffusion.t_index_list",)
#: StyleGAN2's knob: the render scale (stop before the last blocks, upscale on the device).
STYLEGAN_KNOBS = ("stylegan.resolution_drop",)
#: Every parameter some governor ladder writes or reads: a mapping must not drive these alongside --target-fps.
WATCHED = DIFFUSION_WATCHED + STYLEGAN_KNOBS
#: Similarity-filter thresholds tried at 1 step, loosest last (skip probability rises from 0 at the threshold).
SIMILARITY_LADDER = (0.98, 0.95, 0.90)

NO_KNOB = ("{name} has no live cost knob: its cost is set by the network and the render size, and changing either "
           "builds a new generator; the governor measures but changes nothing")


@dataclass(frozen=True)
class Level:
    values: dict[str, Any]
    label: str


def diffusion_ladder(steps: int, similarity: float, t_index_list: tuple = ()) -> list[Level]:
    """Levels from the ceiling (steps, similarity threshold) down to the cheapest. Pure: the tests check it."""
    levels: list[Level] = []
    top_steps = 1 if t_index_list else max(1, int(steps))
    for k in range(top_steps, 0, -1):
        values = {"diffusion.similarity_threshold": float(similarity)}
        if not t_index_list:
            values["diffusion.steps"] = k
        label = (f"steps {k}" if not t_index_list else "t_index_list") + (f", similarity {similarity:g}" if similarity > 0 else "")
        levels.append(Level(values, label))
    base = levels[-1].values
    for thr in SIMILARITY_LADDER:
        if similarity == 0 or thr < similarity:
            values = dict(base, **{"diffusion.similarity_threshold": thr})
            steps_label = "steps 1" if not t_index_list else "t_index_list"
            levels.append(Level(values, f"{steps_label}, similarity {thr:g}"))
    return levels


def stylegan_ladder(drop: int, max_drop: int) -> list[Level]:
    """Render-scale levels from the show's own stylegan.resolution_drop down to max_drop. Pure."""
    drop = max(0, int(drop))
    return [Level({"stylegan.resolution_drop": d}, "full resolution" if d == 0 else f"1/{2 ** d} resolution")
            for d in range(drop, max(drop, max_drop) + 1)]


class Governor(Controller):
    def __init__(self, target_fps: float, *, smoothing: float = 0.5, settle: float = 1.0, min_frames: int = 3,
                 down_hold: float = 0.5, up_hold: float = 2.0, up_margin: float = 0.05, probe_margin: float = 0.25,
                 probe_window: float = 5.0, backoff: tuple[float, float] = (5.0, 120.0),
                 clock: Callable[[], float] = time.monotonic):
        try:
            target = float(target_fps)
        except (TypeError, ValueError):
            raise UsageError(f"--target-fps must be a number, got {target_fps!r}") from None
        if not 0 < target < 10_000:
            raise UsageError(f"--target-fps must be between 0 and 10000, got {target_fps}")
        self.target = target
        self.smoothing, self.settle, self.min_frames = smoothing, settle, min_frames
        self.down_hold, self.up_hold = down_hold, up_hold
        self.up_margin, self.probe_margin, self.probe_window = up_margin, probe_margin, probe_window
        self.backoff_base, self.backoff_max = backoff
        self.clock = clock

        self.knob: str | None = None
        self.knob_params: tuple[str, ...] = ()  # the parameters this governor writes
        self.watched: tuple[str, ...] = ()  # ... and those whose change by anyone else rebuilds its ladder
        self._max_drop = 0
        self.reason: str | None = None
        self.ladder: list[Level] = []
        self.level = 0
        self.ceiling: dict[str, Any] = {}
        self._store: ParamStore | None = None
        self._writing: int | None = None
        self._events: deque = deque()
        self._apply = False

        self.fps_s: float | None = None
        self._ema_ms: float | None = None
        self._last_now: float | None = None
        self._changed_at = 0.0
        self._frames_here = 0
        self._below_since: float | None = None
        self._above_since: float | None = None
        self._from: tuple[int, float] | None = None  # (level left, its fps) until the new level has settled
        self._ratio: dict[int, float] = {}  # i -> fps(level i+1) / fps(level i), measured across one move
        self._backoff = self.backoff_base
        self._up_blocked_until = 0.0
        self._last_up: float | None = None

        self.frames = 0
        self.frames_below = 0
        self.changes = 0
        self.history: deque = deque(maxlen=200)
        self.time_at: dict[str, float] = {}
        self.unreachable_s = 0.0

    # -- set-up ---------------------------------------------------------------------------------------------
    def set_target(self, fps: float) -> None:
        """Change the target while running (the hold timers restart)."""
        if not fps > 0:
            raise UsageError(f"target fps must be > 0, got {fps}")
        self.target = float(fps)
        self._below_since = self._above_since = None

    def start(self, store: ParamStore, info: dict[str, Any]) -> None:
        self._store = store
        gen = info.get("generator") or {}
        name = str(gen.get("name", "generator"))
        if name == "diffusion":
            self.knob, self.knob_params, self.watched = "diffusion steps / similarity filter", DIFFUSION_KNOBS, DIFFUSION_WATCHED
        elif int(gen.get("max_resolution_drop") or 0) > 0:
            self.knob, self.knob_params, self.watched = "StyleGAN2 render scale", STYLEGAN_KNOBS, STYLEGAN_KNOBS
            self._max_drop = min(MAX_RESOLUTION_DROP, int(gen["max_resolution_drop"]))
        if self.knob is not None:
            self.ceiling = {p: store.get(p) for p in self.watched}
            self._rebuild(keep=None)
            store.add_listener(self._on_write)
            log.info("governor: target %.1f fps; levels: %s", self.target, " > ".join(l.label for l in self.ladder))
        else:
            self.reason = NO_KNOB.format(name=name)
            log.warning("--target-fps: %s", self.reason)
        self._changed_at = self.clock()

    def _rebuild(self, keep: dict[str, Any] | None) -> None:
        c = self.ceiling
        if self.knob_params == STYLEGAN_KNOBS:
            self.ladder = stylegan_ladder(int(c["stylegan.resolution_drop"]), self._max_drop)
        else:
            self.ladder = diffusion_ladder(int(c["diffusion.steps"]), float(c["diffusion.similarity_threshold"]), tuple(c["diffusion.t_index_list"]))
        self._ratio.clear()  # the ratios were between levels of the old ladder
        level = 0
        if keep is not None:
            # Stay at the same cost where the new ladder has it, else the dearest level not above the old one's steps.
            for i, l in enumerate(self.ladder):
                if all(keep.get(k) == v for k, v in l.values.items()):
                    level = i
                    break
            else:
                level = min(self.level, len(self.ladder) - 1)
        self.level = level
        self._apply = True

    def _on_write(self, stored: dict[str, Any]) -> None:
        if self._writing == threading.get_ident():
            return  # our own write
        for path, value in stored.items():
            if path in self.watched:
                self._events.append((path, value))

    def stop(self) -> None:
        if self._store is not None and self.knob is not None:
            self._store.remove_listener(self._on_write)

    # -- per frame ------------------------------------------------------------------------------------------
    def before_frame(self, store: ParamStore, when: FrameTime) -> None:
        if self.knob is None:
            return
        if self._events:
            current = self.ladder[self.level].values
            while self._events:
                path, value = self._events.popleft()
                self.ceiling[path] = value
            self._rebuild(keep=current)
        if self._apply:
            self._apply = False
            values = {k: v for k, v in self.ladder[self.level].values.items() if store.get(k) != v}
            if values:
                self._writing = threading.get_ident()
                try:
                    store.update(values)
                finally:
                    self._writing = None

    def after_frame(self, when: FrameTime, frame_stats: dict[str, float]) -> None:
        now = self.clock()
        ms = float(frame_stats.get("frame_ms", 0.0))
        dt = 0.0 if self._last_now is None else now - self._last_now
        self._last_now = now
        if ms <= 0:
            return
        self.frames += 1
        if 1000.0 / ms < self.target:
            self.frames_below += 1
        label = self.ladder[self.level].label if self.ladder else "none"
        self.time_at[label] = self.time_at.get(label, 0.0) + dt
        self._frames_here += 1
        if self._frames_here <= 1:
            return  # the first frame at a level carries its one-off costs (new coefficients, a primed batch)
        if self._ema_ms is None:
            self._ema_ms = ms
        else:
            self._ema_ms = one_pole(self._ema_ms, ms, dt, self.smoothing)
        self.fps_s = 1000.0 / self._ema_ms
        if self.knob is None:
            return
        if now - self._changed_at < self.settle or self._frames_here < self.min_frames:
            return
        fps = self.fps_s
        if self._from is not None:
            # The new level has settled: the cost ratio across this move, measured seconds apart.
            old, old_fps = self._from
            lo, hi = min(old, self.level), max(old, self.level)
            if hi - lo == 1:
                self._ratio[lo] = (fps / old_fps) if self.level == hi else (old_fps / fps)
            self._from = None
        cheapest = self.level == len(self.ladder) - 1
        if fps < self.target:
            self._above_since = None
            if cheapest:
                self.unreachable_s += dt
                return
            if self._below_since is None:
                self._below_since = now
            if now - self._below_since >= self.down_hold:
                if self._last_up is not None and now - self._last_up < self.probe_window:
                    self._up_blocked_until = now + self._backoff  # the last move up did not hold
                    self._backoff = min(self._backoff * 2, self.backoff_max)
                self._move(self.level + 1, now, fps, "below target")
            return
        self._below_since = None
        if self._last_up is not None and now - self._last_up >= self.probe_window:
            self._backoff = self.backoff_base  # the last move up held
            self._last_up = None
        if self.level == 0 or now < self._up_blocked_until:
            self._above_since = None
            return
        ratio = self._ratio.get(self.level - 1)
        if ratio is not None:
            ok = fps / ratio >= self.target * (1 + self.up_margin)
        else:
            ok = fps >= self.target * (1 + self.probe_margin)
        if not ok:
            self._above_since = None
            return
        if self._above_since is None:
            self._above_since = now
        if now - self._above_since >= self.up_hold:
            self._last_up = now
            self._move(self.level - 1, now, fps, "headroom" if ratio is not None else "probe")

    def _move(self, level: int, now: float, fps: float, why: str) -> None:
        old = self.level
        self.history.append({"t": round(now, 3), "from": self.ladder[old].label, "to": self.ladder[level].label,
                             "fps": round(fps, 2), "why": why})
        log.info("governor: %.1f fps (target %.1f): %s -> %s (%s)", fps, self.target, self.ladder[old].label, self.ladder[level].label, why)
        self.level = level
        self._apply = True
        self.changes += 1
        self._from = (old, fps)
        self._changed_at = now
        self._frames_here = 0
        self._ema_ms = None
        self._below_since = self._above_since = None

    # -- reporting ------------------------------------------------------------------------------------------
    @property
    def label(self) -> str | None:
        return self.ladder[self.level].label if self.ladder else None

    def stats(self) -> dict[str, Any]:
        return {
            "target_fps": self.target,
            "knob": self.knob,
            "no_knob_reason": self.reason,
            "levels": [l.label for l in self.ladder],
            "level": self.label,
            "level_index": self.level if self.ladder else None,
            "fps_smoothed": self.fps_s,
            "changes": self.changes,
            "frames": self.frames,
            "frames_below_target": self.frames_below,
            "fraction_below_target": (self.frames_below / self.frames) if self.frames else None,
            "seconds_unreachable_at_cheapest": self.unreachable_s,
            "seconds_at_level": {k: round(v, 3) for k, v in self.time_at.items()},
            "cost_ratios": {f"{self.ladder[i].label} -> {self.ladder[i + 1].label}": round(r, 3) for i, r in sorted(self._ratio.items())
                            if i + 1 < len(self.ladder)},
            "history": list(self.history),
        }
