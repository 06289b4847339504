"""The thermal governor (engine/control/governor.py).

The end-to-end tests run the real render loop on the CPU with a tiny diffusion model (tests/tiny_diffusion.py), where
steps change the frame time measurably (denoise_batch off: k steps = k UNet calls): an unreachable target must walk
the cost down to the cheapest level, and a target with headroom must walk it back up to the show's own settings.
The decision logic is also checked frame by frame against a plant whose frame time is a function of the level (a
frame-time model, fed through the same after_frame hook the loop calls), with a controllable clock, so hysteresis and
the probe backoff are tested exactly.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
import torch._dynamo  # noqa: F401  imports triton now, at collection: triton after Mesa's LLVM (GL tests) segfaults

from engine.clock import FrameTime
from engine.control import Controller, build_controllers
from engine.control.governor import Governor, diffusion_ladder
from engine.errors import UsageError
from engine.params import ParamStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ladder_starts_at_the_show_settings_and_ends_at_the_cheapest():
    labels = [l.label for l in diffusion_ladder(3, 0.0)]
    assert labels == ["steps 3", "steps 2", "steps 1", "steps 1, similarity 0.98", "steps 1, similarity 0.95", "steps 1, similarity 0.9"]
    lad = diffusion_ladder(2, 0.96)
    assert [l.values for l in lad] == [
        {"diffusion.similarity_threshold": 0.96, "diffusion.steps": 2},
        {"diffusion.similarity_threshold": 0.96, "diffusion.steps": 1},
        {"diffusion.similarity_threshold": 0.95, "diffusion.steps": 1},
        {"diffusion.similarity_threshold": 0.90, "diffusion.steps": 1},
    ]
    # t_index_list sets the steps itself: only the similarity levels remain, steps is never written.
    lad = diffusion_ladder(4, 0.0, (32.0, 45.0))
    assert len(lad) == 4 and all("diffusion.steps" not in l.values for l in lad)


# ---- decision logic against a frame-time model ------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drive(gov: Governor, store: ParamStore, clock: Clock, ms_of_level, seconds: float, start_index: int = 0) -> int:
    """Run frames through the governor's hooks, each taking ms_of_level(steps, similarity) of (model) time."""
    i = start_index
    end = clock.now + seconds
    while clock.now < end:
        gov.before_frame(store, FrameTime(0.0, i))
        snap = store.snapshot()
        ms = ms_of_level(snap.diffusion.steps, snap.diffusion.similarity_threshold)
        clock.now += ms / 1000.0
        gov.after_frame(FrameTime(0.0, i), {"frame_ms": ms})
        i += 1
    return i


def cost(steps: int, similarity: float) -> float:
    """10 ms per step plus 5 ms; the filter saves 1 ms per 0.01 below 1 (a slowly changing source)."""
    saved = 0.0 if similarity == 0 else (1.0 - similarity) * 100.0
    return 5.0 + 10.0 * steps - saved


def make(target: float, steps: int = 4, clock: Clock | None = None) -> tuple[Governor, ParamStore, Clock]:
    clock = clock or Clock()
    store = ParamStore()
    store.update({"diffusion.steps": steps})
    gov = Governor(target, smoothing=0.1, settle=0.3, down_hold=0.2, up_hold=0.5, clock=clock)
    gov.start(store, {"generator": {"name": "diffusion"}})
    return gov, store, clock


def test_holds_the_target_with_the_dearest_level_that_meets_it():
    # Level costs: steps 4: 45 ms (22 fps), 3: 35 ms (28.6), 2: 25 ms (40), 1: 15 ms (66.7), similarity 0.98: 13 ms ...
    gov, store, clock = make(30.0)
    drive(gov, store, clock, cost, 10.0)
    assert store.get("diffusion.steps") == 2  # 40 fps >= 30; steps 3 (28.6 fps) would miss it
    assert gov.changes == 2
    assert store.get("diffusion.similarity_threshold") == 0.0


