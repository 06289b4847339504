"""The render loop in a live show: a frame whose generator call fails keeps the last good frame on screen, is counted
and logged, and the show goes on; the first frame failing is a setup error and stops the run loudly."""

from __future__ import annotations

import json
import logging

import pytest

from engine.control import Controller
from engine.loop import Engine, RunOptions
from engine.params import ParamStore

TINY = {"channel_base": 1024, "channel_max": 32}


class FailOn:
    """The engine's real generator, with a fault injected on chosen frames (what a CUDA OOM or a bad layer edit
    would raise mid-show). Everything else is delegated."""

    def __init__(self, generator, frames: set[int]):
        self._g = generator
        self._frames = frames

    def __call__(self, snap, when, source):
        if when.index in self._frames:
            raise RuntimeError("injected failure")
        return self._g(snap, when, source)

    def __getattr__(self, name):
        return getattr(self._g, name)


class Grab(Controller):
    """Reads the generator's texture after every frame (what the shaders were given)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.frames: list[bytes] = []

    def after_frame(self, when, frame_stats) -> None:
        self.frames.append(self.engine.pipeline.frame.texture.read())


def _engine(tmp_path, frames: int) -> Engine:
    opts = RunOptions(size=64, device="cpu", sinks=["null"], frames=frames, fps=30.0, clock="frame", quiet=True,
                      generator_options=dict(TINY), stats_json=tmp_path / "stats.json")
    return Engine(opts, ParamStore())


def test_a_failing_frame_keeps_the_last_good_frame_and_the_show_goes_on(tmp_path, caplog):
    eng = _engine(tmp_path, frames=8)
    try:
        eng.setup()
        eng.generator = FailOn(eng.generator, {3, 4})
        grab = Grab(eng)
        eng.controllers.append(grab)
        eng.store.set("latent.speed", 5.0)  # fast walk: consecutive good frames differ
        with caplog.at_level(logging.ERROR, logger="engine.loop"):
            summary = eng.run()
    finally:
        eng.close()
    assert summary["frames"] == 8
    assert summary["counters"]["generator_errors"] == 2
    f = grab.frames
    assert f[3] == f[2] and f[4] == f[2], "a failed frame must leave the last good frame in the texture"
    assert f[5] != f[2] and f[1] != f[2], "good frames go on changing"
    lines = [r.getMessage() for r in caplog.records if "the generator failed" in r.getMessage()]
    assert lines and "frame 3" in lines[0] and "injected failure" in lines[0]
    assert len(lines) == 1, "the log is rate-limited"


def test_changed_parameters_are_named_when_a_frame_fails(tmp_path, caplog):
    eng = _engine(tmp_path, frames=4)

    class SetPsiOnFrame2(Controller):
        def before_frame(self, store, when):
            if when.index == 2:
                store.set("latent.psi", 7.5)

    try:
        eng.setup()
        eng.generator = FailOn(eng.generator, {2})
        eng.controllers.append(SetPsiOnFrame2())
        with caplog.at_level(logging.ERROR, logger="engine.loop"):
            eng.run()
    finally:
        eng.close()
    msg = next(r.getMessage() for r in caplog.records if "the generator failed" in r.getMessage())
    assert "changed since the last good frame: latent.psi" in msg


def test_a_failing_first_frame_stops_the_run_and_stats_are_still_written(tmp_path, monkeypatch):
    import engine.loop as loop_mod

    real_create = loop_mod.create_generator
    monkeypatch.setattr(loop_mod, "create_generator", lambda *a, **k: FailOn(real_create(*a, **k), {0}))
    opts = RunOptions(size=64, device="cpu", sinks=["null"], frames=3, clock="frame", quiet=True,
                      generator_options=dict(TINY), stats_json=tmp_path / "stats.json")
    with pytest.raises(RuntimeError, match="injected failure"):
        loop_mod.run_engine(opts, ParamStore(), [])
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["frames"] == 0
