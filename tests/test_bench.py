"""`engine bench` end to end on the CPU: the real frame path (tiny StyleGAN2 or a tiny diffusion model, GL through
Mesa), real files checked by parsing them, numbers in summary.json recomputed from the CSVs, the plot opened with PIL.
Temperatures come from the engine's synthetic source (no sensor here), which is what the feature offers for this."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo  # noqa: F401  imports triton now, at collection: triton after Mesa's LLVM (GL tests) segfaults

from engine.benchmark.analysis import (StabilityDetector, cold_hot, frame_summary, parse_range, slope_per_minute, target_hold,
                                       temperature_bins)
from engine.cli import main

TINY_SG = "[generator]\nchannel_base = 1024\nchannel_max = 32\n"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(TINY_SG)
    return p


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def floats(rows, key) -> np.ndarray:
    return np.asarray([float(r[key]) if r[key] != "" else math.nan for r in rows])


def bench(*args: str) -> int:
    return main(["bench", "--device", "cpu", "--quiet", *args])


# ---- the numbers ------------------------------------------------------------------------------------------------


def test_frame_summary_and_bins_follow_their_definitions():
    ms = [10.0, 20.0, 30.0, 40.0, 1000.0]
    s = frame_summary(ms)
    assert s["fps_median"] == pytest.approx(1000 / 30)
    assert s["fps_p1"] == pytest.approx(1000 / np.percentile(ms, 99))
    assert s["frame_ms"]["p99"] == pytest.approx(np.percentile(ms, 99))
    temps = [40.1, 41.9, 42.0, 43.5, math.nan]
    bins = temperature_bins(temps, [10, 30, 20, 20, 5], width=2.0)
    assert [(b["lo"], b["frames"]) for b in bins] == [(40.0, 2), (42.0, 2)]  # the NaN frame is left out
    assert bins[0]["fps_median"] == pytest.approx(1000 / 20)
    ch = cold_hot(bins, min_frames=2)
    assert ch["fps_cold"] == pytest.approx(50.0) and ch["fps_hot"] == pytest.approx(50.0) and ch["fps_lost"] == 0
    ch = cold_hot(temperature_bins([40, 40, 50, 50], [10, 10, 20, 20], 2.0), min_frames=2)
    assert ch["fps_lost"] == pytest.approx(50.0) and ch["fps_lost_pct"] == pytest.approx(50.0)
    assert cold_hot([], min_frames=2)["reason"] == "no temperature readings"


def test_slope_and_stability_detector():
    t = np.arange(0, 60, 0.1)
    assert slope_per_minute(t, 30 + 0.5 * t) == pytest.approx(30.0)  # 0.5 C/s = 30 C/min
    det = StabilityDetector(window=10, slope=1.0)
    for x in np.arange(0, 30, 0.1):  # rising 6 C/min: never stable
        det.add(float(x), 40 + 0.1 * float(x))
        assert not det.stable()
    det = StabilityDetector(window=10, slope=1.0)
    for x in np.arange(0, 9.95, 0.1):  # flat, but the window is not full yet
        det.add(float(x), 70.0)
    assert not det.stable()
    det.add(10.05, 70.0)
    assert det.stable() and det.last_slope == pytest.approx(0.0, abs=1e-9)
    from engine.control.thermal import SyntheticSource

    soak = SyntheticSource("soak,lo=35,hi=80,tau=60")  # the heat-soak rehearsal curve: hi - (hi - lo) e^(-t / tau)
    assert soak.value_at(0) == 35 and soak.value_at(60) == pytest.approx(80 - 45 / math.e) and soak.value_at(1e4) == pytest.approx(80)
    assert parse_range("30:90:20") == [30, 50, 70, 90]
    assert parse_range("90:30:-30") == [90, 60, 30]
    for bad in ("30:90", "30:90:0", "90:30:10", "a:b:c"):
        with pytest.raises(ValueError):
            parse_range(bad)


# ---- the command ------------------------------------------------------------------------------------------------


def test_bench_writes_every_file_and_the_compare_ratio_is_measured(tmp_path, tiny_config):
    out = tmp_path / "run"
    rc = bench("--config", str(tiny_config), "--size", "64", "--seconds", "1.5", "--warmup", "0.5", "--compare", "seeds",
               "--compare-seconds", "1.0", "--thermal", "synthetic:ramp,lo=30,hi=90,period=4", "--out", str(out),
               "--threads", "1")
    assert rc == 0
    for name in ("frames.csv", "telemetry.csv", "summary.json", "report.png", "frames_seeds.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    frames = read_csv(out / "frames.csv")
    assert list(frames[0])[:10] == ["index", "t", "phase", "frame_ms", "host_ms", "generate_ms", "upload_ms", "shaders_ms",
                                    "sinks_ms", "temperature"]
    measured = [r for r in frames if r["phase"] == "measure"]
    assert measured and {r["phase"] for r in frames} == {"warmup", "measure"}
    assert np.all(np.diff(floats(frames, "t")) > 0)
    assert np.all(floats(frames, "frame_ms") > 0)
    temps = floats(measured, "temperature")
    assert np.all((temps >= 30) & (temps <= 90))  # every frame carries the latched synthetic sample

    tel = read_csv(out / "telemetry.csv")
    assert len(tel) >= 10  # 10 Hz over > 2.5 s
    assert {r["source"] for r in tel} == {"synthetic:ramp,lo=30,hi=90,period=4"}
    assert all(r["power"] == "" for r in tel)  # a synthetic source has no power reading: empty, not made up

    s = json.loads((out / "summary.json").read_text())
    ms = floats(measured, "frame_ms")
    assert s["frames"] == len(measured)
    assert s["fps_median"] == pytest.approx(1000 / np.median(ms), rel=1e-4)
    assert s["frame_ms"]["p99"] == pytest.approx(np.percentile(ms, 99), rel=1e-4)
    assert set(s["stage_ms"]) == {"generate", "upload", "shaders", "sinks"}
    assert s["run"]["size"] == [64, 64] and s["run"]["device"] == "cpu" and "eager" in s["run"]["backend"]
    assert s["machine"]["cpu_cores"] and s["temperature"]["source"].startswith("synthetic:ramp")
    threads = s["machine"]["cpu_threads"]
    assert (threads["threads"], threads["reason"], threads["torch_threads"]) == (1, "--threads", 1)
    assert s["temperature_bins"] and sum(b["frames"] for b in s["temperature_bins"]) == len(measured)

    # The ratio is the quotient of two measured runs: recompute both from their CSVs.
    seeds = [r for r in read_csv(out / "frames_seeds.csv") if r["phase"] == "measure"]
    assert seeds and {r["way"] for r in seeds} == {"seed002"}
    seed_fps = 1000 / np.median(floats(seeds, "frame_ms"))
    c = s["compare"]
    assert c["seeds"]["fps_median"] == pytest.approx(seed_fps, rel=1e-4)
    assert c["engine"]["fps_median"] == pytest.approx(s["fps_median"])
    assert c["ratio"] == pytest.approx(s["fps_median"] / seed_fps, rel=1e-4)
    assert c["seeds"]["size"] == 64 and set(c["seeds"]["stage_ms"]) == {"generate", "to_host"}

    from PIL import Image

    with Image.open(out / "report.png") as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 800 and im.size[1] > 500
        assert len(np.unique(np.asarray(im.convert("L")))) > 20  # drawn, not blank


def test_no_sensor_gives_empty_telemetry_with_the_reason(tmp_path, tiny_config):
    out = tmp_path / "none"
    assert bench("--config", str(tiny_config), "--size", "64", "--seconds", "0.5", "--warmup", "0.2", "--thermal", "none",
                 "--out", str(out)) == 0
    frames = read_csv(out / "frames.csv")
    assert frames and all(r["temperature"] == "" for r in frames)
    assert read_csv(out / "telemetry.csv") == []
    s = json.loads((out / "summary.json").read_text())
    assert s["temperature"]["reason_missing"] == "--thermal none" and s["temperature"]["median"] is None
    assert s["cold_hot"]["fps_lost"] is None and s["cold_hot"]["reason"] == "no temperature readings"
    assert s["fps_median"] > 0


def test_until_stable_waits_for_the_temperature_to_level_off(tmp_path, tiny_config):
    # A soak curve with tau 0.5 s: 5400 e^(-2t) C/min, under 60 C/min after ~2.3 s.
    out = tmp_path / "soak"
    assert bench("--config", str(tiny_config), "--size", "64", "--until-stable", "--thermal", "synthetic:soak,lo=35,hi=80,tau=0.5",
                 "--stable-window", "1", "--stable-slope", "60", "--stable-seconds", "0.5", "--warmup", "0.2",
                 "--max-seconds", "30", "--out", str(out)) == 0
    s = json.loads((out / "summary.json").read_text())
    hs = s["heat_soak"]
    assert hs["stable"] is True and hs["last_slope_c_per_min"] < 60
    frames = read_csv(out / "frames.csv")
    heat = [r for r in frames if r["phase"] == "heat"]
    meas = [r for r in frames if r["phase"] == "measure"]
    assert heat and meas and s["frames"] == len(meas)
    assert float(heat[0]["temperature"]) < 70 < float(meas[0]["temperature"])  # it did not stop while still heating
    assert floats(meas, "t")[0] == pytest.approx(hs["stable_at_s"], abs=0.5)

    # A temperature that keeps rising ends at --max-seconds, marked not stable.
    out = tmp_path / "rising"
    assert bench("--config", str(tiny_config), "--size", "64", "--until-stable", "--thermal", "synthetic:ramp,lo=30,hi=90,period=600",
                 "--stable-window", "0.5", "--stable-slope", "1", "--warmup", "0.2", "--max-seconds", "1.0", "--out", str(out)) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["heat_soak"]["stable"] is False and "still rising" in s["run"]["stop_reason"]


def test_usage_errors_are_one_line(tmp_path, capsys):
    cases = [
        (["--sweep", "temperature"], "--map"),
        (["--until-stable", "--sweep", "temperature", "--map", "x.toml"], "pick one"),
        (["--thermal", "osc"], "no OSC server"),
        (["--until-stable", "--thermal", "none"], "needs a temperature"),
    ]
    for args, text in cases:
        assert bench("--size", "64", "--out", str(tmp_path / "x"), *args) == 2
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1, err


# ---- sweep with a mapping, on a tiny diffusion model -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    pytest.importorskip("diffusers")
    from tiny_diffusion import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("sd") / "tiny-sd-turbo")


def test_sweep_shows_what_a_temperature_to_steps_mapping_does_to_fps(tmp_path, tiny_sd):
    mapping = tmp_path / "steps.toml"
    mapping.write_text('[[map]]\nsource = "temperature"\nparam = "diffusion.steps"\nin = [40.0, 80.0]\nout = [1, 4]\n')
    out = tmp_path / "sweep"
    # denoise_batch off: k steps are k UNet calls, so steps cost time in proportion.
    assert bench("--generator", f"diffusion:{tiny_sd}", "--size", "64", "--sweep", "temperature", "--sweep-range", "40:80:40",
                 "--sweep-hold", "2", "--warmup", "0.3", "--map", str(mapping), "--set", "diffusion.denoise_batch=0",
                 "--out", str(out)) == 0
    s = json.loads((out / "summary.json").read_text())
    steps = {e["temperature"]: e for e in s["sweep"]}
    assert set(steps) == {40.0, 80.0}
    assert steps[40.0]["parameters"]["diffusion.steps"]["median"] == 1
    assert steps[80.0]["parameters"]["diffusion.steps"]["median"] == 4
    assert steps[40.0]["frames"] > 3 and steps[80.0]["frames"] > 3
    assert steps[40.0]["fps_median"] > steps[80.0]["fps_median"]  # 4 UNet calls a frame cost more than 1
    frames = read_csv(out / "frames.csv")
    assert {"sweep_c", "diffusion.steps"} <= set(frames[0])
    assert {r["phase"] for r in frames} == {"warmup", "settle", "sweep"}
    from PIL import Image

    with Image.open(out / "report.png") as im:
        im.load()
        assert im.size[0] > 800


def test_compare_seeds_on_diffusion_runs_the_seed_001_pipeline(tmp_path, tiny_sd):
    out = tmp_path / "sd"
    assert bench("--generator", f"diffusion:{tiny_sd}", "--size", "64", "--seconds", "1", "--warmup", "0.3", "--compare", "seeds",
                 "--compare-seconds", "1", "--thermal", "none", "--out", str(out)) == 0
    s = json.loads((out / "summary.json").read_text())
    c = s["compare"]
    # strength 0.5, 1 step: diffusers' img2img runs int(2 * 0.5) = 1 of 2 inference steps, the engine's one step.
    assert c["seeds"]["way"] == "seed001" and c["seeds"]["num_inference_steps"] == 2 and c["seeds"]["denoising_steps"] == 1
    assert c["seeds"]["guidance_scale"] == 0.0 and set(c["seeds"]["stage_ms"]) == {"pipeline", "blend"}
    seeds = [r for r in read_csv(out / "frames_seeds.csv") if r["phase"] == "measure"]
    seed_fps = 1000 / np.median(floats(seeds, "frame_ms"))
    assert c["ratio"] == pytest.approx(s["fps_median"] / seed_fps, rel=1e-4)


def test_target_hold_measures_each_temperature_bin_against_the_target():
    bins = [{"lo": 40, "hi": 42, "frames": 50, "fps_median": 30.6}, {"lo": 70, "hi": 72, "frames": 50, "fps_median": 28.2},
            {"lo": 90, "hi": 92, "frames": 3, "fps_median": 10.0}]  # too few frames: left out
    h = target_hold(bins, 30.0)
    assert [r["bin_c"] for r in h["bins"]] == [[40, 42], [70, 72]]
    assert h["worst_deviation_pct"] == pytest.approx(-6.0) and h["held"] is False
    assert target_hold(bins[:1], 30.0)["held"] is True  # 2% above: headroom, not a miss
    assert target_hold(bins[1:], 28.5)["held"] is True  # 1% below: within 5%
    assert target_hold([], 30.0)["held"] is None