def test_unreachable_target_goes_to_the_cheapest_level_and_headroom_brings_it_back():
    gov, store, clock = make(1000.0)
    i = drive(gov, store, clock, cost, 10.0)
    assert gov.level == len(gov.ladder) - 1
    assert store.get("diffusion.steps") == 1 and store.get("diffusion.similarity_threshold") == 0.9
    assert gov.stats()["seconds_unreachable_at_cheapest"] > 1.0
    gov.set_target(10.0)  # everything meets 10 fps: back up to the show's 4 steps, filter off
    drive(gov, store, clock, cost, 15.0, i)
    assert gov.level == 0 and store.get("diffusion.steps") == 4 and store.get("diffusion.similarity_threshold") == 0.0


def test_a_target_between_two_levels_does_not_flicker():
    # 26 fps: steps 3 gives 28.6 (ok), steps 4 gives 22 (not). Probing 4 fails once, then the measured cost ratio
    # predicts the miss and the governor stays at 3: no oscillation over a minute.
    gov, store, clock = make(26.0, steps=4)
    drive(gov, store, clock, cost, 60.0)
    assert store.get("diffusion.steps") == 3
    assert gov.changes <= 3, gov.stats()["history"]


def test_the_governor_caps_below_a_new_ceiling_written_by_someone_else():
    gov, store, clock = make(30.0)
    drive(gov, store, clock, cost, 10.0)
    assert store.get("diffusion.steps") == 2
    store.set("diffusion.steps", 1)  # a performer (OSC) asks for 1 step: that is the new ceiling
    drive(gov, store, clock, cost, 1.0)
    assert store.get("diffusion.steps") == 1 and gov.ladder[0].values["diffusion.steps"] == 1


def test_stylegan3_has_no_knob_and_nothing_is_written():
    clock = Clock()
    store = ParamStore()
    gov = Governor(60.0, clock=clock)
    gov.start(store, {"generator": {"name": "stylegan3", "max_resolution_drop": 0}})
    before = store.snapshot()
    drive(gov, store, clock, lambda s, t: 50.0, 3.0)  # 20 fps, far below the target
    assert store.snapshot() is before
    st = gov.stats()
    assert st["knob"] is None and "no live cost knob" in st["no_knob_reason"] and st["fraction_below_target"] == 1.0


def test_stylegan2_render_scale_ladder_and_decisions():
    from engine.control.governor import stylegan_ladder

    assert [l.values["stylegan.resolution_drop"] for l in stylegan_ladder(0, 2)] == [0, 1, 2]
    assert [l.label for l in stylegan_ladder(1, 2)] == ["1/2 resolution", "1/4 resolution"]  # the show's own is the ceiling
    clock = Clock()
    store = ParamStore()
    gov = Governor(40.0, smoothing=0.1, settle=0.3, down_hold=0.2, up_hold=0.5, clock=clock)
    gov.start(store, {"generator": {"name": "stylegan2", "max_resolution_drop": 4}})
    assert gov.knob == "StyleGAN2 render scale" and len(gov.ladder) == 3

    def drive_sg(seconds: float, ms_per_drop: dict[int, float]) -> None:
        end = clock.now + seconds
        i = 0
        while clock.now < end:
            gov.before_frame(store, FrameTime(0.0, i))
            ms = ms_per_drop[store.get("stylegan.resolution_drop")]
            clock.now += ms / 1000.0
            gov.after_frame(FrameTime(0.0, i), {"frame_ms": ms})
            i += 1

    costs = {0: 40.0, 1: 15.0, 2: 8.0}  # 25, 66, 125 fps: the top block is most of the cost
    drive_sg(5.0, costs)
    assert store.get("stylegan.resolution_drop") == 1  # the dearest level that holds 40 fps


def test_cli_wiring_refuses_a_mapping_that_drives_the_same_parameter(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text('[[map]]\nsource = "temperature"\nparam = "diffusion.steps"\nin = [40.0, 80.0]\nout = [1, 4]\n')
    with pytest.raises(UsageError, match="drives diffusion.steps"):
        build_controllers({"osc_port": 0, "map": str(m), "thermal": "synthetic", "target_fps": 30.0})
    with pytest.raises(UsageError, match="drop --target-fps"):
        build_controllers({"osc_port": 0, "replay": str(m), "target_fps": 30.0})
    with pytest.raises(UsageError, match="between 0 and 10000"):
        build_controllers({"osc_port": 0, "target_fps": -5.0})
    made = build_controllers({"osc_port": 0, "target_fps": 30.0})
    assert [type(c).__name__ for c in made] == ["ThermalSampler", "PromptList", "Governor"]  # the sampler feeds the overlay


# ---- the real loop with a tiny diffusion model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    pytest.importorskip("diffusers")
    from tiny_diffusion import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("sd") / "tiny-sd-turbo")


