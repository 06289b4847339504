"""Config file values go through the command line's own checks (issue 17, item 8): what `--fps nan` refuses,
`fps = nan` in [run] refuses too, with one line naming the file and the key; never a traceback or a run that never
stops."""

from __future__ import annotations

import json

import pytest

from engine.cli import main

RUN = ["run", "--frames", "1", "--size", "64", "--sink", "null", "--osc-port", "0", "--quiet"]


def run_with(tmp_path, capsys, toml: str, *extra: str, command: list[str] = RUN) -> tuple[int, str]:
    cfg = tmp_path / "show.toml"
    cfg.write_text(toml)
    capsys.readouterr()
    rc = main([*command, "--config", str(cfg), *extra])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("toml, key", [
    ("[run]\nseconds = nan\n", "seconds"),           # would never stop
    ("[run]\nfps = inf\n", "fps"),                   # OverflowError with a file sink
    ("[run]\nfps = nan\n", "fps"),
    ("[run]\nfps = -5\n", "fps"),
    ("[run]\nframes = -5\n", "frames"),
    ("[run]\nsize = 64.5\n", "size"),
    ("[run]\nquiet = \"yes\"\n", "quiet"),
    ("[run]\nthreads = [2]\n", "threads"),
    ("[run]\nclock = \"sundial\"\n", "clock"),
    ("[run]\nset = [\"latent.psi\"]\n", "set"),          # no '='
    ("[run]\nsink = [[\"file:a.mp4\"]]\n", "sink"),
])
def test_bad_run_values_are_refused_with_one_line(tmp_path, capsys, toml, key):
    rc, err = run_with(tmp_path, capsys, toml)  # checked even where the command line overrides it (frames, quiet)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("engine: error: ") and "show.toml" in lines[0] and f"[run] {key}" in lines[0], err


@pytest.mark.parametrize("toml, needle", [
    ("[run]\nosc_out = 7001\n", "7001"),                          # not HOST:PORT
    ("[run]\nset = [\"nonexistent.param=1\"]\n", "nonexistent.param"),
    ("[generator]\nnum_fp16_res = \"all\"\n", "num_fp16_res"),
    ("[generator]\nnoise_strength = nan\n", "noise_strength"),
    ("[generator]\nchannel_max = 64.5\n", "channel_max"),
])
def test_values_checked_further_down_are_one_line_too(tmp_path, capsys, toml, needle):
    rc, err = run_with(tmp_path, capsys, toml)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("engine: error: ") and needle in lines[0], err


def test_good_values_from_the_file_are_used(tmp_path, capsys):
    stats = tmp_path / "stats.json"
    rc, err = run_with(tmp_path, capsys, f'[run]\nset = "latent.psi=0.5"\nfps = 12\nstats_json = "{stats}"\n'
                                          '[generator]\nchannel_max = 32\n')
    assert rc == 0, err
    s = json.loads(stats.read_text())
    assert s["fps_target"] == 12 and s["frames"] == 1


def test_bench_checks_its_config_values_the_same_way(tmp_path, capsys):
    rc, err = run_with(tmp_path, capsys, "[run]\nseconds = nan\n", command=["bench", "--device", "cpu", "--quiet"])
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "[run] seconds" in err, err
