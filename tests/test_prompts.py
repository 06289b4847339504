"""Prompt lists (diffusion.prompt_list): stepped by prompt_index or by show time (prompt_cycle), crossfaded over
prompt_fade through prompt / prompt_b / prompt_mix; files re-read when they change; bad lists are one-line errors at
start and logged, never fatal, mid-show. End to end on a tiny random diffusion model in the real render loop."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.clock import FrameTime
from engine.control.prompts import PromptList, parse_prompt_list
from engine.errors import UsageError
from engine.params import ParamStore

ROOT = Path(__file__).resolve().parent.parent


def frame(t: float, i: int = 0) -> FrameTime:
    return FrameTime(t=t, index=i, dt=1 / 30)


def prompts_of(store: ParamStore) -> tuple[str, str, float]:
    d = store.snapshot().diffusion
    return d.prompt, d.prompt_b, d.prompt_mix


def started(spec: str, **values) -> tuple[PromptList, ParamStore]:
    store = ParamStore()
    store.update({"diffusion.prompt_list": spec, **{f"diffusion.{k}": v for k, v in values.items()}})
    ctl = PromptList()
    ctl.start(store, {})
    return ctl, store


def test_inline_and_file_lists(tmp_path):
    assert parse_prompt_list("a red fox | a blue whale |  | neon city ") == (["a red fox", "a blue whale", "neon city"], None)
    f = tmp_path / "prompts.txt"
    f.write_text("# seed 004 style prompts.txt\nan oil painting of a lighthouse\n\n  a mosaic of the sea  \n# done\n")
    assert parse_prompt_list(str(f)) == (["an oil painting of a lighthouse", "a mosaic of the sea"], f)
    assert parse_prompt_list("") == ([], None)


@pytest.mark.parametrize("spec, words", [
    ("/no/such/prompts.txt", ["no file", "/no/such/prompts.txt", "one prompt per line"]),
    (" | ", ["no prompts"]),
])
def test_bad_lists_are_one_line_errors(spec, words):
    with pytest.raises(UsageError) as e:
        parse_prompt_list(spec)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("diffusion.prompt_list:") and all(w in msg for w in words)


def test_empty_file_and_binary_file(tmp_path):
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    with pytest.raises(UsageError, match="has no prompts"):
        parse_prompt_list(str(tmp_path / "empty.txt"))
    (tmp_path / "blob.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UsageError, match="UTF-8"):
        parse_prompt_list(str(tmp_path / "blob.txt"))


def test_index_selects_and_wraps_and_a_change_fades():
    ctl, store = started("a | b | c", prompt_fade=2.0)
    ctl.before_frame(store, frame(0.0))
    assert prompts_of(store) == ("a", "", 0.0)  # first frame: no fade from anything
    store.set("diffusion.prompt_index", 4)  # 4 mod 3 = entry 1
    ctl.before_frame(store, frame(10.0))
    assert prompts_of(store) == ("a", "b", 0.0)  # the fade starts from a
    ctl.before_frame(store, frame(11.0))
    assert prompts_of(store) == ("a", "b", 0.5)  # smoothstep(0.5)
    ctl.before_frame(store, frame(11.5))
    assert prompts_of(store)[2] == pytest.approx(0.84375)  # smoothstep(0.75)
    ctl.before_frame(store, frame(12.0))
    assert prompts_of(store) == ("b", "", 0.0)  # done: b alone


def test_fade_zero_cuts():
    ctl, store = started("a | b", prompt_fade=0.0)
    ctl.before_frame(store, frame(0.0))
    store.set("diffusion.prompt_index", 1)
    ctl.before_frame(store, frame(0.1))
    assert prompts_of(store) == ("b", "", 0.0)


def test_cycle_steps_with_show_time_from_the_index():
    ctl, store = started("a | b | c", prompt_cycle=10.0, prompt_fade=0.0, prompt_index=1)
    seen = []
    for t in (0.0, 9.9, 10.0, 19.9, 20.0, 30.0, 40.0):
        ctl.before_frame(store, frame(t))
        seen.append(prompts_of(store)[0])
    assert seen == ["b", "b", "c", "c", "a", "b", "c"]


def test_a_change_in_the_middle_of_a_fade_fades_on_from_the_dominant_entry():
    ctl, store = started("a | b | c", prompt_fade=2.0)
    ctl.before_frame(store, frame(0.0))
    store.set("diffusion.prompt_index", 1)
    ctl.before_frame(store, frame(1.0))  # fade a -> b starts
    ctl.before_frame(store, frame(2.6))  # mix smoothstep(0.8) = 0.896: b dominates
    store.set("diffusion.prompt_index", 2)
    ctl.before_frame(store, frame(2.7))
    assert prompts_of(store)[:2] == ("b", "c")
    store.set("diffusion.prompt_index", 0)
    ctl.before_frame(store, frame(2.8))  # c at 0.028: b still dominates
    assert prompts_of(store)[:2] == ("b", "a")


def test_the_list_overrides_prompts_sent_to_the_generator_and_off_gives_them_back():
    ctl, store = started("a | b", prompt_fade=0.0)
    ctl.before_frame(store, frame(0.0))
    store.update({"diffusion.prompt": "typed by hand", "diffusion.prompt_b": "x", "diffusion.prompt_mix": 0.3})
    ctl.before_frame(store, frame(0.1))
    assert prompts_of(store) == ("a", "", 0.0)
    store.set("diffusion.prompt_list", "")
    ctl.before_frame(store, frame(0.2))
    store.set("diffusion.prompt", "typed again")
    ctl.before_frame(store, frame(0.3))
    assert prompts_of(store) == ("typed again", "", 0.0)  # off: the list no longer writes anything


def test_a_file_is_re_read_when_it_changes_and_a_bad_edit_keeps_the_prompts(tmp_path, caplog):
    f = tmp_path / "prompts.txt"
    f.write_text("first\nsecond\n")
    ctl, store = started(str(f), prompt_fade=0.0, prompt_index=1)
    ctl.before_frame(store, frame(0.0))
    assert prompts_of(store)[0] == "second"
    f.write_text("uno\ndos\ntres\n")
    os.utime(f, (1e9, 1e9))  # a different mtime even on coarse-timestamp filesystems
    ctl.before_frame(store, frame(0.5))
    assert prompts_of(store)[0] == "second"  # looked at once a second, not every frame
    ctl.before_frame(store, frame(1.2))
    assert prompts_of(store)[0] == "dos"
    f.write_text("# all gone\n")
    os.utime(f, (2e9, 2e9))
    with caplog.at_level(logging.WARNING, logger="engine.control.prompts"):
        for i in range(60):
            ctl.before_frame(store, frame(2.5 + i / 30))
    assert prompts_of(store)[0] == "dos"  # the show goes on with what it had
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "has no prompts" in warnings[0] and "stay as they were" in warnings[0]
    assert ctl.stats()["prompt_list"]["errors"] == 1  # and it was not re-read every second either


def test_a_bad_list_sent_live_is_logged_and_the_old_list_plays_on(caplog):
    ctl, store = started("a | b", prompt_fade=0.0)
    ctl.before_frame(store, frame(0.0))
    store.set("diffusion.prompt_list", "/missing/list.txt")
    with caplog.at_level(logging.WARNING, logger="engine.control.prompts"):
        ctl.before_frame(store, frame(0.1))
    store.set("diffusion.prompt_index", 1)
    ctl.before_frame(store, frame(0.2))
    assert prompts_of(store)[0] == "b"
    assert any("no file" in r.getMessage() for r in caplog.records)


def test_a_bad_list_at_start_is_one_line_and_exit_2(tmp_path):
    cmd = [sys.executable, "-m", "engine", "run", "--frames", "1", "--size", "64", "--device", "cpu", "--sink", "null",
           "--osc-port", "0", "--quiet", "--set", f"diffusion.prompt_list={tmp_path}/nope.txt"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [l for l in proc.stderr.splitlines() if "prompt_list" in l]
    assert len(lines) == 1 and "no file" in lines[0], proc.stderr


@pytest.mark.usefixtures("one_torch_thread")
def test_a_cycling_list_through_the_render_loop_encodes_each_prompt_once(tmp_path):
    """The real loop, a tiny random sd-turbo-shaped model: the list steps every second of show time with a half-second
    fade, the frames follow it, and the text encoder runs once per distinct prompt, not once per frame."""
    pytest.importorskip("diffusers")
    import numpy as np
    from tiny_diffusion import SIZE, save_tiny_model

    from engine.control import Controller
    from engine.loop import Engine, RunOptions

    model = save_tiny_model(tmp_path / "tiny-sd-turbo")

    class Grab(Controller):
        def __init__(self):
            self.engine, self.frames, self.prompts = None, [], []

        def after_frame(self, when, frame_stats):
            self.frames.append(np.frombuffer(self.engine.pipeline.frame.texture.read(), np.uint8).astype(np.int16))
            self.prompts.append(prompts_of(self.engine.store))

    store = ParamStore()
    store.update({"diffusion.prompt_list": "a red square | a green circle | a blue line", "diffusion.prompt_cycle": 1.0,
                  "diffusion.prompt_fade": 0.5, "diffusion.mode": "txt2img"})
    grab = Grab()
    opts = RunOptions(generator=f"diffusion:{model}", size=SIZE, device="cpu", sinks=["null"], frames=30, fps=10.0,
                      clock="frame", quiet=True)
    eng = Engine(opts, store, [PromptList(), grab])
    grab.engine = eng
    try:
        eng.setup()
        eng.run()
    finally:
        eng.close()
    summary = eng.stats.summary()  # with what close() adds: generator and controller stats
    assert [p[0] for p in grab.prompts[:10]] == ["a red square"] * 10
    assert grab.prompts[12] == ("a red square", "a green circle", pytest.approx(0.352))  # t = 1.2: smoothstep(0.4)
    assert grab.prompts[16] == ("a green circle", "", 0.0) and grab.prompts[29][0] == "a blue line"
    # txt2img with a fixed seed: the picture only changes when the prompt mix does
    assert np.array_equal(grab.frames[3], grab.frames[8])
    assert np.abs(grab.frames[16] - grab.frames[8]).mean() > 0
    assert summary["generator_stats"]["text_encoder_calls"] == 3
    assert summary["controllers"]["PromptList"]["prompt_list"]["changes"] == 2


def test_the_example_list_parses():
    prompts, path = parse_prompt_list(str(ROOT / "engine/examples/prompts/heat.txt"))
    assert len(prompts) == 7 and not any(p.startswith("#") for p in prompts) and path is not None