class Script(Controller):
    """Ends the run when `done(governor)` holds (or after `timeout` s), and records the level per frame."""

    def __init__(self, gov: Governor, stop: threading.Event, done, timeout: float):
        self.gov, self.stop_event, self.done, self.deadline = gov, stop, done, time.monotonic() + timeout
        self.levels: list[int] = []

    def after_frame(self, when, frame_stats):
        self.levels.append(self.gov.level)
        if self.done(self.gov) or time.monotonic() > self.deadline:
            self.stop_event.set()


def test_real_loop_lowers_cost_when_the_target_is_unreachable_and_raises_it_with_headroom(tiny_sd):
    from engine.loop import Engine, RunOptions

    store = ParamStore()
    store.update({"diffusion.steps": 4, "diffusion.denoise_batch": False})
    gov = Governor(10_000 - 1, smoothing=0.2, settle=0.4, down_hold=0.2, up_hold=0.5)
    opts = RunOptions(generator=f"diffusion:{tiny_sd}", size=64, device="cpu", sinks=["null"], fps=0.0, clock="wall", quiet=True)
    eng = Engine(opts, store, [gov])
    try:
        eng.setup()
        cheapest = len(gov.ladder) - 1

        def applied(level: int):
            # the level's values are in the store (the governor writes them in the frame after deciding)
            return lambda g: g.level == level and all(store.get(k) == v for k, v in g.ladder[level].values.items())

        down = Script(gov, eng.stop_event, applied(cheapest), timeout=30)
        eng.controllers.append(down)
        eng.run()
        assert gov.level == cheapest, gov.stats()
        assert store.get("diffusion.steps") == 1 and store.get("diffusion.similarity_threshold") == 0.9
        assert down.levels == sorted(down.levels)  # only ever cheaper on the way down

        # Headroom: a target every level meets. The governor walks back up to 4 steps with the filter off.
        gov.set_target(0.5)
        eng.controllers.remove(down)
        eng.stop_event.clear()
        up = Script(gov, eng.stop_event, applied(0), timeout=40)
        eng.controllers.append(up)
        eng.run()
        assert gov.level == 0, gov.stats()
        assert store.get("diffusion.steps") == 4 and store.get("diffusion.similarity_threshold") == 0.0
        assert up.levels == sorted(up.levels, reverse=True)

        # Steps cost measurably: the ratios the governor measured across its moves, steps 4 -> 1.
        ratios = gov.stats()["cost_ratios"]
        r = ratios["steps 4 -> steps 3"] * ratios["steps 3 -> steps 2"] * ratios["steps 2 -> steps 1"]
        assert r > 1.3, ratios
    finally:
        eng.close()


@pytest.mark.slow
def test_engine_run_target_fps_turns_stylegan2_render_scale_down(tmp_path):
    """`engine run --target-fps` on StyleGAN2 with a target no level can reach: the governor walks the render
    scale down to 1/4 in the real loop, and the run's stats say so."""
    import json
    import subprocess
    import sys

    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[generator]\nchannel_base = 1024\nchannel_max = 32\n")
    stats = tmp_path / "stats.json"
    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, "-m", "engine", "run", "--size", "64", "--config", str(cfg), "--sink", "null",
                        "--clock", "wall", "--fps", "0", "--seconds", "6", "--target-fps", "9999", "--osc-port", "0",
                        "--quiet", "--stats-json", str(stats)], cwd=root, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    gov = json.loads(stats.read_text())["controllers"]["Governor"]
    assert gov["knob"] == "StyleGAN2 render scale"
    assert gov["levels"] == ["full resolution", "1/2 resolution", "1/4 resolution"]
    assert gov["level"] == "1/4 resolution" and gov["changes"] == 2, gov
